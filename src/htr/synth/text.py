"""Text the project may render as synthetic handwriting for training recognisers.

Sources (``SOURCES``):

* ``"sample_exam"``: the bundled sample exam (``src/grading/sample_exam``): question texts, reference
  answers, concept labels and synonyms from ``rubric.json`` and the answers in ``answers.jsonl``.
* ``"semeval"``: SemEval-2013 Task 7, rows of the official *train* split only (student answers and
  reference answers), read from ``<data_dir>/semeval2013_task7_2way``. Its test splits are benchmarks.
* ``"python_docs"``: English prose sentences of the Python documentation's help topics, which ship with
  every Python (``pydoc_data.topics``): ordinary written sentences, unlike the short answers above.
* ``"generic"``: sentences built here from ``vocabulary.txt`` plus numbers, units, formulas, names,
  ids and punctuation, so that every printable ASCII character is seen.

Nothing else is read: Mohler, ASAP, nn_exam_hbrs and handwriting_lines are evaluation data.
All text is mapped to printable ASCII (``CHARSET``), the alphabet the renderer and recognisers share.
"""

from __future__ import annotations

import csv
import hashlib
import json
import string
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from inkbase.errors import ConfigError, InputError, check_range
from inkbase.jsonio import iter_jsonl_objects, read_json

CHARSET = "".join(chr(c) for c in range(0x20, 0x7F))
SOURCES = ("sample_exam", "semeval", "python_docs", "generic")
SEMEVAL_DIR = "semeval2013_task7_2way"
SAMPLE_EXAM_DIR = Path(__file__).resolve().parents[2] / "grading" / "sample_exam"

_ASCII_FIXES = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-",
                "\u2026": "...", "\u00d7": "x", "\u2212": "-", "\u00b0": " deg", "\u00b2": "^2", "\u00b3": "^3",
                "\u00a0": " "}

FIRST_NAMES = ("Ana", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kai", "Lena",
               "Mateo", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Wei", "Yusuf",
               "Zoe", "Aisha", "Bruno", "Carmen", "Dmitri", "Elif", "Felix", "Hana", "Ivan", "Julia", "Liam",
               "Maya", "Noah", "Olga", "Pedro", "Sofia")
LAST_NAMES = ("Smith", "Garcia", "Nguyen", "Kowalski", "Okafor", "Schmidt", "Rossi", "Tanaka", "Silva", "Murphy",
              "Haddad", "Novak", "Jensen", "Moreau", "Patel", "Kim", "Lopez", "Fischer", "Ahmed", "Brown",
              "Costa", "Ivanova", "Mensah", "Larsen", "Dubois", "Yilmaz", "Chen", "Walker", "Romero", "Becker")


