"""Evaluate the answer-table reader (Table 1 of Grabowski & Canz); writes table1.md and metrics.json into out_dir.

python scripts/eval_tables.py out_dir=<dir> [weights=<cells.safetensors>]
"""

from inkbase.cli import hydra_entry
from inkgrade.tables import evaluate


@hydra_entry("eval_tables")
def main(cfg):
    evaluate.run(cfg)


if __name__ == "__main__":
    main()
