"""HTR speed: decoding and training-throughput benchmarks (``python scripts/benchmark_htr.py``) and the
training-step profiler (``python scripts/profile_htr_training.py``)."""
