"""Match a student ID read digit by digit to the roster.

Each roster ID of the table's length is scored by the log-probability the reader gives its digits
(the product of the per-digit probabilities, i.e. a maximum-likelihood match over the roster); the scores
are normalised into a posterior over the roster. The best ID is accepted only if its posterior reaches
``min_posterior`` (so a close second makes it ambiguous) and every one of its digits has probability
at least ``min_digit_prob`` (so an ID not on the roster, with one digit read confidently as something
else, matches no one).
Otherwise the page is left unassigned for review: never assigned to a wrong student on a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from htr.cells.data import CLASSES
from htr.cells.reader import restrict


@dataclass(frozen=True)
class IdMatch:
    student_id: str | None
    read: str  # digits read without the roster (argmax per cell)
    posterior: float
    digit_prob: float  # the lowest probability among the best ID's digits
    problem: str = ""


def match_id(digit_probs: np.ndarray, roster_ids: list[str], min_posterior: float = 0.99,
             min_digit_prob: float = 0.1) -> IdMatch:
    """``digit_probs``: (n_cells, len(CLASSES)) calibrated probabilities of the ID table's cells, over the
    classes a digit table allows (digits, empty, crossed; :func:`htr.cells.reader.restrict`)."""
    idx = [CLASSES.index(str(d)) for d in range(10)]
    p = np.clip(restrict(digit_probs, "0123456789")[:, idx], 1e-9, 1.0)
    read = "".join(str(int(i)) for i in p.argmax(1))
    logp = np.log(p)
    cands = [r for r in roster_ids if len(r) == len(p) and r.isdigit()]
    if not cands:
        return IdMatch(None, read, 0.0, 0.0, f"no roster ID has {len(p)} digits")
    scores = np.asarray([sum(logp[i, int(c)] for i, c in enumerate(r)) for r in cands])
    post = np.exp(scores - scores.max())
    post /= post.sum()
    best = int(np.argmax(scores))
    gm = float(min(p[i, int(c)] for i, c in enumerate(cands[best])))
    if post[best] < min_posterior:
        second = cands[int(np.argsort(scores)[-2])]
        return IdMatch(None, read, float(post[best]), gm, f"ambiguous: {cands[best]} or {second}")
    if gm < min_digit_prob:
        return IdMatch(None, read, float(post[best]), gm, f"read {read} matches no roster ID confidently")
    return IdMatch(cands[best], read, float(post[best]), gm)
