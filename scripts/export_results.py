"""python scripts/export_results.py exam_dir=<dir> [send=true smtp_host=<host> smtp_port=<port> smtp_user=<user>]

Writes report.csv / report.xlsx, scored PDFs, Good/Average/Weak samples and one email per student into
``exam_dir``; ``send=true`` mails them, throttled, never twice to a student (``inkgrade.workflow.export``).
"""

from inkbase.cli import hydra_entry
from inkgrade.workflow.export import export


@hydra_entry("export_results")
def main(cfg):
    return export(cfg)


if __name__ == "__main__":
    main()
