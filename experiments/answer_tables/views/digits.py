"""PLAN.md's second question: more views for the digit path (digit tables and student IDs), on the shipped
digit calibration's validation cells, decided by its rule; writes ``metrics.json`` and, when a candidate is
chosen, ``cells.safetensors`` (the shipped file with the digit calibration replaced by the chosen one's).

PYTHONPATH=src:. OMP_NUM_THREADS=2 python experiments/answer_tables/views/digits.py <out_dir>
"""

import importlib.util
import json
import sys
from pathlib import Path

from htr.cells import train as T
from htr.cells.model import load_networks, save_reader
from htr.cells.reader import DEFAULT_WEIGHTS
from inkbase.runs import start_run


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# This folder's choose.py (the candidates and the rule); loading it puts wide/ on the path and imports
# wide/choose.py as ``choose`` (the validation cells, summary and calibration keys shared by these plans).
views_plan = _load(Path(__file__).resolve().parent / "choose.py", "views_choose")
CANDIDATES = views_plan.CANDIDATES
wide = sys.modules["choose"]


def main(out_dir: str) -> None:
    weights = str(DEFAULT_WEIGHTS.relative_to(Path.cwd()))
    folder = start_run(out_dir, {"weights": weights, "digits": wide.DIGITS, "candidates": CANDIDATES})
    nets, meta = load_networks(DEFAULT_WEIGHTS)
    pass1, pass2, specialist, digit_pass1, mix = nets
    shipped = meta["calibration"]["digits"]
    k = int(shipped["shift"])
    cfg, x, y = wide.cells(wide.DIGITS)
    result: dict = {"weights": weights, "shift": k, "candidates": {}}
    cals = {}
    for name, (positions, zooms) in CANDIDATES.items():
        views = {"shift": k, "positions": positions, "zooms": zooms}
        cals[name] = T.calibrate(T.logits_of(mix, x, **views), y, cfg, T.logits_of(specialist, x, **views),
                                 logits1b=T.logits_of(digit_pass1, x, **views))
        result["candidates"][name] = wide.summary(cals[name])
        print(name, json.dumps(result["candidates"][name]), flush=True)
    views_plan.decide(result, cals, shipped)
    if result["chosen"]:
        positions, zooms = CANDIDATES[result["chosen"]]
        digits = {**{key: v for key, v in cals[result["chosen"]].items() if key in wide.KEEP}, "shift": k,
                  "positions": positions, "zooms": list(zooms)}
        path = save_reader(folder.file("cells.safetensors"), pass1, {**meta["calibration"], "digits": digits},
                           pass2, specialist, digit_pass1, mix)
        result["weights_bytes"] = path.stat().st_size
    folder.finish(result)
    print("chosen:", result["chosen"])


if __name__ == "__main__":
    main(sys.argv[1])
