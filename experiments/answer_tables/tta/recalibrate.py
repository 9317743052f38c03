"""The shipped cell reader read at five positions (``calibration.shift`` = 1), recalibrated on the shipped
calibration's validation cells and decided by ``PLAN.md``'s rule; writes ``metrics.json`` and, when the rule
passes, ``cells.safetensors`` (the same networks, the new calibration); for PLAN.md's second candidate
(shifts for the digit path only), ``cells_digits_shift.safetensors`` when the digit path passes.

PYTHONPATH=src:. OMP_NUM_THREADS=2 python experiments/answer_tables/tta/recalibrate.py <out_dir>
"""

import json
import sys
from pathlib import Path

from htr.cells import train as T
from htr.cells.model import load_networks, save_reader
from htr.cells.reader import DEFAULT_WEIGHTS
from inkbase.cli import compose
from inkbase.runs import start_run

# The recipes of the shipped calibrations (experiments/answer_tables/train_cells_v3_rule, _digits_p1_mean).
GENERAL = []
DIGITS = ["data.digit_share=1.0"]
KEEP = ("rule", "temperature", "temperature2", "verify_threshold", "accept_threshold", "target_error", "key_draws",
        "pass1_mix", "temperature_digits_pass1")


def summary(cal: dict) -> dict:
    fig = cal["val_two_pass"]
    return {"val_accuracy": cal["val_accuracy"], "share_flagged": fig["share_flagged"],
            "errors_accepted": fig["errors_accepted"], "accepted": fig["accepted"], "n": fig["n"],
            "verify_threshold": cal["verify_threshold"], "accept_threshold": cal["accept_threshold"]}


def main(out_dir: str) -> None:
    folder = start_run(out_dir, {"weights": str(DEFAULT_WEIGHTS.relative_to(Path.cwd())), "shift": 1,
                                 "general": GENERAL, "digits": DIGITS})
    out = folder.path
    nets, meta = load_networks(DEFAULT_WEIGHTS)
    pass1, pass2, specialist, digit_pass1 = nets
    result, cals = {"weights": str(DEFAULT_WEIGHTS.relative_to(Path.cwd()))}, {}
    for name, overrides in (("general", GENERAL), ("digits", DIGITS)):
        cfg = compose("train_cells", overrides)
        _, mnist_val = T._mnist_split(cfg.data.mnist_dir, cfg.data.split_seed)
        x, y, _ = T._data("val", "val", cfg.data.n_val, mnist_val, cfg, cfg.data.val_seed)
        for shift in (0, 1):
            l1 = T.logits_of(pass1, x, shift=shift)
            if name == "general":
                cal = T.calibrate(l1, y, cfg, T.logits_of(pass2, x, shift=shift))
            else:
                cal = T.calibrate(l1, y, cfg, T.logits_of(specialist, x, shift=shift),
                                  logits1b=T.logits_of(digit_pass1, x, shift=shift))
            cals[name, shift] = cal
            result[f"{name}_shift{shift}"] = summary(cal)
            print(name, shift, result[f"{name}_shift{shift}"], flush=True)
    ok = {}
    for name in ("general", "digits"):
        a, b = result[f"{name}_shift0"], result[f"{name}_shift1"]
        ok[name] = (b["val_accuracy"] >= a["val_accuracy"] and b["share_flagged"] < a["share_flagged"]
                    and b["errors_accepted"] <= a["errors_accepted"])
    result["rule_passed"] = ok
    result["ships"] = all(ok.values())
    if result["ships"]:
        general = {k: v for k, v in cals["general", 1].items() if k in KEEP}
        digits = {k: v for k, v in cals["digits", 1].items() if k in KEEP and k not in ("target_error", "key_draws")}
        save_reader(out / "cells.safetensors", pass1, {**general, "shift": 1, "digits": digits}, pass2, specialist,
                    digit_pass1)
    result["second_candidate_ships"] = ok["digits"]
    if ok["digits"]:
        shipped = {k: v for k, v in meta["calibration"].items() if k != "digits"}
        digits = {k: v for k, v in cals["digits", 1].items() if k in KEEP and k not in ("target_error", "key_draws")}
        save_reader(out / "cells_digits_shift.safetensors", pass1, {**shipped, "digits": {**digits, "shift": 1}},
                    pass2, specialist, digit_pass1)
    folder.finish(result)
    print(json.dumps({k: result[k] for k in ("rule_passed", "ships", "second_candidate_ships")}))


if __name__ == "__main__":
    main(sys.argv[1])
