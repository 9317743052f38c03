"""The torch-free base that every other package builds on: errors and config checks, run folders,
JSON/JSONL I/O and the Hydra entry helper. It imports nothing from ``htr``, ``grading`` or ``inkgrade``."""
