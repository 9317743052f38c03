"""Lanke et al. Tables III-V (threshold sweep, baselines, alpha sweep) as Markdown/CSV/LaTeX + PNG in out_dir.

python scripts/run_ablation.py [grader@other=similarity] [out_dir=<dir>]
python scripts/run_ablation.py -m +sweep=ablation_spans      # one run folder per span-extraction variant
"""

from grading import ablations
from inkbase.cli import hydra_entry


@hydra_entry("ablation")
def main(cfg):
    return ablations.run(cfg).get("concept_at_threshold", {}).get("f1")


if __name__ == "__main__":
    main()
