"""Score a recogniser on a line manifest; writes predictions.jsonl and metrics.json into out_dir.

python scripts/eval_htr.py [model_dir=<dir>] manifest=<jsonl> out_dir=<dir> [recognizer=model|rapidocr|tesseract]
"""

from htr import evaluate
from inkbase.cli import hydra_entry


@hydra_entry("eval_htr")
def main(cfg):
    return evaluate.run(cfg)["cer"]


if __name__ == "__main__":
    main()
