"""PLAN.md's candidates against the shipped networks, on the shipped calibrations' validation cells, decided
by its rule; writes ``metrics.json`` and, when a path passes, ``cells.safetensors`` (the shipped file with
that path's networks and calibration replaced; a digit path that stays as shipped keeps the shipped general
pass 1 for its mean as ``digits_mix``).

PYTHONPATH=src:. OMP_NUM_THREADS=2 python experiments/answer_tables/wide/select.py <gpu_runs> <out_dir>

``<gpu_runs>``: the folder holding the four run folders of ``run_device.sh`` (general_pass1, general_pass2,
digits_pass1, digits_pass2).
"""

import json
import sys
from pathlib import Path

from htr.cells import train as T
from htr.cells.model import load_networks, save_reader
from htr.cells.reader import DEFAULT_WEIGHTS
from inkbase.cli import compose
from inkbase.runs import start_run

# The recipes of the shipped calibrations' validation cells (experiments/answer_tables/tta/recalibrate.py).
GENERAL = []
DIGITS = ["data.digit_share=1.0"]
KEEP = ("rule", "temperature", "temperature2", "verify_threshold", "accept_threshold", "pass1_mix",
        "temperature_digits_pass1")


def summary(cal: dict) -> dict:
    fig = cal["val_two_pass"]
    return {"val_accuracy": cal["val_accuracy"], "val_accuracy_by_kind": cal["val_accuracy_by_kind"],
            "share_flagged": fig["share_flagged"], "errors_accepted": fig["errors_accepted"],
            "accepted": fig["accepted"], "n": fig["n"], "verify_threshold": cal["verify_threshold"],
            "accept_threshold": cal["accept_threshold"]}


def passes(new: dict, old: dict) -> bool:
    return (new["val_accuracy"] >= old["val_accuracy"] and new["share_flagged"] < old["share_flagged"]
            and new["errors_accepted"] <= old["errors_accepted"])


def cells(overrides: list[str]):
    cfg = compose("train_cells", overrides)
    _, mnist_val = T._mnist_split(cfg.data.mnist_dir, cfg.data.split_seed)
    x, y, _ = T._data("val", "val", cfg.data.n_val, mnist_val, cfg, cfg.data.val_seed)
    return cfg, x, y


def main(gpu_runs: str, out_dir: str) -> None:
    runs = Path(gpu_runs)
    new = {name: load_networks(runs / name / "cells.safetensors")[0][0]
           for name in ("general_pass1", "general_pass2", "digits_pass1", "digits_pass2")}
    folder = start_run(out_dir, {"weights": str(DEFAULT_WEIGHTS.relative_to(Path.cwd())), "gpu_runs": str(runs),
                                 "general": GENERAL, "digits": DIGITS})
    nets, meta = load_networks(DEFAULT_WEIGHTS)
    pass1, pass2, specialist, digit_pass1 = nets
    shipped = meta["calibration"]
    shift = int(shipped["digits"].get("shift", 0))
    result: dict = {"weights": str(DEFAULT_WEIGHTS.relative_to(Path.cwd())), "digit_shift": shift}

    # General path: one position, as shipped.
    cfg, x, y = cells(GENERAL)
    base = T.calibrate(T.logits_of(pass1, x), y, cfg, T.logits_of(pass2, x))
    la, lb = T.logits_of(new["general_pass1"], x), T.logits_of(new["general_pass2"], x)
    acc_a, acc_b = float((la.argmax(1) == y).mean()), float((lb.argmax(1) == y).mean())
    # As pair.with decides: the more accurate network reads pass 2.
    g1, g2, l1, l2 = ((new["general_pass1"], new["general_pass2"], la, lb) if acc_b >= acc_a
                      else (new["general_pass2"], new["general_pass1"], lb, la))
    cand = T.calibrate(l1, y, cfg, l2)
    result["general"] = {"baseline": summary(base), "candidate": summary(cand),
                         "single_network_accuracy": {"general_pass1": acc_a, "general_pass2": acc_b},
                         "pass2_is": "general_pass2" if acc_b >= acc_a else "general_pass1"}
    result["general"]["passed"] = passes(result["general"]["candidate"], result["general"]["baseline"])
    print("general", json.dumps(result["general"]), flush=True)
    if result["general"]["passed"]:
        out_pass1, out_pass2 = g1, g2
        general_cal = dict(cand)  # the same keys as the shipped general calibration
    else:
        out_pass1, out_pass2 = pass1, pass2
        general_cal = {k: v for k, v in shipped.items() if k != "digits"}

    # Digit path: five positions, as shipped; pass 1 the mean of the general pass 1 that ships and a digit pass 1.
    cfg, x, y = cells(DIGITS)
    base = T.calibrate(T.logits_of(pass1, x, shift=shift), y, cfg, T.logits_of(specialist, x, shift=shift),
                       logits1b=T.logits_of(digit_pass1, x, shift=shift))
    cand = T.calibrate(T.logits_of(out_pass1, x, shift=shift), y, cfg,
                       T.logits_of(new["digits_pass2"], x, shift=shift),
                       logits1b=T.logits_of(new["digits_pass1"], x, shift=shift))
    result["digits"] = {"baseline": summary(base), "candidate": summary(cand),
                        "single_network_accuracy": {
                            name: float((T.logits_of(new[name], x, shift=shift).argmax(1) == y).mean())
                            for name in ("digits_pass1", "digits_pass2")}}
    result["digits"]["passed"] = passes(result["digits"]["candidate"], result["digits"]["baseline"])
    print("digits", json.dumps(result["digits"]), flush=True)
    if result["digits"]["passed"]:
        out_spec, out_dp1 = new["digits_pass2"], new["digits_pass1"]
        digit_cal = {**{k: v for k, v in cand.items() if k in KEEP}, "shift": shift}
    else:  # the digit path as shipped, its mean with the shipped general pass 1 included (digits_mix)
        out_spec, out_dp1 = specialist, digit_pass1
        digit_cal = shipped["digits"]
    mix = pass1 if out_pass1 is not pass1 and not result["digits"]["passed"] else None
    result["ships"] = {"general": result["general"]["passed"], "digits": result["digits"]["passed"]}
    if any(result["ships"].values()):
        path = save_reader(folder.file("cells.safetensors"), out_pass1, {**general_cal, "digits": digit_cal},
                           out_pass2, out_spec, out_dp1, mix)
        result["weights_bytes"] = path.stat().st_size
    folder.finish(result)
    print(json.dumps(result["ships"]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
