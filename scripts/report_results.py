"""Regenerate README.md's results table from experiments/<folder>/results.yaml; --check: exit 1 (and show the diff) if it differs.

python scripts/report_results.py [--check]

Not a Hydra entry point: it writes no run folder, it rewrites the table that the run folders back
(between <!-- results:start --> and <!-- results:end --> in README.md); CI runs it with --check.
"""

import argparse
import sys

from inkbase.errors import InputError
from inkbase.results_table import diff, render, replace_table
from inkbase.runs import REPO_ROOT


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if README.md is out of date")
    args = parser.parse_args()
    readme = REPO_ROOT / "README.md"
    try:
        old = readme.read_text()
        new = replace_table(old, render(REPO_ROOT / "experiments"), readme)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.check:
        if new != old:
            print(diff(old, new, "README.md"), end="")
            print("README.md's results table is out of date: run python scripts/report_results.py", file=sys.stderr)
            return 1
        return 0
    if new != old:
        readme.write_text(new)
        print("README.md: results table updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
