"""Load the shipped cell reader and read cells in two passes (Grabowski & Canz's two-pass validation).

Pass 1 reads **with the key** (is the expected character there?), pass 2 **without** it (which character
is it?). When the weights file holds two networks (:mod:`htr.cells.model`), pass 1 uses the first and pass 2
the second, so the two readings come from networks of different architectures trained on different cells;
a file with one network serves both passes. How the two readings are accepted is the file's
:class:`AcceptRule` (``calibration.rule``):

- ``product`` (the shipped reader): each pass reports its most likely class; a cell is accepted when both
  name the same character c of the alphabet and the two networks' combined evidence p1(c) * p2(c) reaches
  ``verify_threshold`` when c is the key, ``accept_threshold`` when it is not (a reading that differs from
  the key has no key behind it, so it needs more). Both reading the key with weaker evidence is flagged
  ``key_unverified``, distinct from ``disagree`` (the passes name different characters);
- ``verify`` (the earlier readers; a file without ``rule``): pass 1 reports the key when its probability
  reaches ``verify_threshold``, else its most likely other class; agreement on the key is accepted,
  agreement on another character needs pass 2's probability >= ``accept_threshold``.

Other flags: ``empty``, ``crossed``, ``outside_alphabet``, ``unreadable``, ``low_confidence`` (both read the
same character, not the key, below ``accept_threshold``). The rule, its thresholds and the softmax
temperatures are chosen on the validation cells (:mod:`htr.cells.train`) and stored in the weights file.

Digit tables (an alphabet of digits only, and every ``student_id`` table) may read differently: when the
file's calibration has a ``digits`` entry (its own rule, thresholds and temperatures, chosen on digit
validation cells), pass 1 is the file's digit pass 1 (or pass 1's network when the file has none) and pass
2 the file's digit specialist (or pass 2's network when the file has none). With ``calibration.digits.pass1_mix:
mean`` pass 1 reads the mean of the pass-1 network's and the digit pass 1's calibrated probabilities
(temperatures ``temperature`` and ``temperature_digits_pass1``). :meth:`CellReader.rule_for`
and the ``alphabet`` argument of :meth:`CellReader.pass_probs` pick it.

With ``calibration.shift`` = k > 0 every network reads a cell at five positions (as it is and moved by k px
left, right, up and down; :func:`shifted_views`) and its logits are averaged before the softmax; the file's
temperatures and thresholds were then calibrated on logits read the same way. ``calibration.digits.shift``
sets it for digit tables alone (default: the general value).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from htr.cells.data import CHARS, CLASSES, CROSSED, EMPTY, to_input
from inkbase.errors import InputError

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "cells" / "cells.safetensors"
# (dx, dy) of the positions a cell is read at when the calibration sets ``shift``, in units of ``shift`` px;
# ``positions: 9`` adds the four diagonal moves.
SHIFT_VIEWS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))
DIAGONAL_VIEWS = ((1, 1), (1, -1), (-1, 1), (-1, -1))
POSITIONS = (5, 9)


def shifted_views(x: np.ndarray, shift: int, positions: int = 5) -> list[np.ndarray]:
    """(N, H, W) inputs (ink high, background 0) and, for ``shift`` > 0, copies moved by ``shift`` px in the
    four directions (``positions`` 9: and the four diagonals; the uncovered border is background)."""
    if not shift:
        return [x]
    s = int(shift)
    pad = np.pad(x, ((0, 0), (s, s), (s, s)))
    h, w = x.shape[1:]
    moves = SHIFT_VIEWS + (DIAGONAL_VIEWS if positions == 9 else ())
    return [pad[:, s + dy * s:s + dy * s + h, s + dx * s:s + dx * s + w] for dx, dy in moves]


def zoomed(x: np.ndarray, factor: float) -> np.ndarray:
    """(N, H, W) inputs enlarged (``factor`` > 1) or shrunk about their centre, bilinear, the uncovered border
    background: a cell written larger or smaller in its box."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(x, np.float32))[:, None]
    theta = torch.tensor([[1.0 / factor, 0.0, 0.0], [0.0, 1.0 / factor, 0.0]]).expand(len(t), 2, 3)
    grid = F.affine_grid(theta, list(t.shape), align_corners=False)
    return F.grid_sample(t, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0].numpy()


def mean_logits(model, x: np.ndarray, batch: int, shift: int = 0, positions: int = 5,
                zooms: tuple[float, ...] = ()) -> np.ndarray:
    """``model``'s logits (N, classes) for (N, H, W) inputs in [0, 1], averaged over the positions of
    :func:`shifted_views` (the inputs as they are when ``shift`` is 0) and the :func:`zoomed` copies."""
    import torch

    views = shifted_views(x, shift, positions) + [zoomed(x, z) for z in zooms]
    device = next(model.parameters()).device  # where the network is (a GPU while it trains)
    total = 0.0
    with torch.no_grad():
        for view in views:
            total = total + np.concatenate([
                model(torch.from_numpy(np.ascontiguousarray(view[i:i + batch], np.float32))[:, None].to(device))
                .cpu().numpy() for i in range(0, len(view), batch)])
    return total / len(views)


