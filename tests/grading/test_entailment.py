"""Concept verifier (grading.entailment): negations, SemEval pairs, training and reloading a tiny
in-process model, and the KG grader's use of a verifier."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from grading.benchmarks.datasets import Benchmark
from grading.entailment import (
    BASE_MODEL,
    ConceptVerifier,
    concept_rows,
    load_verifier,
    negate,
    semeval_pairs,
    threshold_metrics,
    train_verifier,
    trainable_names,
    with_distractors,
)
from grading.graders.concepts import load_nlp
from grading.rubric import Answer, Question, Rubric
from inkbase.errors import ConfigError, InputError


@pytest.mark.parametrize("text, negated", [
    ("The array must be sorted.", "The array must not be sorted."),
    ("It compares the target with the middle element.", "It does not compare the target with the middle element."),
    ("The bulb doesn't light.", "The bulb does light."),
    ("The terminals are separated by the gap", "The terminals are not separated by the gap"),
    ("Its resistance increased", "Its resistance did not increase"),
])
def test_negate_turns_each_statement_around(text, negated):
    assert negate(load_nlp()(text)) == negated


def test_negate_returns_none_when_nothing_can_be_negated():
    assert negate(load_nlp()("Blue.")) is None


def test_semeval_pairs_use_the_first_reference_for_correct_and_every_reference_for_incorrect():
    q = Question(id="beetle/q", text="Why?", max_points=1, granularity=1, reference_answer="r1", concepts=[])
    answers = pd.DataFrame({"answer_id": ["a", "b", "c", "d"], "question_id": ["beetle/q"] * 4,
                            "text": ["good", "bad", " ", "later"], "gold": [1.0, 0.0, 0.0, 1.0],
                            "split": ["train", "train", "train", "UA"], "group": "g", "subset": "beetle"})
    bench = Benchmark("semeval", "binary", {"beetle/q": q}, answers, {"beetle/q": ["r1", "r2"]})
    assert semeval_pairs(bench, "train") == [("good", "r1", 1.0), ("bad", "r1", 0.0), ("bad", "r2", 0.0)]


def test_threshold_metrics_finds_the_f1_best_threshold():
    scores = np.array([0.9, 0.8, 0.4, 0.3, 0.2])
    labels = np.array([1, 1, 0, 1, 0])
    best = threshold_metrics(scores, labels)
    assert best["threshold"] == 0.3 and best["recall"] == 1.0 and best["f1"] == pytest.approx(6 / 7, abs=1e-4)
    fixed = threshold_metrics(scores, labels, threshold=0.5)
    assert fixed["precision"] == 1.0 and fixed["recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert best["auc"] == pytest.approx(5 / 6, abs=1e-4)


def test_concept_rows_need_each_answers_concepts():
    q = Question(id="q", text="?", max_points=1, granularity=1, reference_answer="r",
                 concepts=[{"id": "c", "label": "the array is sorted", "weight": 1, "synonyms": ["ordered"]}], edges=[])
    rubric = Rubric(exam_id="t", questions=[q])
    rows = concept_rows(rubric, [Answer(answer_id="a", question_id="q", text="sorted", concepts=["c"])])
    assert rows == [("sorted", ["the array is sorted", "ordered"], 1)]
    with pytest.raises(InputError, match="concepts"):
        concept_rows(rubric, [Answer(answer_id="a", question_id="q", text="sorted")])


@pytest.fixture(scope="module")
def tiny():
    """A two-layer BERT pair classifier with the bundled MiniLM's tokenizer, built in-process."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from grading.embed import resolve_model_path
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(BASE_MODEL))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=1)
    return BertForSequenceClassification(config), tokenizer


def toy_pairs(n: int = 64) -> list[tuple[str, str, float]]:
    rng = np.random.default_rng(0)
    words = ["sorted", "halved", "cancels", "faster", "heavier", "logarithmic"]
    pairs = []
    for _ in range(n):
        a, b = rng.choice(words, 2, replace=False)
        same = rng.random() < 0.5
        pairs.append((f"the answer says {a}", a if same else b, float(same)))
    return pairs


