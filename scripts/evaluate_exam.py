"""python scripts/evaluate_exam.py scans_dir=<make_sample_scans out_dir> exam_dir=<dir> out_dir=<dir>

Identity accuracy, pages/s and agreement with the reference points of a grade_exam run on rendered
scans (``inkgrade.workflow.evaluate``).
"""

from inkbase.cli import hydra_entry
from inkgrade.workflow.evaluate import evaluate


@hydra_entry("evaluate_exam")
def main(cfg):
    return evaluate(cfg)


if __name__ == "__main__":
    main()
