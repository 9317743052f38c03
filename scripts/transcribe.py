"""Transcribe a page image line by line; writes transcription.json into out_dir.

python scripts/transcribe.py image=<png> out_dir=<dir> [model_dir=<dir>] [recognizer=model|rapidocr|tesseract]
"""

from htr import transcribe
from inkbase.cli import hydra_entry


@hydra_entry("transcribe")
def main(cfg):
    return len(transcribe.run(cfg)["lines"])


if __name__ == "__main__":
    main()
