"""Train a line recogniser; writes the model, history table and curve into out_dir.

python scripts/train_htr.py experiment=<name> [out_dir=<dir>]
(on several GPUs: accelerate launch scripts/train_htr.py experiment=<name> ...)
"""

from htr import train
from inkbase.cli import hydra_entry


@hydra_entry("train_htr")
def main(cfg):
    return train.run(cfg)["val_cer"]


if __name__ == "__main__":
    main()
