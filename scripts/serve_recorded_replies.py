"""Serve recorded chat replies on an OpenAI-compatible endpoint until interrupted; grades nothing.

python scripts/serve_recorded_replies.py replies=<replies.jsonl> [port=8011] [out_dir=<dir>]
"""

from inkbase.cli import hydra_entry
from inkgrade.pages import replay


@hydra_entry("serve_recorded_replies")
def main(cfg):
    return replay.serve(cfg)["requests"]


if __name__ == "__main__":
    main()
