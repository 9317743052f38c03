"""A character language model of written words, for CTC beam search (shallow fusion).

:class:`WordCharLM` is a case-blind character n-gram model of the words of a language, estimated
from the word frequencies of the ``wordfreq`` package (which ships them: no download), with
Witten-Bell interpolation between orders. It scores letters and apostrophes given the word written so
far, and the end of a word (a space or punctuation after letters); digits and symbols get a fixed
probability and start a new word. Its context never crosses a word boundary, so it prefers spellings
that are words or word-like without preferring any topic, and names, numbers and formulas stay
readable.

:class:`LMScorer` binds a model to a recogniser's label ids for :func:`htr.ctc.prefix_beam_search`:
``weight * log P(char | word so far) + bonus`` per emitted character.

Written here: the maintained CTC decoders with language models (pyctcdecode, flashlight-text) need a
KenLM model file, which does not exist offline, or pin ``numpy<2``; the model is a counting table.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

from inkbase.errors import ConfigError, check_range

BOUNDARY = " "
LETTERS = frozenset("abcdefghijklmnopqrstuvwxyz'")
FLOOR = 1e-3


class WordCharLM:
    """P(next character | the word so far), from ``n_words`` frequent words of ``lang``.

    ``order`` counts the boundary: order 6 conditions on up to 5 previous characters of the word.
    ``other_logp`` is the log-probability of a character that is neither a letter, an apostrophe nor a
    space (digits, punctuation, symbols): a constant, since words do not predict them."""

    def __init__(self, lang: str = "en", n_words: int = 50000, order: int = 6, other_logp: float = math.log(0.02)):
        check_range("lm.order", order, 2, 12)
        check_range("lm.n_words", n_words, 10, 10**7)
        try:
            import wordfreq
        except ImportError:  # pragma: no cover - a declared dependency
            raise ConfigError("recognizer.lm", "needs the wordfreq package (pip install wordfreq)") from None
        words = [w for w in wordfreq.top_n_list(lang, n_words) if w and set(w) <= LETTERS]
        if not words:
            raise ConfigError("recognizer.lm", f"wordfreq has no words for language {lang!r}")
        self.order = order
        self.other_logp = other_logp
        # counts[h][c]: frequency-weighted count of c after the history h (h = boundary + the word's start)
        counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        freq = wordfreq.get_frequency_dict(lang)
        for w in words:
            weight = freq.get(w, 0.0) * 1e6  # occurrences per million words
            text = BOUNDARY + w + BOUNDARY
            for i in range(1, len(text)):
                for k in range(0, min(order - 1, i) + 1):
                    counts[text[i - k:i]][text[i]] += weight
        self._counts = {h: dict(cs) for h, cs in counts.items()}
        self._totals = {h: sum(cs.values()) for h, cs in self._counts.items()}
        self._alphabet = sorted(LETTERS | {BOUNDARY})

    @lru_cache(maxsize=1 << 18)  # noqa: B019 - one model per process; histories repeat across beams
    def prob(self, history: str, char: str) -> float:
        """Witten-Bell interpolated P(char | history), ``history`` already normalised (see :meth:`logp`)."""
        if not history:
            cs = self._counts[""]
            return (cs.get(char, 0.0) + 1.0) / (self._totals[""] + len(self._alphabet))
        lower = self.prob(history[1:], char)
        cs = self._counts.get(history)
        if not cs:
            return lower
        total, distinct = self._totals[history], len(cs)
        return (cs.get(char, 0.0) + distinct * lower) / (total + distinct)

    def history(self, text: str) -> str:
        """The model's context for the next character after ``text``: the boundary and the current word's
        last letters (lower case), at most ``order - 1`` characters."""
        word = []
        for ch in reversed(text):
            low = ch.lower()
            if low not in LETTERS:
                break
            word.append(low)
            if len(word) >= self.order - 1:
                return "".join(reversed(word))
        return (BOUNDARY + "".join(reversed(word)))[-(self.order - 1):]

    def logp(self, text: str, char: str) -> float:
        """log P(``char`` | ``text`` written before it). Upper and lower case score alike. A share
        ``FLOOR`` of the mass is spread evenly, so that a name or a term no word list has stays
        writable (a letter never costs more than about log(FLOOR / 28))."""
        low = char.lower()
        if low in LETTERS:
            return math.log(self._mix(self.prob(self.history(text), low)))
        if char == BOUNDARY or char in ".,;:!?)\"":
            h = self.history(text)
            if h == BOUNDARY:  # after a space, digit or symbol: not the end of a word
                return self.other_logp if char != BOUNDARY else math.log(0.05)
            return math.log(self._mix(self.prob(h, BOUNDARY)))
        return self.other_logp

    def _mix(self, p: float) -> float:
        return (1.0 - FLOOR) * p + FLOOR / len(self._alphabet)


@lru_cache(maxsize=4)
def english_lm(n_words: int = 50000, order: int = 6) -> WordCharLM:
    """The English model, built once per machine (a few seconds) and then read from the user cache."""
    import pickle
    from importlib.metadata import version

    from inkbase.jsonio import write_bytes

    path = cache_dir() / f"english-{n_words}-{order}-wordfreq{version('wordfreq')}.pkl"
    if path.is_file():
        try:
            with path.open("rb") as fh:
                return pickle.load(fh)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError):
            pass  # a damaged cache file is rebuilt below
    lm = WordCharLM("en", n_words, order)
    write_bytes(path, pickle.dumps(lm, protocol=pickle.HIGHEST_PROTOCOL))
    return lm


def cache_dir() -> Path:
    """Where built language models are kept: ``lm/`` in :func:`inkbase.runs.user_cache_dir`."""
    from inkbase.runs import user_cache_dir

    return user_cache_dir() / "lm"


class LMScorer:
    """``(prefix ids, next id) -> weight * log P + bonus`` for a recogniser whose label ``i`` is ``chars[i]``."""

    def __init__(self, lm: WordCharLM, chars: Sequence[str], weight: float, bonus: float):
        check_range("recognizer.lm_weight", weight, 0.0, 10.0)
        check_range("recognizer.lm_bonus", bonus, -20.0, 20.0)
        self.lm, self.chars, self.weight, self.bonus = lm, list(chars), weight, bonus
        self._span = lm.order + 1  # enough of the prefix to hold the model's context
        self._cache: dict[tuple[tuple[int, ...], int], float] = {}

    def __call__(self, prefix: tuple[int, ...], label: int) -> float:
        key = (prefix[-self._span:], label)
        score = self._cache.get(key)
        if score is None:
            text = "".join(self.chars[i] for i in key[0])
            char = self.chars[label]
            # The bonus offsets the model's cost per letter; a space earns none, or words would split.
            score = self.weight * self.lm.logp(text, char) + (self.bonus if char != BOUNDARY else 0.0)
            self._cache[key] = score
        return score


def build_scorer(name: str | None, chars: Sequence[str], weight: float, bonus: float) -> Callable | None:
    """The scorer ``recognizer.lm`` names (``english``), or None for ``none``/null."""
    if name in (None, "none"):
        return None
    if name != "english":
        raise ConfigError("recognizer.lm", f"{name!r} is not one of english, none")
    return LMScorer(english_lm(), chars, weight, bonus)
