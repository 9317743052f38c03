"""PLAN.md's fourth question: the shipped reader recalibrated with thresholds below the earlier grid's floor,
for the general and the digit path, decided by the rule; writes ``metrics.json`` and, when a path passes,
``cells.safetensors`` (the shipped file with that path's thresholds and temperatures replaced).

PYTHONPATH=src:. OMP_NUM_THREADS=2 python experiments/answer_tables/wide/grid.py <out_dir>
"""

import json
import sys
from pathlib import Path

from choose import DIGITS, GENERAL, KEEP, cells, passes, summary

from htr.cells import train as T
from htr.cells.model import load_networks, save_reader
from htr.cells.reader import DEFAULT_WEIGHTS
from inkbase.runs import start_run

GRID = [0.2, 0.3, 0.4, *T.THRESHOLD_GRID]


def main(out_dir: str) -> None:
    weights = str(DEFAULT_WEIGHTS.relative_to(Path.cwd()))
    folder = start_run(out_dir, {"weights": weights, "grid": GRID, "general": GENERAL, "digits": DIGITS})
    nets, meta = load_networks(DEFAULT_WEIGHTS)
    pass1, pass2, specialist, digit_pass1, mix = nets
    shipped = meta["calibration"]
    result, cals = {"weights": weights, "grid": GRID}, {}
    for name, overrides in (("general", GENERAL), ("digits", DIGITS)):
        cfg, x, y = cells(overrides)
        k = int((shipped["digits"] if name == "digits" else shipped).get("shift", 0))
        if name == "general":
            logits = (T.logits_of(pass1, x, shift=k), T.logits_of(pass2, x, shift=k), None)
        else:
            logits = (T.logits_of(mix, x, shift=k), T.logits_of(specialist, x, shift=k),
                      T.logits_of(digit_pass1, x, shift=k))
        for grid_name, grid in (("earlier", None), ("extended", GRID)):
            cfg.calibration.grid = grid
            cals[name, grid_name] = T.calibrate(logits[0], y, cfg, logits[1], logits1b=logits[2])
        base, cand = cals[name, "earlier"], cals[name, "extended"]
        ref = shipped["digits"] if name == "digits" else shipped
        result[name] = {"earlier": summary(base), "extended": summary(cand), "shift": k,
                        "earlier_reproduces_shipped": all(base[key] == ref[key] for key in
                                                          ("temperature", "temperature2", "verify_threshold",
                                                           "accept_threshold")),
                        "passed": passes(summary(cand), summary(base))}
        print(name, json.dumps(result[name]), flush=True)
    result["ships"] = {name: result[name]["passed"] for name in ("general", "digits")}
    if any(result["ships"].values()):
        general = ({**cals["general", "extended"], "shift": shipped.get("shift", 0)} if result["ships"]["general"]
                   else {key: v for key, v in shipped.items() if key != "digits"})
        digits = ({**{key: v for key, v in cals["digits", "extended"].items() if key in KEEP},
                   "shift": shipped["digits"]["shift"]} if result["ships"]["digits"] else shipped["digits"])
        path = save_reader(folder.file("cells.safetensors"), pass1, {**general, "digits": digits}, pass2, specialist,
                           digit_pass1, mix)
        result["weights_bytes"] = path.stat().st_size
    folder.finish(result)
    print(json.dumps(result["ships"]))


if __name__ == "__main__":
    main(sys.argv[1])
