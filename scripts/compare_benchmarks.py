"""Typed vs handwritten grading results side by side (comparison.md / .csv / .json).

python scripts/compare_benchmarks.py typed=<results.json or run dir> handwritten=<results.json or run dir> out_dir=<dir>
"""

from inkbase.cli import hydra_entry
from inkgrade import handwritten_benchmark as handwritten


@hydra_entry("compare_benchmarks")
def main(cfg):
    handwritten.compare_run(cfg)


if __name__ == "__main__":
    main()
