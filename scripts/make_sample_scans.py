"""python scripts/make_sample_scans.py out_dir=<dir> [per_student=true] [max_students=N] [seed=S]

Renders the bundled sample exam as shuffled scanned pages (``scans.pdf``) plus ``template.json``,
``blank.pdf`` and ``roster.csv`` for ``scripts/grade_exam.py``.
"""

from inkbase.cli import hydra_entry
from inkgrade.workflow.demo import make_sample_scans


@hydra_entry("make_sample_scans")
def main(cfg):
    return make_sample_scans(cfg)


if __name__ == "__main__":
    main()
