"""HTR speed: decoding and training-throughput benchmarks (``python scripts/benchmark_htr.py``)."""
