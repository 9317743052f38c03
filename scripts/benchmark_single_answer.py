"""Time the review app's single-answer page from upload to result (first upload and warm ones).

python scripts/benchmark_single_answer.py [n_answers=25] [grader=hybrid] [out_dir=<dir>]
"""

from inkbase.cli import hydra_entry
from inkgrade.review import benchmark


@hydra_entry("benchmark_single_answer")
def main(cfg):
    return benchmark.run(cfg)["warm_median_seconds"]


if __name__ == "__main__":
    main()
