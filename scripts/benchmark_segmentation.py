"""Line segmentation on rendered paragraphs with known line boxes: ours vs the seed's rules alone.

python scripts/benchmark_segmentation.py [cases=60] [seed=0]
"""

from benchmarks import segmentation
from inkbase.cli import hydra_entry


@hydra_entry("benchmark_segmentation")
def main(cfg):
    rows = segmentation.run(cfg)
    return next(r["mean_iou"] for r in rows if r["segmenter"] == "ours")


if __name__ == "__main__":
    main()
