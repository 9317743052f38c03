"""Cold grading speed of kg and hybrid under encoding variants, side by side; results.json / results.md in out_dir.

python scripts/benchmark_grading_speed.py [n_answers=600] [threads=2] [profile=pooled_int8_light/hybrid]
"""

from benchmarks import grading_speed
from inkbase.cli import hydra_entry


@hydra_entry("benchmark_grading_speed")
def main(cfg):
    passes = grading_speed.run(cfg)["passes"]
    return max(p["answers_per_s"] for name, p in passes.items() if name != "naive" and not name.endswith("/warm"))


if __name__ == "__main__":
    main()
