"""Concept entailment: does an answer state a rubric concept? A pair classifier (cross-encoder) over MiniLM.

A sentence embedding compares two texts through one vector each, and MiniLM's cosine ranks a denial ("the
array can be in any order") above a paraphrase ("the elements have to be in ascending order") for most
concepts of the concept devset (experiments/grading_transfer/README.md). A cross-encoder reads the answer
and the concept phrase together, so every word of one can attend to the other. No NLI model or
cross-encoder exists offline, so one is trained here from the bundled all-MiniLM-L6-v2 (the same network
the embedder uses) on data the project may train on:

- SemEval-2013's train split: (student answer, reference answer), 2-way label; a correct Beetle answer is
  paired with the question's first best reference, an incorrect one with every reference;
- generated hard negatives: correct answers and reference answers with their statements negated
  (:func:`negate`: "is" -> "is not", "sorts" -> "does not sort", "not" removed, "increases" ->
  "decreases"), labelled incorrect against the reference; the reference against itself, correct.

Only the top ``train_layers`` transformer layers, the pooler and the one-logit head are trained; the
shipped file holds only those (fp16 safetensors), the rest is read from the bundled MiniLM. Written by hand
(not sentence-transformers' CrossEncoder trainer) because that trainer fine-tunes every layer, and the
weights shipped must stay small.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from grading.embed import resolve_model_path
from inkbase.errors import ConfigError, InputError

log = logging.getLogger(__name__)

BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# Word pairs whose swap turns a statement into its opposite (used when a statement has no verb to negate).
_ANTONYMS = dict(pair for a, b in (
    ("increase", "decrease"), ("increases", "decreases"), ("increased", "decreased"), ("more", "less"),
    ("larger", "smaller"), ("higher", "lower"), ("faster", "slower"), ("greater", "smaller"), ("rises", "falls"),
    ("same", "different"), ("always", "never"), ("all", "no"), ("positive", "negative"), ("open", "closed"),
    ("before", "after"), ("attract", "repel"), ("attracts", "repels"), ("inside", "outside"), ("up", "down"),
) for pair in ((a, b), (b, a)))


def negate(doc) -> str | None:
    """``doc`` (a parsed spaCy Doc) with each sentence's main statement negated, or None where none could be.

    A sentence whose root carries a negation loses it ("is not" -> "is", "doesn't sort" -> "does sort");
    otherwise "not" follows the root's first auxiliary or copula ("must be" -> "must not be"), or
    do-support is added ("sorts" -> "does not sort"); a sentence with no verb to negate swaps an
    antonym ("more" -> "less"). Sentences none of these fit are left as they are."""
    words = [t.text_with_ws for t in doc]
    changed = False
    for sent in doc.sents:
        root = sent.root
        neg = [c for c in root.children if c.dep_ == "neg"]
        aux = [c for c in root.children if c.dep_ in ("aux", "auxpass") and c.i < root.i]
        if neg:
            for t in neg:
                words[t.i] = "" if t.lower_ in ("not", "n't", "never", "no") else words[t.i]
                if t.lower_ == "n't" and t.i > 0:  # "doesn't" -> "does"
                    words[t.i - 1] = doc[t.i - 1].text + " "
            changed = True
        elif aux:
            words[aux[0].i] = aux[0].text + " not "
            changed = True
        elif root.pos_ == "AUX" or root.lemma_ == "be":
            words[root.i] = root.text + " not "
            changed = True
        elif root.pos_ == "VERB" and root.tag_ in ("VBZ", "VBD", "VBP"):
            do = {"VBZ": "does", "VBD": "did", "VBP": "do"}[root.tag_]
            words[root.i] = f"{do} not {root.lemma_}{root.whitespace_}"
            changed = True
        else:
            for t in sent:
                if t.lower_ in _ANTONYMS:
                    words[t.i] = _ANTONYMS[t.lower_] + t.whitespace_
                    changed = True
                    break
    if not changed:
        return None
    text = "".join(words)
    return " ".join(text.split())


def semeval_pairs(bench, split: str = "train") -> list[tuple[str, str, float]]:
    """(answer, reference, label) pairs of a SemEval benchmark's ``split``: a correct answer with the
    question's first (best) reference, an incorrect one with every reference (SciEntsBank has one)."""
    rows = bench.answers[bench.answers["split"] == split]
    pairs = []
    for row in rows.itertuples():
        refs = bench.refs(row.question_id)
        text = str(row.text).strip()
        if not text:
            continue
        if row.gold >= 0.5:
            pairs.append((text, refs[0], 1.0))
        else:
            pairs.extend((text, r, 0.0) for r in refs)
    return pairs


