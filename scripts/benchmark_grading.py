"""Benchmark the grading methods on Mohler, SemEval-2013 or ASAP-SAS.

python scripts/benchmark_grading.py benchmark=<mohler|semeval|asap> data_dir=<dir> methods=[...] out_dir=<dir>
"""

from grading.benchmarks import run
from inkbase.cli import hydra_entry


@hydra_entry("benchmark_grading")
def main(cfg):
    return run.run(cfg)["headline"]


if __name__ == "__main__":
    main()
