"""Grade handwritten pages with a vision model; writes grades.csv, replies.jsonl, totals.csv, flags.csv.

python scripts/grade_pages.py pages=<folder|pdf|exam_dir> rubric=<rubric.json|pdf|folder> llm=<config> runs=<k> out_dir=<dir> [template=<template.json>] [transcribe_first=true]
"""

from inkbase.cli import hydra_entry
from inkgrade.pages import grade


@hydra_entry("grade_pages")
def main(cfg):
    return grade.run(cfg)["page_replies"]


if __name__ == "__main__":
    main()
