"""Read and grade letter-coded answer tables in two passes; flagged cells go to review.

python scripts/grade_tables.py scans=<pdf or folder> layout=<layout.json> key=<key.json> [roster=<roster.csv>] out_dir=<dir> [pass1=model|llm] [pass2=model|llm] [exam_dir=<dir>]
"""

from inkbase.cli import hydra_entry
from inkgrade.tables import grade


@hydra_entry("grade_tables")
def main(cfg):
    return grade.run(cfg)["share_flagged"]


if __name__ == "__main__":
    main()
