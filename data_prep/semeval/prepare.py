"""Export semeval as rubric JSON + answers JSONL: python data_prep/semeval/prepare.py <shared data dir> <out dir>"""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: python {sys.argv[0]} <shared data dir> <out dir>")
    export = runpy.run_path(str(Path(__file__).resolve().parents[1] / "mohler" / "prepare.py"))["export"]
    export("semeval", Path(sys.argv[1]), Path(sys.argv[2]))
