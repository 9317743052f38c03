"""HTR speed benchmark: naive/batched generate vs htr.fast_decode, and training throughput, in one run.

python scripts/benchmark_htr.py [device=cpu model.size=tiny ...]
"""

from benchmarks.htr_speed import benchmark
from inkbase.cli import hydra_entry


@hydra_entry("benchmark_htr")
def main(cfg):
    return benchmark.run(cfg)["fast_beam_lines_per_s"]


if __name__ == "__main__":
    main()
