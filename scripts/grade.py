"""Grade answers against a rubric; writes scores.jsonl and metrics.json into out_dir.

python scripts/grade.py rubric=<rubric.json> answers=<answers.jsonl> grader=<name> out_dir=<dir>
"""

from grading import grade
from inkbase.cli import hydra_entry


@hydra_entry("grade")
def main(cfg):
    return grade.run(cfg)["mean_fraction"]


if __name__ == "__main__":
    main()
