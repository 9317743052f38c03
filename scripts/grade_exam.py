"""python scripts/grade_exam.py scans=<pdf|folder> template=<template.json> rubric=<rubric.json> roster=<roster.csv> exam_dir=<dir> [grader=...] [recognizer=...]

Ingests scanned exams (any page order), assigns pages to students by the ID read off them, reads and
grades every answer into ``<exam_dir>/exam.sqlite``; resumable (see ``inkgrade.workflow.ingest``).
"""

from inkbase.cli import hydra_entry
from inkgrade.workflow import ingest


@hydra_entry("grade_exam")
def main(cfg):
    return ingest.run(cfg)


if __name__ == "__main__":
    main()
