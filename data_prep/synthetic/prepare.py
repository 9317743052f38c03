"""Render synthetic handwritten lines into train/val JSONL manifests (logic in htr.synth.dataset).

python data_prep/synthetic/prepare.py n_train=100000 n_val=2000 num_workers=2 [out_dir=<dir>]
"""

from htr.synth import dataset
from inkbase.cli import hydra_entry


@hydra_entry("prepare_synthetic")
def main(cfg):
    return dataset.run(cfg)["train_images"]


if __name__ == "__main__":
    main()
