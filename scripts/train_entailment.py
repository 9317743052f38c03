"""Train the concept verifier (a MiniLM cross-encoder) on SemEval train + generated negations.

python scripts/train_entailment.py data_dir=<dir> out_dir=<dir>
"""

from grading.benchmarks import train_entailment
from inkbase.cli import hydra_entry


@hydra_entry("train_entailment")
def main(cfg):
    return train_entailment.run(cfg)


if __name__ == "__main__":
    main()
