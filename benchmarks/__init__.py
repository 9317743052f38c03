"""Benchmarks and profilers of the product packages (``inkbase``, ``htr``, ``grading``, ``inkgrade``).

They import the packages under ``src/``; nothing under ``src/`` imports them (``tests/test_layers.py``).
Each has a Hydra entry point in ``scripts/`` (``benchmark_*.py``, ``profile_htr_training.py``).
"""
