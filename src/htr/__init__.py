"""Handwriting recognition: preprocessing, line segmentation, synthetic data, TrOCR-style models."""
