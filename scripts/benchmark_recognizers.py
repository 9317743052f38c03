"""CPU speed of line recognisers side by side (shipped model naive vs batched, RapidOCR, Tesseract).

python scripts/benchmark_recognizers.py [model_dir=<dir>] [lines=64] [threads=2] [out_dir=<dir>]
"""

from benchmarks import recognizers
from inkbase.cli import hydra_entry


@hydra_entry("benchmark_recognizers")
def main(cfg):
    return recognizers.run(cfg)["speedup_ours_vs_naive"]


if __name__ == "__main__":
    main()
