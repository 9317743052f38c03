"""Evaluation of the answer-table reader in Grabowski & Canz's Table 1 layout (``scripts/eval_tables.py``).

Parts, each written to the run folder as it finishes (a rerun resumes after the finished parts):

* ``cells_letters`` / ``cells_digits``: single cells rendered with the held-out test fonts
  (:data:`htr.cells.data.TEST_FAMILIES`, never trained on nor used for calibration; all of them must be in
  the font cache, ``make fonts``), with empty and crossed-out cells mixed in;
* ``tables_sklearn_digits``: scikit-learn's 1,797 real handwritten digits (8x8, upscaled), written into
  digit-coded answer tables on rendered scanned pages (shifted, scaled, rotated), read end to end by
  ``grade_tables`` (grid finding included);
* ``tables_letters``: rendered scanned pages in held-out fonts with a student ID table and a letter
  table (empty and crossed-out entries included), read end to end with a roster.

Keys are simulated: the written character with probability ``key_right_share``, else another one.
Reported per part: single-pass accuracy (pass 2 against the truth) and errors, and the two-pass figures
(share accepted, errors among accepted, share flagged).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from omegaconf import DictConfig, OmegaConf

from htr.cells.data import (
    CROSSED,
    EMPTY,
    cell_fonts,
    compose_cell,
    font_glyph,
    mask_glyph,
    require_families,
    to_input,
)
from htr.cells.reader import CellReader, two_pass
from inkbase.jsonio import read_json, write_json
from inkbase.runs import CONFIG_DIR, start_run
from inkgrade.tables import grade
from inkgrade.tables.layout import Layout
from inkgrade.tables.synth import demo_layout, font_writer, write_scans

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = "0123456789"


def _key_for(truth: str, alphabet: str, rng: np.random.Generator, right: float) -> str:
    if truth in alphabet and rng.random() < right:
        return truth
    return str(rng.choice([c for c in alphabet if c != truth]))


def figures(truth: list[str], pass2: list[str], accepted: list[bool]) -> dict[str, Any]:
    """Single-pass accuracy over all cells (empty and crossed count as classes) and two-pass figures."""
    n = len(truth)
    correct = sum(t == p for t, p in zip(truth, pass2, strict=True))
    acc = sum(accepted)
    err_acc = sum(a and t != p for t, p, a in zip(truth, pass2, accepted, strict=True))
    written = [i for i, t in enumerate(truth) if t not in (EMPTY, CROSSED)]
    flagged_written = sum(not accepted[i] for i in written)
    blank = [i for i in range(n) if truth[i] in (EMPTY, CROSSED)]
    return {"n": n, "accuracy": correct / max(n, 1), "errors": n - correct, "accepted": acc,
            "share_accepted": acc / max(n, 1), "errors_accepted": err_acc,
            "error_among_accepted": err_acc / max(acc, 1), "share_flagged": 1 - acc / max(n, 1),
            "n_written": len(written), "share_flagged_written": flagged_written / max(len(written), 1),
            "n_empty_or_crossed": len(blank), "empty_or_crossed_flagged": sum(not accepted[i] for i in blank)}


def eval_cells(reader: CellReader, fonts, alphabet: str, n: int, rng: np.random.Generator, cfg: DictConfig) -> dict:
    truth, pass2, accepted = [], [], []
    crops = []
    for i in range(n):
        u = rng.random()
        empty = u < cfg.empty_share
        crossed = not empty and u < cfg.empty_share + cfg.crossed_share
        ch = alphabet[i % len(alphabet)]
        glyph = None if empty else font_glyph(ch, fonts[int(rng.integers(0, len(fonts)))], rng)
        crops.append(compose_cell(glyph, rng, crossed=crossed))
        truth.append(EMPTY if empty else CROSSED if crossed else ch)
    probs, probs2 = reader.pass_probs_from_inputs(np.stack([to_input(c) for c in crops]), alphabet=alphabet)
    for t, p, p2 in zip(truth, probs, probs2, strict=True):
        read = two_pass(p, _key_for(t, alphabet, rng, cfg.key_right_share), alphabet, reader.rule_for(alphabet), p2)
        pass2.append(read.pass2)
        accepted.append(read.accepted)
    return figures(truth, pass2, accepted)


def sklearn_glyphs() -> tuple[list[np.ndarray], np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    glyphs = [mask_glyph(cv2.resize((img * 255 / 16).astype(np.uint8), (32, 32), interpolation=cv2.INTER_CUBIC))
              for img in d.images]
    return glyphs, d.target


def _run_grade(scans: Path, layout: Path, key: Path, out: Path, cfg: DictConfig, roster: Path | None = None) -> None:
    if (out / "metrics.json").exists():
        return
    # grade_tables' own defaults (grid, identity), read as plain YAML: Hydra is already running this job.
    base = OmegaConf.load(CONFIG_DIR / "grade_tables.yaml")
    base.pop("defaults")
    run_cfg = OmegaConf.merge(base, {"scans": str(scans), "layout": str(layout), "key": str(key), "out_dir": str(out),
                                     "roster": str(roster) if roster else None, "progress": False,
                                     "weights": cfg.get("weights"), "cache_dir": None})
    grade.run(run_cfg)


def _e2e_figures(out: Path, truth: dict[tuple[str, str], str], table_ids: set[str]) -> dict:
    rows = list(csv.DictReader((out / "cells.csv").open(encoding="utf-8")))
    label = {"-": EMPTY, "#": CROSSED}
    scripts = {r["script"]: r["student_id"] for r in map(json.loads, (out / "scripts.jsonl").read_text().splitlines())}
    by_student = {v: k for k, v in scripts.items()}
    t, p, a = [], [], []
    for r in rows:
        script = by_student[r["student_id"]]
        if r["table_id"] not in table_ids or (str(script), r["item_id"]) not in truth:
            continue  # the last script of a set may have fewer entries than cells
        t.append(truth[(str(script), r["item_id"])])
        p.append(label.get(r["pass2"], r["pass2"]))
        a.append(r["accepted"] == "True")
    fig = figures(t, p, a)
    # Which readings were wrong yet accepted ("4->6": a written 4 read as 6), for error analysis.
    wrong = Counter(f"{x}->{y}" for x, y, ok in zip(t, p, a, strict=True) if ok and x != y)
    fig["accepted_errors_by_pair"] = dict(sorted(wrong.items(), key=lambda kv: (-kv[1], kv[0])))
    fig["page_errors"] = len((out / "errors.jsonl").read_text().splitlines()) if (out / "errors.jsonl").exists() else 0
    return fig


def _sklearn_scripts(target: np.ndarray, keys: list[str], right: float | None, rng: np.random.Generator,
                     ) -> list[list[int]]:
    """The 1,797 digits laid out ten per script. ``right=None``: in dataset order (a digit matches its
    column's key about one time in ten); else each cell takes a digit equal to its column's key with
    probability ``right`` while such digits last."""
    per = len(keys)
    if right is None:
        return [list(range(s, min(s + per, len(target)))) for s in range(0, len(target), per)]
    pools = {d: list(rng.permutation(np.flatnonzero(target == d))) for d in range(10)}
    scripts: list[list[int]] = []
    left = len(target)
    while left:
        row = []
        for j in range(min(per, left)):
            want = int(keys[j])
            if not (rng.random() < right and pools[want]):
                others = [d for d in pools if pools[d] and d != want] or [want]
                want = int(rng.choice(others))
            row.append(int(pools[want].pop()))
            left -= 1
        scripts.append(row)
    return scripts


def eval_sklearn_tables(folder: Path, cfg: DictConfig, rng: np.random.Generator, prefix: str = "sk",
                        right: float | None = None) -> dict:
    glyphs, target = sklearn_glyphs()
    per = 10
    lay = demo_layout(n_items=per, id_digits=0, alphabet=DIGITS)
    (folder / f"{prefix}_layout.json").write_text(json.dumps(lay))
    layout = Layout.model_validate(lay)
    if right is None:
        # One key for the whole class (as in an exam), drawn at random per column.
        keys = [str(rng.integers(0, 10)) for _ in range(per)]
    else:
        keys = [str(d) for d in rng.permutation(10)]
    rows = _sklearn_scripts(target, keys, right, rng)
    scripts, truth = [], {}
    for s, idx in enumerate(rows):
        scripts.append({"t1": [f"@{i}" for i in idx]})
        for j, i in enumerate(idx):
            truth[(str(s), f"q{j + 1}")] = str(target[i])
    (folder / f"{prefix}_key.json").write_text(json.dumps({"t1": {f"q{j + 1}": k for j, k in enumerate(keys)}}))

    def write(ch: str, rng: np.random.Generator) -> np.ndarray:
        return glyphs[int(ch[1:])]

    scans = folder / f"{prefix}_scans"
    if not scans.exists():  # rendered into a temporary folder first, so a cut-short rendering is redone
        write_scans(folder / f"{prefix}_scans.tmp", layout, scripts, write, rng, ext=".jpg")
        (folder / f"{prefix}_scans.tmp").rename(scans)
    out = folder / f"{prefix}_grade"
    _run_grade(scans, folder / f"{prefix}_layout.json", folder / f"{prefix}_key.json", out, cfg)
    fig = _e2e_figures(out, truth, {"t1"})
    fig["share_key_right"] = sum(truth[(str(s), f"q{j + 1}")] == keys[j] for s, idx in enumerate(rows)
                                 for j in range(len(idx))) / len(target)
    return fig


def eval_letter_tables(folder: Path, cfg: DictConfig, rng: np.random.Generator, fonts) -> dict:
    n_items = 12
    lay = demo_layout(n_items=n_items, id_digits=6, alphabet=LETTERS[:cfg.tables.alphabet_size])
    (folder / "lt_layout.json").write_text(json.dumps(lay))
    layout = Layout.model_validate(lay)
    alphabet = layout.alphabet
    key = {f"q{j + 1}": str(rng.choice(list(alphabet))) for j in range(n_items)}
    (folder / "lt_key.json").write_text(json.dumps({"t1": key}))
    ids = sorted({f"{int(x):06d}" for x in rng.integers(0, 10**6, cfg.tables.n_scripts * 2)})[:cfg.tables.n_scripts]
    (folder / "lt_roster.csv").write_text("student_id,name,class\n" + "".join(f"{i},Student {i},A\n" for i in ids))
    scripts, truth = [], {}
    for s, sid in enumerate(ids):
        cells = []
        for j in range(n_items):
            u = rng.random()
            written = _key_for(key[f"q{j + 1}"], alphabet, rng, cfg.key_right_share)
            if u < cfg.empty_share:
                cells.append("")
                truth[(str(s), f"q{j + 1}")] = EMPTY
            elif u < cfg.empty_share + cfg.crossed_share:
                cells.append("~" + written)
                truth[(str(s), f"q{j + 1}")] = CROSSED
            else:
                cells.append(written)
                truth[(str(s), f"q{j + 1}")] = written
        scripts.append({"sid": list(sid), "t1": cells})
    scans = folder / "lt_scans"
    if not scans.exists():
        write_scans(folder / "lt_scans.tmp", layout, scripts, [font_writer(f) for f in fonts], rng, ext=".jpg")
        (folder / "lt_scans.tmp").rename(scans)
    out = folder / "lt_grade"
    _run_grade(scans, folder / "lt_layout.json", folder / "lt_key.json", out, cfg, folder / "lt_roster.csv")
    fig = _e2e_figures(out, truth, {"t1"})
    done = list(map(json.loads, (out / "scripts.jsonl").read_text().splitlines()))
    fig["ids_assigned_right"] = sum(d["student_id"] == ids[d["script"]] for d in done)
    fig["ids_assigned_wrong"] = sum(not d["student_id"].startswith("unidentified") and d["student_id"] != ids[d["script"]]
                                    for d in done)
    fig["ids_unidentified"] = sum(d["student_id"].startswith("unidentified") for d in done)
    return fig


def table1(parts: dict[str, dict]) -> str:
    names = {"cells_letters": "cell reader, held-out fonts, letters A-Z (single cells)",
             "cells_digits": "cell reader, held-out fonts, digits 0-9 (single cells)",
             "tables_sklearn_digits": "scikit-learn real digits in digit tables, scanned pages (end to end), "
                                      "random key per column",
             "tables_sklearn_digits_key75": "scikit-learn real digits in digit tables, scanned pages (end to end), "
                                            "key right for about 75 % of cells",
             "tables_letters": "held-out fonts, letter tables on scanned pages (end to end)"}
    lines = ["| reader / test set | cells | recognition (single pass) | errors | accepted | errors among accepted "
             "| flagged (all cells) | flagged (written cells) | empty/crossed flagged |",
             "|---|---|---|---|---|---|---|---|---|"]
    for k, f in parts.items():
        lines.append(f"| {names[k]} | {f['n']} | {100 * f['accuracy']:.2f} % | {f['errors']} | "
                     f"{100 * f['share_accepted']:.2f} % | {f['errors_accepted']} "
                     f"({100 * f['error_among_accepted']:.3f} %) | {100 * f['share_flagged']:.2f} % | "
                     f"{100 * f['share_flagged_written']:.2f} % | "
                     f"{f['empty_or_crossed_flagged']} / {f['n_empty_or_crossed']} |")
    return "\n".join(lines) + "\n"


def run(cfg: DictConfig) -> dict[str, Any]:
    folder = start_run(cfg.out_dir, cfg)
    reader = CellReader(cfg.weights)
    fonts = cell_fonts("test")
    require_families("test", fonts)
    parts: dict[str, dict] = {}
    jobs = {  # name: (seed offset, job)
        "cells_letters": (0, lambda rng: eval_cells(reader, fonts, LETTERS, cfg.cells.n_letters, rng, cfg)),
        "cells_digits": (1, lambda rng: eval_cells(reader, fonts, DIGITS, cfg.cells.n_digits, rng, cfg)),
        "tables_sklearn_digits": (2, lambda rng: eval_sklearn_tables(folder.path, cfg, rng)),
        "tables_sklearn_digits_key75": (4, lambda rng: eval_sklearn_tables(folder.path, cfg, rng, "sk75",
                                                                           cfg.key_right_share)),
        "tables_letters": (3, lambda rng: eval_letter_tables(folder.path, cfg, rng, fonts)),
    }
    for name, (offset, job) in jobs.items():
        path = folder.file(f"{name}.json")
        if not path.exists():
            write_json(path, job(np.random.default_rng(cfg.seed + offset)))
        parts[name] = read_json(path)
    (folder.file("table1.md")).write_text(table1(parts), encoding="utf-8")
    metrics = {**parts, "test_fonts": [f.name for f in fonts], "weights": str(reader.path),
               "calibration": {"rule": reader.rule.name, "temperature": reader.temperature, "verify_threshold": reader.verify_threshold,
                               "accept_threshold": reader.accept_threshold, "digits": reader.digits,
                               "digit_network": reader.model_digits is not None,
                               "digit_pass1_network": reader.model_digits1 is not None}}
    folder.finish(metrics)
    return metrics
