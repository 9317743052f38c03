"""Start the review app over an exam's store (keyboard grading, completion check, single-answer page).

python scripts/review.py exam_dir=<dir> [host=127.0.0.1] [port=8000] [token=...] [reviewer=<name>]
"""

from inkbase.cli import hydra_entry
from inkgrade.review import serve


@hydra_entry("review")
def main(cfg):
    return serve.run(cfg).get("changes")


if __name__ == "__main__":
    main()
