"""PLAN.md's second question: the shipped general pair read at five positions, recalibrated on the general
validation cells and decided by the rule; writes ``metrics.json`` and, when it passes, ``cells.safetensors``
(the shipped file with the general calibration replaced and ``calibration.shift: 1``).

PYTHONPATH=src:. OMP_NUM_THREADS=2 python experiments/answer_tables/wide/shift.py <out_dir>
"""

import json
import sys
from pathlib import Path

from choose import GENERAL, cells, passes, summary

from htr.cells import train as T
from htr.cells.model import load_networks, save_reader
from htr.cells.reader import DEFAULT_WEIGHTS
from inkbase.runs import start_run


def main(out_dir: str) -> None:
    weights = str(DEFAULT_WEIGHTS.relative_to(Path.cwd()))
    folder = start_run(out_dir, {"weights": weights, "general": GENERAL, "shift": 1})
    nets, meta = load_networks(DEFAULT_WEIGHTS)
    shipped = meta["calibration"]
    cfg, x, y = cells(GENERAL)
    cals = {k: T.calibrate(T.logits_of(nets[0], x, shift=k), y, cfg, T.logits_of(nets[1], x, shift=k)) for k in (0, 1)}
    result = {"weights": weights, **{f"shift{k}": summary(cal) for k, cal in cals.items()}}
    result["reproduces_shipped"] = all(cals[0][k] == shipped[k] for k in
                                       ("temperature", "temperature2", "verify_threshold", "accept_threshold"))
    result["passed"] = passes(result["shift1"], result["shift0"])
    print(json.dumps(result), flush=True)
    if result["passed"]:
        path = save_reader(folder.file("cells.safetensors"), nets[0], {**cals[1], "shift": 1, "digits": shipped["digits"]},
                           *nets[1:])
        result["weights_bytes"] = path.stat().st_size
    folder.finish(result)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main(sys.argv[1])
