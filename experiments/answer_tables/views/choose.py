"""PLAN.md's candidates (more views of each cell) against the shipped five-position reading of the general
pair, on the shipped calibration's validation cells, decided by its rule; writes ``metrics.json`` and, when a
candidate is chosen, ``cells.safetensors`` (the shipped file with the general calibration replaced by the
chosen candidate's; the digit path as shipped).

PYTHONPATH=src:. OMP_NUM_THREADS=2 python experiments/answer_tables/views/choose.py <out_dir>
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "wide"))
from choose import GENERAL, cells, passes, summary  # noqa: E402
from grid import GRID  # noqa: E402

from htr.cells import train as T  # noqa: E402
from htr.cells.model import load_networks, save_reader  # noqa: E402
from htr.cells.reader import DEFAULT_WEIGHTS  # noqa: E402
from inkbase.runs import start_run  # noqa: E402

CANDIDATES = {  # name: (positions, zooms); all at the shipped shift of 1 px
    "five_positions": (5, ()),
    "positions9": (9, ()),
    "scales": (5, (1.1, 0.9)),
    "both": (9, (1.1, 0.9)),
}


def decide(result: dict, cals: dict, shipped: dict) -> None:
    """PLAN.md's rule on ``result["candidates"]`` (summaries) and ``cals`` (calibrations) of one path against
    its five-position reading and the ``shipped`` calibration: fills ``baseline_reproduces_shipped``,
    ``passing`` and ``chosen`` (the highest single pass among the passing; ties: fewer views)."""
    base = result["candidates"]["five_positions"]
    result["baseline_reproduces_shipped"] = all(cals["five_positions"][key] == shipped[key] for key in
                                                ("temperature", "temperature2", "verify_threshold", "accept_threshold"))
    passing = [n for n in CANDIDATES if n != "five_positions" and passes(result["candidates"][n], base)]
    n_views = {n: p + len(z) for n, (p, z) in CANDIDATES.items()}
    result["passing"] = passing
    result["chosen"] = max(passing, key=lambda n: (result["candidates"][n]["val_accuracy"], -n_views[n])) \
        if passing else None


def main(out_dir: str) -> None:
    weights = str(DEFAULT_WEIGHTS.relative_to(Path.cwd()))
    folder = start_run(out_dir, {"weights": weights, "grid": GRID, "general": GENERAL, "candidates": CANDIDATES})
    nets, meta = load_networks(DEFAULT_WEIGHTS)
    pass1, pass2 = nets[:2]
    shipped = meta["calibration"]
    k = int(shipped["shift"])
    cfg, x, y = cells(GENERAL)
    cfg.calibration.grid = GRID
    result: dict = {"weights": weights, "shift": k, "candidates": {}}
    cals = {}
    for name, (positions, zooms) in CANDIDATES.items():
        views = {"shift": k, "positions": positions, "zooms": zooms}
        cals[name] = T.calibrate(T.logits_of(pass1, x, **views), y, cfg, T.logits_of(pass2, x, **views))
        result["candidates"][name] = summary(cals[name])
        print(name, json.dumps(result["candidates"][name]), flush=True)
    decide(result, cals, shipped)
    if result["chosen"]:
        positions, zooms = CANDIDATES[result["chosen"]]
        general = {**cals[result["chosen"]], "shift": k, "positions": positions, "zooms": list(zooms)}
        path = save_reader(folder.file("cells.safetensors"), pass1, {**general, "digits": shipped["digits"]}, *nets[1:])
        result["weights_bytes"] = path.stat().st_size
    folder.finish(result)
    print("chosen:", result["chosen"])


if __name__ == "__main__":
    main(sys.argv[1])
