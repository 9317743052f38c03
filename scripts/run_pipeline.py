"""The main job on the bundled sample exam: handwritten scripts -> transcriptions -> grades -> analysis.

python scripts/run_pipeline.py [scripts.seed=1] [recognizer=rapidocr] [grader=similarity] [out_dir=<dir>]
"""

from inkbase.cli import hydra_entry
from inkgrade import pipeline


@hydra_entry("pipeline")
def main(cfg):
    return pipeline.run(cfg)["handwritten_vs_reference"]["pearson_r"]


if __name__ == "__main__":
    main()
