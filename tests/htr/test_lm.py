"""The word-character language model and its fusion into CTC beam search."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from htr.ctc import prefix_beam_search
from htr.lm import FLOOR, LMScorer, WordCharLM, build_scorer
from inkbase.errors import ConfigError


@pytest.fixture(scope="module")
def lm():
    return WordCharLM("en", n_words=3000, order=6)  # small: built in well under a second


def test_spelling_of_words_is_preferred_and_case_does_not_matter(lm):
    assert lm.logp("the numb", "e") > math.log(0.5)  # "number"
    assert lm.logp("the numb", "e") - lm.logp("the numb", "x") > 5
    assert lm.logp("THE NUMB", "E") == pytest.approx(lm.logp("the numb", "e"))
    assert lm.logp("labou", "r") > lm.logp("labou", "w")
    # ending a word: likely after a whole word, unlikely in the middle of one
    assert lm.logp("the house", " ") > lm.logp("the hous", " ") + 3


def test_context_is_the_current_word_and_every_letter_stays_writable(lm):
    assert lm.history("in 1999 the numb") == " numb"
    assert lm.history("x = 5, abc") == " abc"
    assert lm.history("internationalisation") == "ation"  # order 6: five letters of context
    floor = math.log(FLOOR / 28)
    for text, ch in [("qzx", "j"), ("", "q"), ("Gaitsk", "e")]:
        assert lm.logp(text, ch) >= floor - 1e-9
    # digits and symbols do not depend on the word before them
    assert lm.logp("house", "7") == lm.logp("q", "7") == lm.other_logp


def test_scorer_adds_the_bonus_to_letters_but_not_to_spaces(lm):
    chars = ["", " ", "a", "b", "c"]
    scorer = LMScorer(lm, chars, weight=0.5, bonus=2.0)
    assert scorer((2,), 4) == pytest.approx(0.5 * lm.logp("a", "c") + 2.0)
    assert scorer((2,), 1) == pytest.approx(0.5 * lm.logp("a", " "))
    assert build_scorer("none", chars, 0.5, 2.0) is None
    with pytest.raises(ConfigError, match="recognizer.lm"):
        build_scorer("klingon", chars, 0.5, 2.0)


def _frames(chars: list[str], columns: list[dict[str, float]]) -> np.ndarray:
    """Log-probabilities of a line, one column per dict (character -> probability, the rest blank)."""
    out = np.full((len(columns), len(chars)), 1e-6)
    for t, col in enumerate(columns):
        for ch, p in col.items():
            out[t, chars.index(ch)] = p
        out[t, 0] = max(1e-6, 1.0 - sum(col.values()))
    return np.log(out / out.sum(1, keepdims=True))


def test_language_model_turns_a_close_misreading_into_the_word(lm):
    chars = ["", " ", "e", "h", "r", "t", "w"]
    # "thw" by a small margin at the last letter: the model alone keeps the misreading
    lp = _frames(chars, [{"t": 0.9}, {}, {"h": 0.9}, {}, {"w": 0.5, "e": 0.4}, {}])
    alone = prefix_beam_search(lp, 5, blank=0)
    fused = prefix_beam_search(lp, 5, blank=0, lm=LMScorer(lm, chars, weight=0.5, bonus=0.0))
    assert "".join(chars[i] for i in alone) == "thw"
    assert "".join(chars[i] for i in fused) == "the"


def test_clear_readings_are_kept(lm):
    chars = ["", " ", "e", "h", "r", "t", "w"]
    lp = _frames(chars, [{"t": 0.95}, {}, {"h": 0.95}, {}, {"w": 0.95}, {}])
    fused = prefix_beam_search(lp, 5, blank=0, lm=LMScorer(lm, chars, weight=0.3, bonus=2.5))
    assert "".join(chars[i] for i in fused) == "thw"


def test_ctc_batches_hold_lines_of_similar_length():
    from htr.recognize import ModelRecognizer

    rec = ModelRecognizer.__new__(ModelRecognizer)  # only the batching policy, no model loaded
    rec.batch_size, rec.max_pad_ratio = 3, 1.1

    class Bundle:
        is_ctc = True

    rec.bundle = Bundle()
    images = [Image.new("L", (w, 40)) for w in (400, 100, 105, 420, 108, 800, 109)]
    assert rec.batches(images) == [[1, 2, 4], [6], [0, 3], [5]]
    rec.max_pad_ratio = 1.0
    assert all(len(b) == 1 for b in rec.batches(images))
    rec.bundle.is_ctc = False
    assert rec.batches(images) == [[0, 1, 2], [3, 4, 5], [6]]
