"""KG + similarity grading speed vs a naive baseline; results.json / results.md in out_dir.

python scripts/benchmark_grading_speed.py [n_answers=2000] [threads=2] [profile=true]
"""

from benchmarks import grading_speed
from inkbase.cli import hydra_entry


@hydra_entry("benchmark_grading_speed")
def main(cfg):
    return grading_speed.run(cfg)["passes"]["ours_warm"]["answers_per_s"]


if __name__ == "__main__":
    main()
