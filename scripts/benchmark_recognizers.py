"""CPU speed of line recognisers side by side (shipped model in onnxruntime and in PyTorch, RapidOCR).

python scripts/benchmark_recognizers.py [manifest=<lines.jsonl>] [rounds=5] [threads=2] [out_dir=<dir>]
"""

from benchmarks import recognizers
from inkbase.cli import hydra_entry


@hydra_entry("benchmark_recognizers")
def main(cfg):
    return recognizers.run(cfg)["ours_vs_rapidocr"]


if __name__ == "__main__":
    main()