def is_digit_alphabet(alphabet: str) -> bool:
    return bool(alphabet) and all(c.isdigit() for c in alphabet)


def allowed_classes(alphabet: str) -> np.ndarray:
    """Indices the reader may answer for a table with ``alphabet``: every character of the same kind
    (letters and/or digits, so a letter outside a short alphabet is seen and flagged) plus empty and crossed."""
    kinds = {c.isdigit() for c in alphabet}
    chars = [c for c in CHARS if c.isdigit() in kinds]
    return np.asarray([CLASSES.index(c) for c in chars] + [CLASSES.index(EMPTY), CLASSES.index(CROSSED)])


@dataclass(frozen=True)
class CellRead:
    pass1: str
    pass2: str
    accepted: bool
    flag: str
    confidence: float


def restrict(probs: np.ndarray, alphabet: str) -> np.ndarray:
    """Probabilities over :data:`CLASSES` renormalised to the classes allowed for ``alphabet``."""
    mask = np.zeros(len(CLASSES), bool)
    mask[allowed_classes(alphabet)] = True
    p = np.where(mask, probs, 0.0)
    return p / np.maximum(p.sum(axis=-1, keepdims=True), 1e-12)


def pass_with_key(p: np.ndarray, key: str | None, verify_threshold: float) -> str:
    """Pass 1 of the ``verify`` rule on restricted probabilities ``p``: ``key`` if its probability reaches
    ``verify_threshold``, else the most likely other class (the argmax when there is no key)."""
    if key is None or key not in CLASSES:
        return CLASSES[int(np.argmax(p))]
    k = CLASSES.index(key)
    if p[k] >= verify_threshold:
        return key
    others = p.copy()
    others[k] = -1.0
    return CLASSES[int(np.argmax(others))]


RULES = ("verify", "product")
PASS1_MIXES = ("none", "mean")  # how a digit pass 1 joins pass 1 of digit tables: alone, or averaged with pass 1's network


@dataclass(frozen=True)
class AcceptRule:
    """When a cell's two readings are accepted (module docstring); ``name`` is ``verify`` or ``product``."""

    name: str
    verify_threshold: float
    accept_threshold: float

    def __post_init__(self):
        if self.name not in RULES:
            raise ValueError(f"unknown acceptance rule {self.name!r} (one of {', '.join(RULES)})")

    @property
    def key_threshold(self) -> float:
        # Under ``verify`` pass 1 names the key only once it is verified: agreement on the key needs nothing more.
        return self.verify_threshold if self.name == "product" else 0.0

    def pass1(self, p: np.ndarray, key: str | None) -> str:
        """Pass 1's reading from its restricted probabilities ``p``."""
        if self.name == "product":
            return CLASSES[int(np.argmax(p))]
        return pass_with_key(p, key, self.verify_threshold)

    def evidence(self, p1: np.ndarray | None, p2: np.ndarray | None, reading: str) -> float:
        """The evidence for ``reading`` compared with the thresholds, from the restricted probabilities of
        the passes that are this reader's networks (None: a language model read that pass; NaN: neither)."""
        if reading not in CLASSES:
            return float("nan")
        c = CLASSES.index(reading)
        used = [p2] if self.name == "verify" else [p1, p2]
        values = [float(p[c]) for p in used if p is not None]
        return float(np.prod(values)) if values else float("nan")


def flag_cell(pass1: str, pass2: str, alphabet: str, evidence: float, rule: AcceptRule, key: str | None = None) -> str:
    """Why a cell goes to review (``""``: accepted). ``evidence`` is :meth:`AcceptRule.evidence` for pass
    2's reading (NaN when neither pass gives a probability: the agreement of two language-model reads)."""
    if pass2 == EMPTY:
        return "empty"
    if pass2 == CROSSED:
        return "crossed"
    if pass2 not in CLASSES or pass1 not in CLASSES:  # e.g. a language model's reply that could not be aligned
        return "unreadable"
    if pass2 not in alphabet:
        return "outside_alphabet"
    if pass1 != pass2:
        return "disagree"
    if np.isnan(evidence):
        return ""
    if pass2 == key:
        return "key_unverified" if evidence < rule.key_threshold else ""
    return "low_confidence" if evidence < rule.accept_threshold else ""


