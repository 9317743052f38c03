"""Where the time of one TrOCR training step goes: kernel time by category and the top kernels.

python scripts/profile_htr_training.py [batch_size=192] [speedups=true] [sdpa_backend=cudnn] [profiled_steps=0]
"""

from benchmarks.htr_speed import profile_train
from inkbase.cli import hydra_entry


@hydra_entry("profile_htr_training")
def main(cfg):
    return profile_train.run(cfg)["samples_per_s"]


if __name__ == "__main__":
    main()
