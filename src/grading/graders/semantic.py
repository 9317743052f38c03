"""An offline stand-in for the LLM grader: a linear model on MiniLM features of reference and answer.

Features (all-MiniLM-L6-v2 via the shared cached :class:`Embedder`; u = reference, v = answer):
cosine to the reference (first and best of several), to the question, u*v and |u-v| (the
sentence-BERT pair features), answer length, and content-word overlap with the reference and the
question. With ``use_examples`` the scorer also reads graded answers to the *same* question
(the unseen-answers setting): the score of the nearest graded answer, a similarity-weighted mean of
the nearest ones, and the question's mean score.

Feature version ``semantic-v2`` adds two sentence-alignment features (answer and references cut into
sentences): ``align_ref``, how much of a reference the answer covers (the mean over the reference's
sentences of their best cosine with an answer sentence, best reference), and ``align_answer``, how much of
the answer is on a reference (the mean over the answer's sentences of their best cosine with any reference
sentence). A model may also leave out the u*v and |u-v| features (``products``); a model file records both.

The model is the mean of two scikit-learn models on standardised features: a ridge regression
(continuous gold) or logistic regression (correct / incorrect gold) on all features, and a small MLP
(one hidden layer of 32 ReLUs) on the scalar features only. On Mohler (unseen answers, 5-fold CV)
the pair scored r = 0.763, the linear model alone 0.744, the MLP alone 0.747, gradient boosting 0.731.
Both parts are stored as plain JSON (scaler, weights), so a shipped model is small, readable and
needs no pickle. ``s_semantic`` = prediction clipped to [0, 1].
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from grading.embed import Embedder, get_embedder
from grading.graders.base import Grader, GradeResult
from grading.rubric import Answer, Question
from grading.scoring import to_points
from inkbase.errors import ConfigError, InputError

FEATURE_VERSION = "semantic-v1"  # what the shipped scorer reads; a model file names its own version
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
_TOKEN = re.compile(r"[a-z0-9]+")
SCALAR_FEATURES = ["cos_ref", "cos_ref_max", "cos_question", "log_len", "log_len_ratio", "ref_recall",
                   "answer_precision", "question_overlap", "empty"]
ALIGN_FEATURES = ["align_ref", "align_answer"]
SCALARS_BY_VERSION = {"semantic-v1": SCALAR_FEATURES, "semantic-v2": SCALAR_FEATURES + ALIGN_FEATURES}
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+")
EXAMPLE_FEATURES = ["ex_nn_score", "ex_nn_sim", "ex_topk_score", "ex_soft_score", "ex_mean_score", "ex_count"]
TOP_K = 5
SOFTMAX_T = 0.05


def content_tokens(text: str) -> set[str]:
    return {t for t in _TOKEN.findall(text.lower()) if t not in ENGLISH_STOP_WORDS}


@dataclass
class Item:
    """One answer to score: its question text, the reference answer(s) and the answer."""

    question: str
    references: list[str]
    answer: str
    question_id: str = ""
    answer_id: str = ""


@dataclass
class Examples:
    """Graded answers to one question (``fractions`` in [0, 1]) that the scorer may compare with."""

    answer_ids: list[str]
    texts: list[str]
    fractions: np.ndarray


def scalar_names(version: str = FEATURE_VERSION) -> list[str]:
    if version not in SCALARS_BY_VERSION:
        raise ConfigError("feature_version", f"{version!r} is not one of {sorted(SCALARS_BY_VERSION)}")
    return SCALARS_BY_VERSION[version]


def feature_names(dim: int, use_examples: bool, version: str = FEATURE_VERSION) -> list[str]:
    names = scalar_names(version) + (EXAMPLE_FEATURES if use_examples else [])
    return names + [f"prod_{i}" for i in range(dim)] + [f"absdiff_{i}" for i in range(dim)]


def feature_columns(x: np.ndarray, have: str, want: str, products: bool) -> np.ndarray:
    """The columns of a reference-only feature matrix of version ``have`` (with the products) that version
    ``want`` has (each version's scalars start with the earlier one's), with or without the products."""
    wide, narrow = len(scalar_names(have)), len(scalar_names(want))
    return np.hstack([x[:, :narrow]] + ([x[:, wide:]] if products else []))


def sentences(text: str) -> list[str]:
    """``text`` cut after . ! ? ; and at line breaks, pieces without a word dropped (the whole text if none
    is left). A regular expression, not spaCy: the scorer needs no parser, and a cut is only an alignment unit."""
    parts = [p.strip() for p in _SENTENCE_END.split(text) if _TOKEN.search(p.lower())]
    return parts or [text]


def _alignment(vec: dict[str, np.ndarray], answer: str, references: Sequence[str]) -> list[float]:
    a = np.stack([vec[t] for t in sentences(answer)])
    refs = [np.stack([vec[t] for t in sentences(r)]) for r in references]
    cover = max(float((r @ a.T).max(axis=1).mean()) for r in refs)
    on_ref = float((a @ np.concatenate(refs).T).max(axis=1).mean())
    return [cover, on_ref]


def pair_features(embedder: Embedder, items: Sequence[Item], examples: dict[str, Examples] | None = None,
                  use_examples: bool = False, version: str = FEATURE_VERSION, products: bool = True) -> np.ndarray:
    """The feature matrix (n, d) of feature ``version``, with or without the embedding ``products``. An item
    never sees itself among the examples (same ``answer_id``)."""
    align = "align_ref" in scalar_names(version)
    texts = [t for it in items for t in (it.question, it.answer, *it.references)]
    if align:
        texts += [s for it in items for t in (it.answer, *it.references) for s in sentences(t)]
    texts = list(dict.fromkeys(texts))
    vec = dict(zip(texts, embedder.encode(texts), strict=True))
    rows = []
    ex_vecs = {}
    if use_examples:
        for qid, ex in (examples or {}).items():
            ex_vecs[qid] = embedder.encode(ex.texts) if ex.texts else np.zeros((0, embedder.dim), np.float32)
    for it in items:
        v = vec[it.answer]
        refs = [vec[r] for r in it.references]
        u = refs[0]
        ans_tok, q_tok = content_tokens(it.answer), content_tokens(it.question)
        recall = max((len(ans_tok & content_tokens(r)) / max(len(content_tokens(r)), 1) for r in it.references),
                     default=0.0)
        n_ans, n_ref = len(_TOKEN.findall(it.answer.lower())), len(_TOKEN.findall(it.references[0].lower()))
        scalars = [float(u @ v), max(float(r @ v) for r in refs), float(vec[it.question] @ v),
                   np.log1p(n_ans), np.log((n_ans + 1) / (n_ref + 1)), recall,
                   len(ans_tok & set().union(*map(content_tokens, it.references))) / max(len(ans_tok), 1),
                   len(ans_tok & q_tok) / max(len(ans_tok), 1), float(not it.answer.strip())]
        if align:
            scalars += _alignment(vec, it.answer, it.references)
        if use_examples:
            scalars += _example_features(v, it, (examples or {}).get(it.question_id), ex_vecs.get(it.question_id))
        parts = [np.asarray(scalars, dtype=np.float32)] + ([u * v, np.abs(u - v)] if products else [])
        rows.append(np.concatenate(parts))
    width = len(feature_names(embedder.dim if products else 0, use_examples, version))
    return np.stack(rows) if rows else np.zeros((0, width), np.float32)


def _example_features(v: np.ndarray, item: Item, ex: Examples | None, ex_vec: np.ndarray | None) -> list[float]:
    if ex is not None and len(ex.texts):
        keep = np.array([aid != item.answer_id for aid in ex.answer_ids])
        sims, scores = (ex_vec @ v)[keep], ex.fractions[keep]
    else:
        sims = scores = np.zeros(0)
    if sims.size == 0:
        return [0.5, 0.0, 0.5, 0.5, 0.5, 0.0]
    order = np.argsort(-sims)
    top = order[:TOP_K]
    w_top = np.clip(sims[top], 1e-6, None)
    soft = np.exp((sims - sims.max()) / SOFTMAX_T)
    return [float(scores[order[0]]), float(sims[order[0]]), float(w_top @ scores[top] / w_top.sum()),
            float(soft @ scores / soft.sum()), float(scores.mean()), float(np.log1p(sims.size))]


@dataclass
class SemanticModel:
    """Standardised features -> mean of a linear model (all features) and an MLP (scalar features)."""

    kind: str  # "regression" (ridge + MLP regressor) or "classification" (logistic + MLP classifier)
    use_examples: bool
    feature_names: list[str]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    mlp_weights: list[np.ndarray]
    mlp_biases: list[np.ndarray]
    embedder_model: str
    card: dict[str, Any]
    feature_version: str = FEATURE_VERSION
    # Standardised features are clipped to [clip_low, clip_high] (the range seen in training) when set, so that
    # an input unlike any training answer (e.g. a very long one) is not scored by extrapolation.
    clip_low: np.ndarray | None = None
    clip_high: np.ndarray | None = None

    def clipped_to(self, features: np.ndarray) -> SemanticModel:
        """This model with its features clipped to the range they take on ``features`` (its training data)."""
        x = (np.asarray(features, np.float64) - self.mean) / self.scale
        return replace(self, clip_low=x.min(axis=0), clip_high=x.max(axis=0))

    @property
    def n_scalar(self) -> int:
        return len(scalar_names(self.feature_version)) + (len(EXAMPLE_FEATURES) if self.use_examples else 0)

    @property
    def products(self) -> bool:
        return len(self.feature_names) > self.n_scalar

    def features(self, embedder: Embedder, items: Sequence[Item], examples: dict[str, Examples] | None = None
                 ) -> np.ndarray:
        """The feature matrix this model reads (its version, with or without the products)."""
        return pair_features(embedder, items, examples, self.use_examples, self.feature_version, self.products)

    def score(self, embedder: Embedder, items: Sequence[Item], examples: dict[str, Examples] | None = None
              ) -> np.ndarray:
        return self.predict(self.features(embedder, items, examples))

    def predict(self, features: np.ndarray) -> np.ndarray:
        x = (np.asarray(features, np.float64) - self.mean) / self.scale
        if self.clip_low is not None:
            x = np.clip(x, self.clip_low, self.clip_high)
        linear = x @ self.coef + self.intercept
        h = x[:, :self.n_scalar]
        for w, b in zip(self.mlp_weights[:-1], self.mlp_biases[:-1], strict=True):
            h = np.maximum(h @ w + b, 0.0)
        mlp = (h @ self.mlp_weights[-1] + self.mlp_biases[-1])[:, 0]
        if self.kind == "classification":
            linear, mlp = _sigmoid(linear), _sigmoid(mlp)
        return np.clip((linear + mlp) / 2, 0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"feature_version": self.feature_version, "kind": self.kind, "use_examples": self.use_examples,
                "embedder_model": self.embedder_model, "card": self.card, "intercept": self.intercept,
                "feature_names": self.feature_names, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "coef": self.coef.tolist(), "mlp_weights": [w.tolist() for w in self.mlp_weights],
                "mlp_biases": [b.tolist() for b in self.mlp_biases],
                **({} if self.clip_low is None else {"clip_low": self.clip_low.tolist(),
                                                     "clip_high": self.clip_high.tolist()})}

    def save(self, path: str | Path) -> None:
        _write(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> SemanticModel:
        """One model file (an ensemble file is read by :func:`load_scorer`)."""
        path, data = _read(path)
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path, where: str = "") -> SemanticModel:
        if ("clip_low" in data) != ("clip_high" in data):
            raise InputError(path, f"{where}clip_high", "clip_low and clip_high come together")
        if data.get("feature_version") not in SCALARS_BY_VERSION:
            raise InputError(path, f"{where}feature_version", f"{data.get('feature_version')!r}, but this code "
                                                              f"reads {sorted(SCALARS_BY_VERSION)}; retrain the model")
        try:
            return cls(kind=data["kind"], use_examples=bool(data["use_examples"]),
                       feature_names=list(data["feature_names"]), mean=np.asarray(data["mean"], np.float64),
                       scale=np.asarray(data["scale"], np.float64), coef=np.asarray(data["coef"], np.float64),
                       intercept=float(data["intercept"]),
                       mlp_weights=[np.asarray(w, np.float64) for w in data["mlp_weights"]],
                       mlp_biases=[np.asarray(b, np.float64) for b in data["mlp_biases"]],
                       embedder_model=data["embedder_model"], card=data.get("card", {}),
                       feature_version=data["feature_version"],
                       **{k: np.asarray(data[k], np.float64) for k in ("clip_low", "clip_high") if k in data})
        except (KeyError, ValueError, TypeError) as err:
            raise InputError(path, where or "(file)", f"not a semantic model file ({err})") from None


@dataclass
class SemanticEnsemble:
    """The mean of several reference-only scorers' scores (a model file with ``"kind": "ensemble"`` and the
    members inline). The features are computed once, at the newest version a member reads and with the
    products if a member reads them, and each member gets its own columns of that matrix."""

    members: list[SemanticModel]
    card: dict[str, Any]
    use_examples = False

    def __post_init__(self):
        if not self.members or any(m.use_examples for m in self.members):
            raise ConfigError("grader.model_path", "an ensemble needs reference-only members")
        if len({m.embedder_model for m in self.members}) > 1:
            raise ConfigError("grader.model_path", "the ensemble's members were trained on different features")

    @property
    def embedder_model(self) -> str:
        return self.members[0].embedder_model

    def score(self, embedder: Embedder, items: Sequence[Item], examples: dict[str, Examples] | None = None
              ) -> np.ndarray:
        version = max((m.feature_version for m in self.members), key=list(SCALARS_BY_VERSION).index)
        x = pair_features(embedder, items, version=version, products=any(m.products for m in self.members))
        return np.mean([m.predict(feature_columns(x, version, m.feature_version, m.products)) for m in self.members],
                       axis=0)

    def save(self, path: str | Path) -> None:
        _write(path, {"kind": "ensemble", "card": self.card, "members": [m.to_dict() for m in self.members]})


def load_scorer(path: str | Path) -> SemanticModel | SemanticEnsemble:
    """A model file: one :class:`SemanticModel` or a :class:`SemanticEnsemble`. A relative path that does not
    exist is looked up in the shipped weights folder."""
    path, data = _read(path)
    if data.get("kind") != "ensemble":
        return SemanticModel.from_dict(data, path)
    members = data.get("members")
    if not isinstance(members, list):
        raise InputError(path, "members", "an ensemble file needs a list of member models")
    return SemanticEnsemble([SemanticModel.from_dict(m, path, f"members[{i}].") for i, m in enumerate(members)],
                            card=data.get("card", {}))


def _read(path: str | Path) -> tuple[Path, dict[str, Any]]:
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = WEIGHTS_DIR / path
    if not path.is_file():
        raise ConfigError("grader.model_path", f"{path} not found (train one with scripts/train_semantic.py)")
    try:
        return path, json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise InputError(path, "(file)", f"not JSON ({err})") from None


def _write(path: str | Path, data: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data) + "\n", encoding="utf-8")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def fit_semantic(features: np.ndarray, targets: np.ndarray, use_examples: bool, embedder_model: str,
                 card: dict[str, Any] | None = None, alphas: Sequence[float] = (1.0, 10.0, 100.0, 1000.0, 10000.0),
                 hidden: int = 32, seed: int = 0, version: str = FEATURE_VERSION) -> SemanticModel:
    """Fit scaler, linear model and MLP on training data only. Targets in [0, 1]; 0/1 targets make a
    classifier. The linear model's regularisation is picked by internal cross-validation; the MLP
    stops early on a 10% validation slice of the same training data. ``features`` are
    :func:`pair_features` of ``version``, with or without the products (the model keeps what it got)."""
    from sklearn.linear_model import LogisticRegressionCV, RidgeCV
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.preprocessing import StandardScaler

    targets = np.asarray(targets, dtype=float)
    scaler = StandardScaler().fit(features)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    x = (features - scaler.mean_) / scale
    n_scalar = len(scalar_names(version)) + (len(EXAMPLE_FEATURES) if use_examples else 0)
    mlp_args = {"hidden_layer_sizes": (hidden,), "alpha": 1.0, "max_iter": 500, "early_stopping": True,
                "random_state": seed}
    if set(np.unique(targets)) <= {0.0, 1.0}:
        lin = LogisticRegressionCV(Cs=[1.0 / a for a in alphas], cv=3, max_iter=2000, random_state=seed)
        lin.fit(x, targets.astype(int))
        kind, coef, intercept = "classification", lin.coef_[0], float(lin.intercept_[0])
        mlp = MLPClassifier(**mlp_args).fit(x[:, :n_scalar], targets.astype(int))
    else:
        lin = RidgeCV(alphas=list(alphas)).fit(x, targets)
        kind, coef, intercept = "regression", lin.coef_, float(lin.intercept_)
        mlp = MLPRegressor(**mlp_args).fit(x[:, :n_scalar], targets)
    dim = (features.shape[1] - n_scalar) // 2
    return SemanticModel(kind=kind, use_examples=use_examples, feature_names=feature_names(dim, use_examples, version),
                         mean=scaler.mean_, scale=scale, coef=np.asarray(coef, np.float64), intercept=intercept,
                         mlp_weights=[np.asarray(w, np.float64) for w in mlp.coefs_],
                         mlp_biases=[np.asarray(b, np.float64) for b in mlp.intercepts_],
                         embedder_model=embedder_model, card=dict(card or {}), feature_version=version)


class SemanticGrader(Grader):
    """Scores answers with a :class:`SemanticModel` (by default the shipped one in ``grading/weights``).

    ``examples`` (question id -> graded answers) is used only by a model trained with ``use_examples``."""

    def __init__(self, embedder: Embedder, model_path: str | None = None, name: str = "semantic",
                 model: SemanticModel | SemanticEnsemble | None = None, examples: dict[str, Examples] | None = None):
        self.model = model or load_scorer(model_path)
        if self.model.embedder_model == f"{embedder.model_name}#static" != embedder.feature_space:
            # A scorer trained on the model's static vectors reads them itself: they cost no network pass.
            embedder = get_embedder(embedder.model_name, batch_size=embedder.batch_size, cache=False, variant="static",
                                    max_seq_length=embedder.max_seq_length)
        if self.model.embedder_model != embedder.feature_space:
            raise ConfigError("embedder", f"the semantic model was trained on {self.model.embedder_model} "
                                          f"features, not {embedder.feature_space}")
        self.embedder = embedder
        self.examples = examples or {}
        self.name = name

    def score_items(self, items: Sequence[Item]) -> np.ndarray:
        return self.model.score(self.embedder, items, self.examples)

    def grade(self, question: Question, answers: list[Answer]) -> list[GradeResult]:
        items = [Item(question.text, [question.reference_answer], a.text, question.id, a.answer_id) for a in answers]
        scores = self.score_items(items)
        results = []
        for answer, s in zip(answers, scores, strict=True):
            s = float(s) if answer.text.strip() else 0.0
            results.append(GradeResult(points=to_points(s, question.max_points, question.granularity),
                                       max_points=question.max_points,
                                       details={"fraction": round(s, 6), "s_semantic": round(s, 6)}))
        return results
