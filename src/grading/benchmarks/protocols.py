"""Train/test splits of a benchmark (scikit-learn splitters).

- ``unseen_answers``: k-fold CV stratified by question, so every question has answers in every
  training fold and the test answers are new answers to known questions.
- ``unseen_questions``: one fold per group (Mohler: assignment), so no test question, and no question
  of the same assignment, is seen in training.
- ``official``: SemEval's own train split against each test split present (UA, UQ, UD).
- ``zero_shot``: everything is test data (evaluation-only sets such as ASAP).
- ``few_shot``: per question, ``k`` answers drawn at random (seed) are the graded examples an instructor
  provides (they calibrate the score map and the hybrid weight; nothing is trained on them); the other
  answers are the test data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import LeaveOneGroupOut, StratifiedKFold

from inkbase.errors import ConfigError

PROTOCOLS = ("unseen_answers", "unseen_questions", "official", "zero_shot", "few_shot")
# Protocols where graded answers to the same question may be used at prediction time.
USES_EXAMPLES = {"unseen_answers", "UA"}


@dataclass
class Fold:
    protocol: str  # for ``official``: the test split's name (UA, UQ, UD)
    index: int
    train: np.ndarray
    test: np.ndarray


def folds(answers: pd.DataFrame, protocol: str, n_folds: int, seed: int, k: int = 10) -> Iterator[Fold]:
    """Positional train/test indices into ``answers`` (``k``: examples per question under ``few_shot``)."""
    if protocol == "unseen_answers":
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        for i, (tr, te) in enumerate(splitter.split(answers, answers["question_id"])):
            yield Fold(protocol, i, tr, te)
    elif protocol == "unseen_questions":
        for i, (tr, te) in enumerate(LeaveOneGroupOut().split(answers, groups=answers["group"])):
            yield Fold(protocol, i, tr, te)
    elif protocol == "official":
        train = np.flatnonzero(answers["split"].to_numpy() == "train")
        for i, split in enumerate(s for s in ("UA", "UQ", "UD") if (answers["split"] == s).any()):
            yield Fold(split, i, train, np.flatnonzero(answers["split"].to_numpy() == split))
    elif protocol == "zero_shot":
        yield Fold(protocol, 0, np.zeros(0, dtype=int), np.arange(len(answers)))
    elif protocol == "few_shot":
        rng = np.random.default_rng(seed)
        is_example = np.zeros(len(answers), dtype=bool)
        for rows in answers.groupby("question_id", sort=True).indices.values():
            is_example[rng.choice(rows, size=min(k, len(rows) - 1), replace=False)] = True
        yield Fold(protocol, 0, np.flatnonzero(is_example), np.flatnonzero(~is_example))
    else:
        raise ConfigError("benchmark.protocols", f"{protocol!r} is not one of {PROTOCOLS}")
