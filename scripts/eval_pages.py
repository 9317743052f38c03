"""Transcribe the real paragraph pages and score line counts and page CER; writes metrics.json into out_dir
(a missing, empty or unreadable page is named on stderr, listed in skipped.jsonl and left out).

python scripts/eval_pages.py paths.data_dir=<data> out_dir=<dir> [model_dir=<dir>] [recognizer=model|rapidocr|tesseract]
"""

from htr import transcribe
from inkbase.cli import hydra_entry


@hydra_entry("eval_pages")
def main(cfg):
    return transcribe.evaluate_pages(cfg)["cer"]


if __name__ == "__main__":
    main()
