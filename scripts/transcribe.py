"""Transcribe a page image line by line; writes transcription.json into out_dir.

python scripts/transcribe.py image=<png> out_dir=<dir> [model_dir=<dir>] [recognizer=model|rapidocr|tesseract]
"""

from grading.cli import hydra_entry
from htr import transcribe


@hydra_entry("transcribe")
def main(cfg):
    return len(transcribe.run(cfg)["lines"])


if __name__ == "__main__":
    main()