def to_charset(text: str) -> str:
    """Map typographic characters to ASCII, drop what has no ASCII form, collapse whitespace."""
    text = "".join(_ASCII_FIXES.get(ch, ch) for ch in text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return " ".join("".join(ch if ch in CHARSET else " " for ch in text).split())


@lru_cache(maxsize=1)
def vocabulary() -> tuple[str, ...]:
    lines = (Path(__file__).with_name("vocabulary.txt").read_text(encoding="utf-8")).splitlines()
    return tuple(dict.fromkeys(w.strip() for w in lines if w.strip() and not w.startswith("#")))


def sample_exam_sentences(exam_dir: str | Path = SAMPLE_EXAM_DIR) -> list[str]:
    """Question texts, reference answers, concept phrases and answers of the bundled sample exam."""
    exam_dir = Path(exam_dir)
    texts: list[str] = []
    rubric_path = exam_dir / "rubric.json"
    if rubric_path.is_file():
        # Plain JSON reading: this layer does not depend on the rubric schema of ``grading``.
        for q in read_json(rubric_path).get("questions", []):
            texts += [q.get("text", ""), q.get("reference_answer", "")]
            for concept in q.get("concepts", []):
                texts += [concept.get("label", ""), *concept.get("synonyms", [])]
    answers_path = exam_dir / "answers.jsonl"
    if answers_path.is_file():
        texts += [obj.get("text", "") for _, obj in iter_jsonl_objects(answers_path)]
    return [t for t in (to_charset(t) for t in texts) if t]


def semeval_train_sentences(data_dir: str | Path) -> list[str]:
    """Student and reference answers of the SemEval-2013 Task 7 *train* split (both corpora)."""
    folder = Path(data_dir) / SEMEVAL_DIR
    answers, questions = folder / "student_answers.csv", folder / "questions_and_reference_answers.csv"
    texts: list[str] = []
    for row in _read_csv(answers, ("split", "student_answer")):
        if row["split"] == "train":
            texts.append(row["student_answer"])
    for i, row in enumerate(_read_csv(questions, ("split", "reference_answers_json")), start=2):
        if row["split"] != "train":
            continue
        try:
            refs = json.loads(row["reference_answers_json"])
        except json.JSONDecodeError:
            raise InputError(questions, f"line {i}: reference_answers_json", "invalid JSON") from None
        texts += [r["text"] for r in refs if isinstance(r, dict) and r.get("text")]
    return [t for t in dict.fromkeys(to_charset(t) for t in texts) if t]


@lru_cache(maxsize=1)
def python_docs_sentences() -> tuple[str, ...]:
    """Prose sentences of ``pydoc_data.topics`` (30-160 characters; lines of code and tables left out)."""
    import re
    from pydoc_data.topics import topics

    text = re.sub(r"\s+", " ", " ".join(topics.values()))
    sentences = (s.strip() for s in re.split(r"(?<=[.!?])\s+", text))
    # Code, grammar rules and tables carry these characters; prose rarely does.
    prose = (s for s in sentences if 30 <= len(s) <= 160 and not re.search(r"[*`=>{}|\\]|::|\.\.\.|\s{2}", s))
    return tuple(dict.fromkeys(to_charset(s) for s in prose))


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise InputError(path, "(file)", "not found")
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(path, "(header)", f"missing column(s) {', '.join(missing)}")
        return list(reader)


def generic_sentence(rng: np.random.Generator) -> str:
    """One made-up sentence-like string: words, numbers, units, formulas, names or ids."""
    kind = rng.choice(("words", "words", "words", "numbers", "formula", "identity", "list", "symbols"))
    if kind == "words":
        return _word_sentence(rng)
    if kind == "numbers":
        return _number_phrase(rng)
    if kind == "formula":
        return _formula(rng)
    if kind == "identity":
        return _identity(rng)
    if kind == "list":
        label = rng.choice(("1.", "2)", "(a)", "(b)", "-", "*", "i)", "Step 3:", "Q4"))
        return f"{label} {_word_sentence(rng)}"
    return _symbols(rng)


def _word_sentence(rng: np.random.Generator) -> str:
    vocab = vocabulary()
    words = [str(vocab[i]) for i in rng.integers(0, len(vocab), size=int(rng.integers(2, 15)))]
    for i in range(1, len(words) - 1):
        if rng.random() < 0.08:
            words[i] += str(rng.choice((",", ",", ";", ":")))
        elif rng.random() < 0.05:
            words[i] = _number(rng)
        elif rng.random() < 0.04:
            words[i] = words[i].capitalize()
    if rng.random() < 0.05:
        words = [w.upper() for w in words]
    elif rng.random() < 0.85:
        words[0] = words[0].capitalize()
    if rng.random() < 0.06:
        i = int(rng.integers(0, len(words)))
        words[i] = f"({words[i]})" if rng.random() < 0.7 else f'"{words[i]}"'
    end = str(rng.choice((".", ".", ".", "?", "!", "", "...")))
    return " ".join(words) + end


def _number(rng: np.random.Generator) -> str:
    form = int(rng.integers(0, 6))
    if form == 0:
        return str(int(rng.integers(0, 100)))
    if form == 1:
        return str(int(rng.integers(100, 100000)))
    if form == 2:
        return f"{rng.uniform(0, 100):.{int(rng.integers(1, 4))}f}"
    if form == 3:
        return f"{int(rng.integers(1, 100))}%"
    if form == 4:
        return f"-{rng.uniform(0, 50):.1f}"
    return f"{int(rng.integers(1, 13))}/{int(rng.integers(2, 13))}"


def _number_phrase(rng: np.random.Generator) -> str:
    unit = str(rng.choice(("kg", "m", "cm", "mm", "m/s", "m/s^2", "N", "J", "W", "V", "A", "ohm", "s", "km/h",
                           "g", "mol", "L", "mL", "Hz", "C", "K", "kB", "ms", "%")))
    vocab = vocabulary()
    noun = str(vocab[int(rng.integers(0, len(vocab)))])
    forms = (f"{noun} = {_number(rng)} {unit}", f"about {_number(rng)} {unit}", f"{_number(rng)} {unit} per {noun}",
             f"${rng.uniform(0, 500):.2f}", f"{int(rng.integers(0, 24)):02d}:{int(rng.integers(0, 60)):02d}",
             f"{int(rng.integers(1, 29))}/{int(rng.integers(1, 13))}/{int(rng.integers(1990, 2031))}",
             f"{_number(rng)} x {_number(rng)} = {_number(rng)}", f"#{int(rng.integers(1, 500))}")
    return str(forms[int(rng.integers(0, len(forms)))])


def _formula(rng: np.random.Generator) -> str:
    a, b, c = (str(x) for x in rng.choice(list(string.ascii_letters), size=3))
    forms = (f"{a} = {b} * {c}", f"{a} = {b}/{c}", f"{a}^2 + {b}^2 = {c}^2", "F = m * a", "W = mg",
             "E = mc^2", "V = I * R", f"P = {a} / t", f"f({a}) = {int(rng.integers(1, 10))}{a} + {int(rng.integers(0, 10))}",
             f"[{a}, {b}, {c}]", f"{{{a}: {int(rng.integers(0, 10))}}}", f"{a} <= {b} < {c}", f"{a} >= {b}",
             f"{a} != {b}", f"{a}_{int(rng.integers(0, 10))} = {b} | {c}", f"~{a} & {b}", f"{a}[i] = {a}[i-1] + 1",
             f"if ({a} > 0) return {b};", f"C:\\{a}\\{b}", f"@{a}{b}{c}", f"`{a}` + '{b}'")
    return str(forms[int(rng.integers(0, len(forms)))])


def _identity(rng: np.random.Generator) -> str:
    first, last = str(rng.choice(FIRST_NAMES)), str(rng.choice(LAST_NAMES))
    forms = (f"{first} {last}", f"{last}, {first}", f"{first[0]}. {last}", f"ID {int(rng.integers(10**6, 10**8))}",
             f"{int(rng.integers(10**6, 10**8))}", f"Class {rng.choice(list('ABCDEF'))}{int(rng.integers(1, 13))}",
             f"{rng.choice(('CS', 'BIO', 'PHY', 'CHEM', 'MATH'))}-{int(rng.integers(100, 500))}",
             f"Name: {first} {last}")
    return str(forms[int(rng.integers(0, len(forms)))])


def _symbols(rng: np.random.Generator) -> str:
    # Rare characters get their own lines so that every glyph of CHARSET is seen in training.
    vocab = vocabulary()
    pieces = []
    for _ in range(int(rng.integers(2, 7))):
        r = rng.random()
        if r < 0.4:
            pieces.append(str(vocab[int(rng.integers(0, len(vocab)))]))
        elif r < 0.7:
            pieces.append(_number(rng))
        else:
            pieces.append("".join(rng.choice(list(string.punctuation), size=int(rng.integers(1, 3)))))
    return " ".join(pieces)


def chop(sentence: str, max_chars: int, rng: np.random.Generator, min_chars: int = 1) -> list[str]:
    """Split a sentence at spaces into chunks of at most ``max_chars`` characters, each filled to a
    random target length in ``[min_chars, max_chars]``; a word longer than a line is cut."""
    chunks: list[str] = []
    current = ""
    target = int(rng.integers(min_chars, max_chars + 1))
    for word in sentence.split():
        for piece in (word[i:i + max_chars] for i in range(0, len(word), max_chars)):
            if not current:
                current = piece
            elif len(current) + 1 + len(piece) <= target:
                current = f"{current} {piece}"
            else:
                chunks.append(current)
                current = piece
                target = int(rng.integers(min_chars, max_chars + 1))
    if current:
        chunks.append(current)
    return [c for c in chunks if c.strip()]


def load_sources(sources: Sequence[str] | Mapping[str, float], data_dir: str | Path | None = None,
                 sample_exam_dir: str | Path = SAMPLE_EXAM_DIR) -> dict[str, list[str] | None]:
    """Sentences per named source (``None`` for ``"generic"``, which is generated on the fly)."""
    names = list(sources)
    unknown = [s for s in names if s not in SOURCES]
    if unknown or not names:
        raise ConfigError("text.sources", f"{unknown or names} not in {', '.join(SOURCES)}")
    loaded: dict[str, list[str] | None] = {}
    for name in names:
        if name == "generic":
            loaded[name] = None
        elif name == "sample_exam":
            loaded[name] = sample_exam_sentences(sample_exam_dir)
        elif name == "python_docs":
            loaded[name] = list(python_docs_sentences())
        else:
            if data_dir is None:
                raise ConfigError("text.data_dir", "the 'semeval' source needs the external data directory")
            loaded[name] = semeval_train_sentences(data_dir)
    return loaded


def text_split(sentence: str, val_fraction: float) -> str:
    """"val" or "train" for a sentence, fixed by a hash of its text (the same on every machine and run)."""
    digest = hashlib.blake2b(sentence.encode("utf-8"), digest_size=8).digest()
    return "val" if int.from_bytes(digest, "big") / 2**64 < val_fraction else "train"


def line_texts(max_chars: int, rng: np.random.Generator,
               sources: Sequence[str] | Mapping[str, float] = ("sample_exam", "generic"),
               data_dir: str | Path | None = None, min_chars: int | None = None,
               sample_exam_dir: str | Path = SAMPLE_EXAM_DIR, split: str | None = None,
               val_fraction: float = 0.05) -> Iterator[str]:
    """Endless stream of line-length texts (at most ``max_chars`` characters, printable ASCII).

    ``sources`` names the sources (equal weights) or maps them to sampling weights. A sentence is drawn
    from a source, chopped into lines with :func:`chop`, and all its lines are yielded in order.
    A source that yields no text (e.g. the sample exam is absent) is skipped. With ``split`` ("train" or
    "val") only sentences of that side of :func:`text_split` are used, so the two never share a sentence.
    """
    if split not in (None, "train", "val"):
        raise ConfigError("text.split", f"{split!r} is not 'train' or 'val'")
    check_range("text.val_fraction", val_fraction, 0.0, 1.0)
    if (split == "val" and val_fraction == 0) or (split == "train" and val_fraction == 1):
        raise ConfigError("text.val_fraction", f"{val_fraction} leaves no text for the {split} split")
    if max_chars < 1:
        raise ConfigError("text.max_chars", f"{max_chars} must be >= 1")
    min_chars = max(1, max_chars // 4) if min_chars is None else min_chars
    if not 1 <= min_chars <= max_chars:
        raise ConfigError("text.min_chars", f"{min_chars} is outside [1, {max_chars}]")
    loaded = load_sources(sources, data_dir, sample_exam_dir)
    if split is not None:
        loaded = {n: None if pool is None else [t for t in pool if text_split(t, val_fraction) == split]
                  for n, pool in loaded.items()}
    weights = dict(sources) if isinstance(sources, Mapping) else {s: 1.0 for s in sources}
    names = [n for n in loaded if loaded[n] is None or loaded[n]]
    if not names:
        raise ConfigError("text.sources", f"no text found in {', '.join(loaded)}")
    p = np.array([float(weights[n]) for n in names])
    if (p < 0).any() or p.sum() <= 0:
        raise ConfigError("text.sources", "weights must be >= 0 and not all 0")
    p = p / p.sum()
    while True:
        name = names[int(rng.choice(len(names), p=p))]
        pool = loaded[name]
        if pool is None:
            sentence = generic_sentence(rng)
            while split is not None and text_split(sentence, val_fraction) != split:
                sentence = generic_sentence(rng)
        else:
            sentence = pool[int(rng.integers(0, len(pool)))]
        yield from chop(sentence, max_chars, rng, min_chars)
