"""Rubric grading, knowledge-graph matching, LLM scoring and psychometric analysis of exam answers."""
