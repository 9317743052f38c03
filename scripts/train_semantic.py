"""Train the semantic scorer on a dataset's training split; writes model.json and card.md.

python scripts/train_semantic.py benchmark=semeval data_dir=<dir> out_dir=<dir>
"""

from grading.benchmarks import train_semantic
from inkbase.cli import hydra_entry


@hydra_entry("train_semantic")
def main(cfg):
    return train_semantic.run(cfg)


if __name__ == "__main__":
    main()