def test_training_lowers_the_loss_and_the_saved_layers_reload(tiny, tmp_path):
    model, tokenizer = tiny
    start = copy.deepcopy(model)
    verifier = ConceptVerifier(model=model, tokenizer=tokenizer, max_length=32, batch_size=8)
    assert trainable_names(model, 1) == [n for n, _ in model.named_parameters()
                                         if "layer.1." in n or "pooler" in n or n.startswith("classifier")]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    history = train_verifier(verifier, toy_pairs(), train_layers=1, epochs=6, lr=3e-3, batch_size=16, seed=0,
                             progress=False)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    frozen = [n for n in before if n not in trainable_names(model, 1)]
    assert frozen and all(bool((before[n] == p).all()) for n, p in model.named_parameters() if n in frozen)
    path = verifier.save(tmp_path / "v.safetensors", train_layers=1, card={"data": "toy"})
    again = ConceptVerifier(path, model=start, tokenizer=tokenizer, max_length=32)
    pairs = toy_pairs(16)
    prem, hyp = [p[0] for p in pairs], [p[1] for p in pairs]
    np.testing.assert_allclose(again.logits(prem, hyp), verifier.logits(prem, hyp), atol=2e-2)
    assert again.card == {"data": "toy"}
    probs = again.scores(prem, hyp)
    assert probs.shape == (16,) and ((probs >= 0) & (probs <= 1)).all()


def test_missing_weights_are_named(tmp_path):
    with pytest.raises(ConfigError, match="grader.verifier"):
        load_verifier(str(tmp_path / "none.safetensors"))
    with pytest.raises(InputError, match="none.safetensors"):
        ConceptVerifier(tmp_path / "none.safetensors")


class StubVerifier:
    """Probability 0.9 when the phrase's last word is in the answer, else 0.1; records what it was asked."""

    def __init__(self):
        self.asked: list[tuple[str, str]] = []

    def scores(self, premises, hypotheses):
        self.asked += list(zip(premises, hypotheses, strict=True))
        return np.array([0.9 if h.split()[-1] in p else 0.1 for p, h in zip(premises, hypotheses, strict=True)],
                        dtype=np.float32)


def test_kg_grader_decides_on_the_verifier_for_cosine_candidates(embedder, tmp_path):
    from grading.graders import build_grader
    from inkbase.cli import compose

    cfg = compose("grade", ["grader=kg", "rubric=x", "answers=y", f"paths.cache_dir={tmp_path}",
                            "grader.threshold=0.5"]).grader
    kg = build_grader(cfg, embedder)
    q = Question.model_validate({
        "id": "q", "text": "How does binary search work?", "max_points": 2, "granularity": 1,
        "reference_answer": "The array must be sorted; the middle element is compared.",
        "concepts": [{"id": "sorted", "label": "the array must be sorted", "weight": 1},
                     {"id": "middle", "label": "compare with the middle element", "weight": 1}], "edges": []})
    texts = ["The array must be sorted first.", "Bananas are yellow."]
    cosine = kg.concept_similarities(q, texts)
    kg.verifier, kg.verify_floor = StubVerifier(), 0.4
    found = kg.concept_similarities(q, texts)
    candidates = cosine.similarity >= 0.4
    # Only cosine candidates are verified; the others score 0.
    assert len(kg.verifier.asked) == int(candidates.sum())
    expected = np.where(candidates, [[0.9 if c.label.split()[-1] in t else 0.1 for c in q.concepts] for t in texts], 0)
    np.testing.assert_allclose(found.similarity, expected, atol=1e-6)
    np.testing.assert_allclose(found.cosine, cosine.cosine, atol=1e-6)
    result = kg.grade(q, [Answer(answer_id="a", question_id="q", text=texts[0])])[0]
    assert result.matched == ["sorted"]
    match = result.details["matches"][0]
    assert match["entailment"] == pytest.approx(0.9) and match["span"] in texts[0]
    assert match["similarity"] == pytest.approx(float(cosine.cosine[0, 0]), abs=1e-4)


def write_semeval(root) -> None:
    """A two-question SemEval-style folder (train split only)."""
    import json as _json
    folder = root / "semeval2013_task7_2way"
    folder.mkdir(parents=True)
    refs = {"q1": "The array must be sorted.", "q2": "The mass cancels out."}
    pd.DataFrame([{"corpus": "sciEntsBank", "split": "train", "question_id": q, "question_text": f"Why {q}?",
                   "reference_answers_json": _json.dumps([{"id": "r", "category": "BEST", "text": t}])}
                  for q, t in refs.items()]).to_csv(folder / "questions_and_reference_answers.csv", index=False)
    texts = {"q1": [("The list has to be in order.", "correct"), ("Any order works.", "incorrect")],
             "q2": [("Mass is on both sides and drops out.", "correct"), ("Heavy things fall faster.", "incorrect")]}
    pd.DataFrame([{"corpus": "sciEntsBank", "split": "train", "question_id": q, "student_answer_id": f"{q}.{i}",
                   "label_2way": label, "student_answer": text}
                  for q, rows in texts.items() for i, (text, label) in enumerate(rows)]
                 ).to_csv(folder / "student_answers.csv", index=False)


