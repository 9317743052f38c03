"""Render the sample exam as pages and simulate recorded replies for them (plumbing experiment, no model).

python scripts/simulate_page_grading.py runs=5 out_dir=<dir>
"""

from inkbase.cli import hydra_entry
from inkgrade.pages import simulate


@hydra_entry("simulate_page_grading")
def main(cfg):
    return simulate.run(cfg)["simulated_replies"]


if __name__ == "__main__":
    main()