def two_pass(probs: np.ndarray, key: str | None, alphabet: str, rule: AcceptRule,
             probs2: np.ndarray | None = None) -> CellRead:
    """Decide one cell from pass 1's class probabilities (over :data:`CLASSES`) and pass 2's ``probs2``
    (None: the same network reads both passes); ``confidence`` is the evidence for pass 2's reading."""
    p = restrict(probs, alphabet)
    p2 = p if probs2 is None else restrict(probs2, alphabet)
    pass2 = CLASSES[int(np.argmax(p2))]
    pass1 = rule.pass1(p, key)
    evidence = rule.evidence(p, p2, pass2)
    flag = flag_cell(pass1, pass2, alphabet, evidence, rule, key)
    return CellRead(pass1, pass2, flag == "", flag, evidence)


def decide_many(probs: np.ndarray, keys: np.ndarray, alphabet_mask: np.ndarray, rule: AcceptRule,
                probs2: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised :func:`two_pass` for calibration: ``probs`` (pass 1) and ``probs2`` (pass 2; None: the
    same) already restricted, ``keys`` class indices, ``alphabet_mask`` (n_classes,) marks the alphabet.
    Returns (accepted, pass2 indices)."""
    n = len(probs)
    rows = np.arange(n)
    p2 = probs if probs2 is None else probs2
    a = p2.argmax(1)
    if rule.name == "product":
        evidence = probs[rows, a] * p2[rows, a]
        needed = np.where(a == keys, rule.verify_threshold, rule.accept_threshold)
        return (probs.argmax(1) == a) & alphabet_mask[a] & (evidence >= needed), a
    conf = p2[rows, a]
    verified = probs[rows, keys] >= rule.verify_threshold
    others = probs.copy()
    others[rows, keys] = -1.0
    pass1 = np.where(verified, keys, others.argmax(1))
    accepted = (pass1 == a) & alphabet_mask[a] & ((a == keys) | (conf >= rule.accept_threshold))
    return accepted, a


def _accept_rule(path: Path, cal: dict[str, Any], field: str, needed: tuple[str, ...]) -> AcceptRule:
    """The acceptance rule a calibration entry (``field``: its place in the file's metadata) describes; a
    missing key or an unknown rule is an :class:`InputError` naming it. The thresholds belong to the weights
    they were calibrated for: a file without them is not a reader."""
    missing = [k for k in needed if k not in cal]
    if missing:
        raise InputError(path, f"{field}.{missing[0]}", "missing (train with scripts/train_cells.py)")
    rule = cal.get("rule", "verify")
    if rule not in RULES:
        raise InputError(path, f"{field}.rule", f"{rule!r} is not one of {', '.join(RULES)}")
    return AcceptRule(rule, float(cal["verify_threshold"]), float(cal["accept_threshold"]))


def _shift(path: Path, cal: dict[str, Any], field: str, default: int) -> int:
    value = cal.get(field.rsplit(".", 1)[-1], default)
    if not isinstance(value, int) or value < 0:
        raise InputError(path, field, f"{value!r} is not a whole number of pixels >= 0")
    return value


def _views(path: Path, cal: dict[str, Any], field: str, default_shift: int) -> dict[str, Any]:
    """How the networks read each cell (:func:`mean_logits`'s ``shift``, ``positions``, ``zooms``)."""
    shift = _shift(path, cal, f"{field}.shift", default_shift)
    positions, zooms = cal.get("positions", 5), cal.get("zooms", [])
    if positions not in POSITIONS:
        raise InputError(path, f"{field}.positions", f"{positions!r} is not one of {POSITIONS}")
    if not isinstance(zooms, list) or not all(isinstance(z, int | float) and 0.5 <= z <= 2 for z in zooms):
        raise InputError(path, f"{field}.zooms", f"{zooms!r} is not a list of factors in [0.5, 2]")
    return {"shift": shift, "positions": positions, "zooms": tuple(float(z) for z in zooms)}


class CellReader:
    """The trained cell reader; ``weights=None`` loads the shipped file."""

    def __init__(self, weights: str | Path | None = None):
        import torch

        from htr.cells.model import load_networks

        self.path = Path(weights) if weights else DEFAULT_WEIGHTS
        nets, meta = load_networks(self.path)
        cal: dict[str, Any] = meta["calibration"]
        needed = ("temperature", "verify_threshold", "accept_threshold", *(("temperature2",) if len(nets) > 1 else ()))
        self.rule = _accept_rule(self.path, cal, "calibration", needed)
        self.model = nets[0]
        self.model2 = nets[1] if len(nets) > 1 else None
        self.views = _views(self.path, cal, "calibration", 0)
        self.shift = self.views["shift"]
        self.temperature = float(cal["temperature"])
        self.temperature2 = float(cal.get("temperature2", cal["temperature"]))
        self.verify_threshold = self.rule.verify_threshold
        self.accept_threshold = self.rule.accept_threshold
        self.model_digits = nets[2] if meta["has_digits"] else None
        self.model_digits1 = nets[3] if meta.get("has_digits_pass1") else None
        # The general pass 1 the digit tables' mean was calibrated with, where the file's pass 1 is newer.
        self.model_digits_mix = nets[4] if meta.get("has_digits_mix") else None
        self.digits = cal.get("digits")
        if (self.model_digits is not None or self.model_digits1 is not None) and self.digits is None:
            raise InputError(self.path, "calibration.digits", "missing for the file's digit network")
        if self.digits is not None:
            self.digit_rule = _accept_rule(self.path, self.digits, "calibration.digits",
                                           ("temperature", "temperature2", "verify_threshold", "accept_threshold", "rule"))
            self.digit_views = _views(self.path, self.digits, "calibration.digits", self.shift)
            self.digit_shift = self.digit_views["shift"]
            self.pass1_mix = self.digits.get("pass1_mix", "none")
            if self.pass1_mix not in PASS1_MIXES:
                raise InputError(self.path, "calibration.digits.pass1_mix",
                                 f"{self.pass1_mix!r} is not one of {', '.join(PASS1_MIXES)}")
            if self.pass1_mix == "mean" and (self.model_digits1 is None or "temperature_digits_pass1" not in self.digits):
                raise InputError(self.path, "calibration.digits.pass1_mix", "mean needs a digit pass 1 and its temperature")
            if self.model_digits_mix is not None and self.pass1_mix != "mean":
                raise InputError(self.path, "calibration.digits.pass1_mix", "a digit mix network needs the mean")
        self._torch = torch

    def _digits(self, alphabet: str | None) -> bool:
        return self.digits is not None and alphabet is not None and is_digit_alphabet(alphabet)

    def rule_for(self, alphabet: str) -> AcceptRule:
        """The acceptance rule for a table with ``alphabet`` (digit tables may have their own)."""
        return self.digit_rule if self._digits(alphabet) else self.rule

    def _softmax(self, model, temperature: float, x: np.ndarray, batch: int,
                 views: dict[str, Any] | None = None) -> np.ndarray:
        if not len(x):
            return np.zeros((0, len(CLASSES)), np.float32)
        logits = mean_logits(model, x, batch, **(self.views if views is None else views))
        return self._torch.softmax(self._torch.from_numpy(logits) / temperature, dim=1).numpy()

    def probs_from_inputs(self, x: np.ndarray, batch: int = 512) -> np.ndarray:
        """Pass 1's calibrated probabilities over :data:`CLASSES` for (N, 32, 32) inputs in [0, 1]."""
        return self._softmax(self.model, self.temperature, x, batch)

    def pass_probs_from_inputs(self, x: np.ndarray, batch: int = 512,
                               alphabet: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated probabilities of pass 1's and pass 2's networks (the same array with one network) for
        a table with ``alphabet`` (None: the general reading)."""
        if self._digits(alphabet):
            if self.pass1_mix == "mean":  # averaged below with the digit pass 1
                first = self.model if self.model_digits_mix is None else self.model_digits_mix
            else:
                first = self.model if self.model_digits1 is None else self.model_digits1
            second = next(m for m in (self.model_digits, self.model2, self.model) if m is not None)
            k = self.digit_views
            p1 = self._softmax(first, float(self.digits["temperature"]), x, batch, k)
            if self.pass1_mix == "mean":
                p1 = (p1 + self._softmax(self.model_digits1, float(self.digits["temperature_digits_pass1"]), x, batch,
                                         k)) / 2
            return p1, self._softmax(second, float(self.digits["temperature2"]), x, batch, k)
        p1 = self.probs_from_inputs(x, batch)
        return p1, p1 if self.model2 is None else self._softmax(self.model2, self.temperature2, x, batch)

    def pass_probs(self, crops: list[np.ndarray], alphabet: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Both passes' calibrated probabilities for grey cell crops (the cell box plus :data:`CROP_MARGIN`)
        of a table with ``alphabet``."""
        if not crops:
            empty = np.zeros((0, len(CLASSES)), np.float32)
            return empty, empty
        return self.pass_probs_from_inputs(np.stack([to_input(c) for c in crops]), alphabet=alphabet)

    def probs(self, crops: list[np.ndarray], alphabet: str | None = None) -> np.ndarray:
        """Calibrated probabilities for grey cell crops: pass 1's and pass 2's networks averaged."""
        p1, p2 = self.pass_probs(crops, alphabet)
        return p1 if p2 is p1 else (p1 + p2) / 2

    def read(self, probs: np.ndarray, key: str | None, alphabet: str, probs2: np.ndarray | None = None) -> CellRead:
        return two_pass(probs, key, alphabet, self.rule_for(alphabet), probs2)
