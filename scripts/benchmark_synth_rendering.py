"""Synthetic line rendering speed: default augmentation vs clean rendering in one run.

python scripts/benchmark_synth_rendering.py [lines=500] [rounds=3]
"""

from benchmarks import synth_speed
from inkbase.cli import hydra_entry


@hydra_entry("benchmark_synth_rendering")
def main(cfg):
    return synth_speed.run(cfg)["augmented_lines_per_s"]


if __name__ == "__main__":
    main()
