"""Synthetic handwriting: fonts, training text, rendered lines, exam pages and answer-table cells."""
