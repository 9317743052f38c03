"""PLAN.md's third question: one wider digit network at a time in the digit path, decided by the rule on the
digit validation cells; writes ``metrics.json`` and, when a candidate passes, ``cells.safetensors`` (the
shipped file with the digit path's networks and calibration replaced).

PYTHONPATH=src:. OMP_NUM_THREADS=2 python experiments/answer_tables/wide/digits.py <gpu_runs> <out_dir>
"""

import json
import sys
from pathlib import Path

from choose import DIGITS, KEEP, cells, passes, summary

from htr.cells import train as T
from htr.cells.model import load_networks, save_reader
from htr.cells.reader import DEFAULT_WEIGHTS
from inkbase.runs import start_run


def main(gpu_runs: str, out_dir: str) -> None:
    runs = Path(gpu_runs)
    weights = str(DEFAULT_WEIGHTS.relative_to(Path.cwd()))
    folder = start_run(out_dir, {"weights": weights, "gpu_runs": str(runs), "digits": DIGITS})
    nets, meta = load_networks(DEFAULT_WEIGHTS)
    pass1, pass2, specialist, digit_pass1, mix = nets
    wide_spec = load_networks(runs / "digits_pass2" / "cells.safetensors")[0][0]
    wide_dp1 = load_networks(runs / "digits_pass1" / "cells.safetensors")[0][0]
    shipped = meta["calibration"]
    k = int(shipped["digits"]["shift"])
    cfg, x, y = cells(DIGITS)
    logits = {name: T.logits_of(net, x, shift=k) for name, net in
              (("mix", mix), ("spec", specialist), ("dp1", digit_pass1), ("wide_spec", wide_spec), ("wide_dp1", wide_dp1))}
    combos = {"baseline": ("spec", "dp1"), "D1": ("wide_spec", "dp1"), "D2": ("spec", "wide_dp1")}
    cals = {name: T.calibrate(logits["mix"], y, cfg, logits[s], logits1b=logits[d]) for name, (s, d) in combos.items()}
    result = {"weights": weights, "shift": k, **{name: summary(cal) for name, cal in cals.items()}}
    result["baseline_reproduces_shipped"] = all(cals["baseline"][key] == shipped["digits"][key] for key in
                                                ("temperature", "temperature2", "verify_threshold", "accept_threshold"))
    result["passed"] = {name: passes(result[name], result["baseline"]) for name in ("D1", "D2")}
    winners = sorted((result[name]["share_flagged"], name) for name, ok in result["passed"].items() if ok)
    result["ships"] = winners[0][1] if winners else None
    print(json.dumps(result), flush=True)
    if result["ships"]:
        name = result["ships"]
        spec, dp1 = (wide_spec, digit_pass1) if name == "D1" else (specialist, wide_dp1)
        digit_cal = {**{key: v for key, v in cals[name].items() if key in KEEP}, "shift": k}
        path = save_reader(folder.file("cells.safetensors"), pass1, {**shipped, "digits": digit_cal}, pass2, spec,
                           dp1, mix)
        result["weights_bytes"] = path.stat().st_size
    folder.finish(result)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