def hard_negatives(pairs: Sequence[tuple[str, str, float]], nlp, seed: int, share: float
                   ) -> list[tuple[str, str, float]]:
    """Generated pairs: a ``share`` of the correct answers negated (incorrect), and each distinct reference
    negated (incorrect) and against itself (correct)."""
    rng = random.Random(seed)
    correct = [p for p in pairs if p[2] >= 0.5]
    chosen = rng.sample(correct, int(len(correct) * share))
    refs = sorted({p[1] for p in pairs})
    out = [(r, r, 1.0) for r in refs]
    texts = [a for a, _, _ in chosen] + refs
    hyps = [h for _, h, _ in chosen] + refs
    for doc, hyp in zip(nlp.pipe(texts, batch_size=256), hyps, strict=True):
        neg = negate(doc)
        if neg and neg.lower() != doc.text.lower():
            out.append((neg, hyp, 0.0))
    return out


def with_distractors(pairs: Sequence[tuple[str, str, float]], share: float, most: int, seed: int
                     ) -> list[tuple[str, str, float]]:
    """``pairs`` with a ``share`` of the answers given 1..``most`` sentences of other pairs' answers (other
    references) around them, in random order, label unchanged: an answer states a concept somewhere among
    other statements, which SemEval's one-sentence answers never show."""
    rng = random.Random(seed)
    out = []
    for answer, hyp, label in pairs:
        if rng.random() >= share:
            out.append((answer, hyp, label))
            continue
        extra, want = [], rng.randint(1, most)
        for _ in range(20 * want):  # bounded: pairs may all share one reference
            if len(extra) == want:
                break
            other = pairs[rng.randrange(len(pairs))]
            if other[1] != hyp:
                extra.append(other[0].strip().rstrip(".") + ".")
        parts = [answer.strip().rstrip(".") + "."] + extra
        rng.shuffle(parts)
        out.append((" ".join(parts), hyp, label))
    return out


def _torch():
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    return torch, AutoModelForSequenceClassification, AutoTokenizer


def trainable_names(model, train_layers: int) -> list[str]:
    """Parameter names of the top ``train_layers`` encoder layers, the pooler and the head."""
    n = model.config.num_hidden_layers
    if not 1 <= train_layers <= n:
        raise ConfigError("train_layers", f"{train_layers} is not between 1 and {n}")
    top = tuple(f"encoder.layer.{i}." for i in range(n - train_layers, n))
    return [name for name, _ in model.named_parameters()
            if any(t in name for t in top) or "pooler" in name or name.startswith("classifier")]


