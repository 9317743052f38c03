"""Train the answer-table cell reader; writes cells.safetensors, history and metrics into out_dir.

python scripts/train_cells.py [out_dir=<dir>] [model.arch=cellnet|gapnet] [trainer.epochs=N] [pair.with=<weights>]
"""

from htr.cells import train
from inkbase.cli import hydra_entry


@hydra_entry("train_cells")
def main(cfg):
    return train.run(cfg)["calibration"]["val_accuracy"]


if __name__ == "__main__":
    main()