def test_train_entailment_script_trains_scores_the_dev_set_and_writes_its_run(tmp_path):
    import json as _json

    from grading.benchmarks.train_entailment import run
    from inkbase.cli import compose

    write_semeval(tmp_path / "data")
    metrics = run(compose("train_entailment", [f"data_dir={tmp_path / 'data'}", f"out_dir={tmp_path / 'run'}",
                                               "epochs=1", "train_batch_size=4", "threads=2",
                                               "benchmark.corpora=[sciEntsBank]"]))
    assert metrics["n_pairs"] == 4 and metrics["n_generated"] >= 2  # both references, negated and as themselves
    assert metrics["best_epoch"] == 1 and 0.0 <= metrics["dev"]["auc"] <= 1.0
    weights = tmp_path / "run" / "verifier.safetensors"
    verifier = ConceptVerifier(weights)
    assert verifier.card["dev"] == metrics["dev"] and verifier.card["train_layers"] == 2
    assert _json.loads((tmp_path / "run" / "history.json").read_text())[0]["epoch"] == 1


def test_train_entailment_refuses_other_data():
    from grading.benchmarks.train_entailment import run
    from inkbase.cli import compose

    with pytest.raises(ConfigError, match="SemEval"):
        run(compose("train_entailment", ["benchmark=mohler"]))
    with pytest.raises(ConfigError, match="epochs"):
        run(compose("train_entailment", ["epochs=0"]))


def test_training_interrupted_between_epochs_resumes_to_the_same_model(tmp_path):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from grading.embed import resolve_model_path
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(BASE_MODEL))
    torch.manual_seed(1)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    start = BertForSequenceClassification(config)
    args = dict(train_layers=1, epochs=2, lr=3e-3, batch_size=16, seed=0, progress=False)

    def stop_at_two(epoch, before):
        if epoch == 2:
            raise KeyboardInterrupt
        return {}

    whole = ConceptVerifier(model=copy.deepcopy(start), tokenizer=tokenizer, max_length=32)
    train_verifier(whole, toy_pairs(), **args)
    cut = ConceptVerifier(model=copy.deepcopy(start), tokenizer=tokenizer, max_length=32)
    with pytest.raises(KeyboardInterrupt):
        train_verifier(cut, toy_pairs(), on_epoch=stop_at_two, checkpoint=tmp_path / "ckpt.pt", **args)
    resumed = ConceptVerifier(model=copy.deepcopy(start), tokenizer=tokenizer, max_length=32)
    calls = []
    history = train_verifier(resumed, toy_pairs(), checkpoint=tmp_path / "ckpt.pt",
                             on_epoch=lambda e, before: calls.append((e, [h["epoch"] for h in before])) or {}, **args)
    assert calls == [(2, [1])]  # only the unfinished epoch ran again, knowing the restored one
    assert [h["epoch"] for h in history] == [1, 2]
    pairs = toy_pairs(16)
    prem, hyp = [p[0] for p in pairs], [p[1] for p in pairs]
    np.testing.assert_allclose(resumed.logits(prem, hyp), whole.logits(prem, hyp), atol=1e-5)


def test_distractors_put_other_answers_around_an_answer_and_keep_its_label():
    pairs = [("The list is sorted", "r1", 1.0), ("Mass drops out", "r2", 0.0), ("Heavy falls faster", "r3", 1.0)]
    out = with_distractors(pairs, share=1.0, most=2, seed=0)
    assert [(h, y) for _, h, y in out] == [(h, y) for _, h, y in pairs]
    for (answer, hyp, _), (text, _, _) in zip(pairs, out, strict=True):
        sentences = [t.strip() for t in text.split(".") if t.strip()]
        assert answer in sentences and 2 <= len(sentences) <= 3
        others = {a for a, h, _ in pairs if h != hyp}
        assert all(t in others for t in sentences if t != answer)
    assert with_distractors(pairs, share=0.0, most=2, seed=0) == pairs
    # One reference for every pair: no other answer qualifies, and the answer is kept alone.
    same = [(a, "r", y) for a, _, y in pairs]
    assert [t for t, _, _ in with_distractors(same, share=1.0, most=2, seed=0)] == [a + "." for a, _, _ in same]
