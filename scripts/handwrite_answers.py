"""Write a benchmark's answers by held-out hands, read them back; writes transcriptions.jsonl.

python scripts/handwrite_answers.py benchmark=mohler data_dir=<data> [recognizer=model] out_dir=<dir>
"""

from inkbase.cli import hydra_entry
from inkgrade import handwritten_benchmark as handwritten


@hydra_entry("handwrite_answers")
def main(cfg):
    return handwritten.run(cfg)["cer"]


if __name__ == "__main__":
    main()