class ConceptVerifier:
    """P(answer states hypothesis) for (answer, hypothesis) pairs, from the shipped or a trained head.

    ``weights``: a safetensors file written by :meth:`save` (its metadata names the base model and the
    layers it replaces). ``base``: the bundled MiniLM by default, or any hub BERT-family checkpoint (with a
    network); the file holds only the trained layers."""

    def __init__(self, weights: str | Path | None = None, base: str = BASE_MODEL, max_length: int = 256,
                 batch_size: int = 32, model=None, tokenizer=None):
        torch, auto_model, auto_tok = _torch()
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.weights = Path(weights) if weights is not None else None
        meta: dict[str, str] = {}
        if self.weights is not None:
            if not self.weights.is_file():
                raise InputError(self.weights, "(file)", "concept verifier weights not found")
            from safetensors import safe_open
            with safe_open(str(self.weights), framework="pt") as f:
                meta = f.metadata() or {}
            base = meta.get("base_model", base)
        self.base = base
        if model is None:
            path = resolve_model_path(base)
            tokenizer = auto_tok.from_pretrained(path)
            # ignore_mismatched_sizes: a hub NLI checkpoint's 3-way head is replaced by a new one-logit head.
            model = auto_model.from_pretrained(path, num_labels=1, ignore_mismatched_sizes=True)
        self.model, self.tokenizer = model, tokenizer
        if self.weights is not None:
            from safetensors.torch import load_file
            state = {k: v.float() for k, v in load_file(str(self.weights)).items()}
            unknown = sorted(set(state) - set(dict(self.model.named_parameters())))
            if unknown:
                raise InputError(self.weights, unknown[0], "not a parameter of the base model " + base)
            self.model.load_state_dict(state, strict=False)
        self.model.eval()
        self.card = json.loads(meta.get("card", "{}"))

    def _batch(self, premises: Sequence[str], hypotheses: Sequence[str]):
        return self.tokenizer(list(premises), list(hypotheses), padding=True, truncation="only_first",
                              max_length=self.max_length, return_tensors="pt")

    def logits(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        torch = _torch()[0]
        if len(premises) != len(hypotheses):
            raise ValueError("premises and hypotheses differ in length")
        out = np.zeros(len(premises), dtype=np.float32)
        # Sorted by length so that a batch pads little.
        order = np.argsort([len(p) + len(h) for p, h in zip(premises, hypotheses, strict=True)], kind="stable")
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                enc = self._batch([premises[i] for i in idx], [hypotheses[i] for i in idx])
                out[idx] = self.model(**enc).logits[:, 0].float().numpy()
        return out

    def scores(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        """Probabilities in [0, 1]."""
        return 1.0 / (1.0 + np.exp(-self.logits(premises, hypotheses)))

    def save(self, path: str | Path, train_layers: int, card: dict[str, Any]) -> Path:
        """The trained layers as fp16 safetensors, with the base model and card in the metadata."""
        from safetensors.torch import save_file
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        params = dict(self.model.named_parameters())
        state = {k: params[k].detach().half().contiguous() for k in trainable_names(self.model, train_layers)}
        save_file(state, str(path), metadata={"base_model": self.base, "train_layers": str(train_layers),
                                              "card": json.dumps(card)})
        return path


def train_verifier(verifier: ConceptVerifier, pairs: Sequence[tuple[str, str, float]], train_layers: int,
                   epochs: int, lr: float, batch_size: int, seed: int, threads: int | None = None,
                   on_epoch: Callable[[int, list[dict]], dict] | None = None, progress: bool = True,
                   checkpoint: str | Path | None = None) -> list[dict]:
    """Fine-tune ``verifier``'s top layers on ``pairs`` (binary cross-entropy, AdamW, linear warm-up and
    decay). ``on_epoch(k, history)`` is called after each epoch with the entries of the epochs before it,
    restored ones included (its dict is logged and returned per epoch).
    ``checkpoint``: after each epoch the trained parameters, optimiser, schedule, shuffling state and
    history are saved there, and a run that finds the file continues after its last finished epoch."""
    torch = _torch()[0]
    from tqdm.auto import tqdm
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    model = verifier.model
    names = set(trainable_names(model, train_layers))
    for name, p in model.named_parameters():
        p.requires_grad = name in names
    params = [p for n, p in model.named_parameters() if n in names]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    steps = epochs * math.ceil(len(pairs) / batch_size)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    rng = random.Random(seed)
    history: list[dict] = []
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["params"], strict=False)
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        rng.setstate(state["rng"])
        history = state["history"]
        log.info("verifier: resuming after epoch %d from %s", len(history), checkpoint)
    for epoch in range(len(history), epochs):
        model.train()
        order = list(range(len(pairs)))
        rng.shuffle(order)
        total, seen = 0.0, 0
        bar = tqdm(range(0, len(order), batch_size), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress)
        for start in bar:
            batch = [pairs[i] for i in order[start:start + batch_size]]
            enc = verifier._batch([b[0] for b in batch], [b[1] for b in batch])
            target = torch.tensor([b[2] for b in batch], dtype=torch.float32)
            loss = loss_fn(model(**enc).logits[:, 0], target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            total += float(loss.detach()) * len(batch)
            seen += len(batch)
            bar.set_postfix(loss=f"{total / seen:.4f}")
        model.eval()
        entry = {"epoch": epoch + 1, "train_loss": round(total / max(seen, 1), 5)}
        if on_epoch is not None:
            entry.update(on_epoch(epoch + 1, list(history)))
        log.info("verifier %s", entry)
        history.append(entry)
        if checkpoint is not None:
            tmp = checkpoint.with_suffix(".tmp")
            torch.save({"params": {n: p.detach().clone() for n, p in model.named_parameters() if n in names},
                        "opt": opt.state_dict(), "sched": sched.state_dict(), "rng": rng.getstate(),
                        "history": history}, tmp)
            tmp.replace(checkpoint)
    return history


def concept_rows(rubric, answers) -> list[tuple[str, list[str], int]]:
    """(answer text, the concept's phrases, 1 if the answer's ``concepts`` list names it) for every answer
    and every concept of its question: a concept devset as rows for :func:`concept_scores`."""
    rows = []
    for a in answers:
        gold = a.extra.get("concepts")
        if gold is None:
            raise InputError(f"answer {a.answer_id}", "concepts", "missing: the concept devset lists each "
                             "answer's concepts")
        for c in rubric.by_id[a.question_id].concepts:
            rows.append((a.text, list(c.phrases), int(c.id in gold)))
    return rows


def best_probabilities(verifier, texts: Sequence[str], phrase_lists: Sequence[Sequence[str]]) -> np.ndarray:
    """For each text, the verifier's best probability over its list of phrases (one call for all pairs)."""
    prem = [text for text, phrases in zip(texts, phrase_lists, strict=True) for _ in phrases]
    hyp = [p for phrases in phrase_lists for p in phrases]
    probs = verifier.scores(prem, hyp) if prem else np.zeros(0, dtype=np.float32)
    bounds = np.cumsum([0] + [len(p) for p in phrase_lists])
    return np.array([probs[a:b].max() for a, b in zip(bounds[:-1], bounds[1:], strict=True)], dtype=np.float32)


def concept_scores(verifier: ConceptVerifier, rows: Sequence[tuple[str, list[str], int]]) -> np.ndarray:
    """Each row's best probability over its concept's phrases."""
    return best_probabilities(verifier, [text for text, _, _ in rows], [phrases for _, phrases, _ in rows])


def threshold_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float | None = None) -> dict[str, float]:
    """ROC AUC, and precision / recall / F1 at ``threshold`` (None: the F1-best of the scores' own values,
    reported as ``threshold``)."""
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score
    labels = np.asarray(labels, dtype=int)
    out = {"auc": round(float(roc_auc_score(labels, scores)), 4) if 0 < labels.sum() < len(labels) else float("nan")}
    candidates = [threshold] if threshold is not None else sorted(set(np.round(scores, 4).tolist()))
    best = None
    for t in candidates:
        p, r, f, _ = precision_recall_fscore_support(labels, (scores >= t).astype(int), average="binary",
                                                     zero_division=0)
        if best is None or f > best[3]:
            best = (t, p, r, f)
    t, p, r, f = best
    out.update(threshold=round(float(t), 4), precision=round(float(p), 4), recall=round(float(r), 4),
               f1=round(float(f), 4))
    return out


@functools.cache
def load_verifier(weights: str) -> ConceptVerifier:
    """A verifier from a weights file written by ``scripts/train_entailment.py``, loaded once per process.
    (No verifier ships: none has beaten the cosine matcher; experiments/grading_transfer/verifier/.)"""
    path = Path(weights)
    if not path.is_file():
        raise ConfigError("grader.verifier", f"{path} not found (a weights file from scripts/train_entailment.py)")
    return ConceptVerifier(path)
