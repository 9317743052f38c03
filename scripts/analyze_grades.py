"""Psychometric analysis of AI grades against human grades; writes analysis.json, tables and figures.

python scripts/analyze_grades.py ai=<ai.csv> human=<human.csv> out_dir=<dir> [ai_run=<run>]
"""

from grading.analysis import analyze
from inkbase.cli import hydra_entry


@hydra_entry("analyze_grades")
def main(cfg):
    return analyze.run(cfg)["total_r2"]


if __name__ == "__main__":
    main()
