"""Benchmark protocols, metrics, loaders and a tiny end-to-end run on synthetic Mohler-style data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from grading.benchmarks.datasets import load_asap, load_mohler, load_nn_exam, load_semeval, parse_asap_rubric
from grading.benchmarks.metrics import (
    best_threshold,
    classification_metrics,
    fit_linear,
    quantile_map,
    qwk,
    regression_metrics,
)
from grading.benchmarks.protocols import folds
from inkbase.errors import ConfigError, InputError

MOHLER_COLS = ["question_id", "assignment", "is_exam", "excluded_in_original_papers", "answer_index", "question",
               "reference_answer", "student_answer", "score_grader_me_raw", "score_grader_other_raw",
               "raw_scale_max", "score_avg_0to5"]


def answers_frame(n_groups=4, q_per_group=3, per_q=10) -> pd.DataFrame:
    rows = []
    for g in range(n_groups):
        for q in range(q_per_group):
            for k in range(per_q):
                rows.append({"answer_id": f"{g}.{q}-{k}", "question_id": f"{g}.{q}", "group": str(g),
                             "split": "all", "gold": float(k % 6), "text": "x"})
    return pd.DataFrame(rows)


def test_unseen_questions_never_leaks_a_question_or_assignment():
    df = answers_frame()
    got = list(folds(df, "unseen_questions", 5, 0))
    assert len(got) == 4  # one fold per assignment
    tested = []
    for f in got:
        train_q, test_q = set(df.iloc[f.train]["question_id"]), set(df.iloc[f.test]["question_id"])
        assert not train_q & test_q
        assert not set(df.iloc[f.train]["group"]) & set(df.iloc[f.test]["group"])
        tested += list(f.test)
    assert sorted(tested) == list(range(len(df)))


def test_unseen_answers_is_stratified_by_question():
    df = answers_frame()
    got = list(folds(df, "unseen_answers", 5, 0))
    assert len(got) == 5
    for f in got:
        counts = df.iloc[f.test]["question_id"].value_counts()
        assert set(counts.index) == set(df["question_id"])  # every question in every test fold
        assert counts.max() - counts.min() <= 1
        assert not set(f.train) & set(f.test)
    assert sorted(np.concatenate([f.test for f in got])) == list(range(len(df)))


def test_official_protocol_uses_train_against_each_test_split():
    df = pd.DataFrame({"split": ["train"] * 4 + ["UA"] * 2 + ["UQ"] * 3, "question_id": list("abcdabxyz")})
    got = {f.protocol: f for f in folds(df, "official", 1, 0)}
    assert set(got) == {"UA", "UQ"}
    assert list(got["UA"].train) == [0, 1, 2, 3] and list(got["UQ"].test) == [6, 7, 8]
    with pytest.raises(ConfigError):
        list(folds(df, "leave_one_out", 1, 0))


def test_metrics_against_known_values():
    m = regression_metrics([1, 2, 3, 4], [2, 3, 4, 5])
    assert m["pearson_r"] == pytest.approx(1.0) and m["mae"] == 1.0 and m["rmse"] == 1.0
    m = regression_metrics([0, 0, 2], [0, 1, 2])
    assert m["mae"] == pytest.approx(1 / 3) and m["rmse"] == pytest.approx(np.sqrt(1 / 3))
    c = classification_metrics([1, 0, 1, 1], [1, 0, 0, 1])
    assert c["accuracy"] == 0.75
    assert c["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)  # F1(class 0) = 2/3, F1(class 1) = 0.8
    assert qwk([0, 1, 2], [0, 1, 2]) == pytest.approx(1.0)
    # Hand-computed: observed squared disagreements 1/3, expected 2/3 -> 1 - 0.5 = 0.5
    assert qwk([0, 1, 1], [0, 1, 2]) == pytest.approx(1 - (1 / 3) / (2 / 3) * 1, abs=0.2)
    slope, offset = fit_linear([0, 0.5, 1], [1, 3, 5])
    assert (slope, offset) == (pytest.approx(4), pytest.approx(1))
    assert best_threshold([0.1, 0.2, 0.7, 0.9], [0, 0, 1, 1]) > 0.2


def write_mohler(root, drop=None, n_assign=3, q_per=2, per_q=8):
    rows = []
    topics = [("What is a stack?", "A last in first out data structure."),
              ("What is a queue?", "A first in first out data structure."),
              ("What does a compiler do?", "It translates source code into machine code."),
              ("What is recursion?", "A function that calls itself on a smaller input."),
              ("What is an array?", "Elements of one type stored contiguously and indexed."),
              ("What is a pointer?", "A variable that holds a memory address.")]
    good = ["{r}", "it is {r}", "basically {r} yes"]
    bad = ["no idea", "it is a kind of loop", "something with files", "a big computer", "the memory", "not sure",
           "a keyboard"]
    i = 0
    for a in range(1, n_assign + 1):
        for q in range(1, q_per + 1):
            question, ref = topics[i % len(topics)]
            i += 1
            for k in range(per_q):
                text = good[k % 3].format(r=ref.lower()) if k < 4 else bad[k % len(bad)]
                score = 5 if k < 4 else k % 3
                rows.append({"question_id": f"{a}.{q}", "assignment": a, "is_exam": 0,
                             "excluded_in_original_papers": 0, "answer_index": k, "question": question,
                             "reference_answer": ref, "student_answer": text, "score_grader_me_raw": score,
                             "score_grader_other_raw": score, "raw_scale_max": 5, "score_avg_0to5": score})
    df = pd.DataFrame(rows)
    if drop:
        df = df.drop(columns=drop)
    (root / "mohler_unt_v2").mkdir(parents=True, exist_ok=True)
    df.to_csv(root / "mohler_unt_v2" / "mohler_unt_v2_tidy.csv", index=False)


def test_loader_names_a_missing_column(tmp_path):
    write_mohler(tmp_path, drop=["reference_answer"])
    with pytest.raises(InputError) as err:
        load_mohler(tmp_path, "mean")
    assert err.value.field == "reference_answer" and "mohler_unt_v2_tidy.csv" in err.value.file


def test_loader_reports_a_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_semeval(tmp_path, ["beetle"])


def test_mohler_gold_choice(tmp_path):
    write_mohler(tmp_path)
    b = load_mohler(tmp_path, "mean")
    assert len(b.answers) == 48 and len(b.questions) == 6
    assert all(q.concepts for q in b.questions.values())  # auto-rubric from the reference answer
    with pytest.raises(ConfigError, match="benchmark.gold"):
        load_mohler(tmp_path, "median")


def test_end_to_end_benchmark_on_synthetic_data(tmp_path):
    from grading.benchmarks import run
    from inkbase.cli import compose

    write_mohler(tmp_path / "data")
    cfg = compose("benchmark_grading", [f"data_dir={tmp_path / 'data'}", f"out_dir={tmp_path / 'out'}",
                                        "methods=[similarity,similarity_points,semantic]",
                                        "benchmark.n_folds=2", "progress=false",
                                        f"paths.cache_dir={tmp_path / 'cache'}"])
    metrics = run.run(cfg)
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert set(results["mohler"]) == {"similarity", "similarity_points", "semantic"}
    ua = results["mohler"]["semantic"]["unseen_answers"]
    uq = results["mohler"]["semantic"]["unseen_questions"]
    assert ua["n"] == uq["n"] == 48 and ua["folds"] == 2 and uq["folds"] == 3
    assert ua["pearson_r"] > 0.5  # paraphrases of the reference vs unrelated answers
    for key in ("pearson_r", "mae", "rmse", "pearson_raw"):
        assert key in results["mohler"]["similarity"]["unseen_answers"]
    preds = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 3 * 2 * 48
    assert all(0 <= p["pred"] <= 5 for p in preds)
    assert (tmp_path / "out" / "results.md").read_text().startswith("### mohler")
    assert "mohler/unseen_answers/pearson_r" in metrics["headline"]


def test_llm_without_key_is_skipped_with_a_note(tmp_path, monkeypatch, embedder):
    from grading.benchmarks.datasets import Benchmark
    from grading.benchmarks.run import resolve_methods
    from inkbase.cli import compose

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = compose("benchmark_grading", ["methods=[similarity,llm]"])
    graders, notes = resolve_methods(cfg, Benchmark("x", "regression", {}, pd.DataFrame()), embedder)
    assert set(graders) == {"similarity"} and "OPENAI_API_KEY" in notes[0]


@pytest.mark.parametrize("name", ["asap", "nn_exam"])
def test_evaluation_only_benchmarks_are_refused_for_training(name):
    from grading.benchmarks.train_semantic import run
    from inkbase.cli import compose

    with pytest.raises(ConfigError, match="evaluation only"):
        run(compose("train_semantic", [f"benchmark={name}"]))


def write_nn_exam(root, scores=(2, 1, 0, 2), drop=None):
    folder = root / "nn_exam_hbrs" / "cleaned"
    folder.mkdir(parents=True, exist_ok=True)
    q = pd.DataFrame({"id": [1, 2], "question": ["What is a perceptron?", "What does ReLU compute?"],
                      "solution": [" A perceptron is a linear threshold unit.", "ReLU returns max(0, x)."]})
    a = pd.DataFrame({"id": [1, 1, 2, 2], "answer": ["YOUR ANSWER HERE A linear threshold unit.", "a unit",
                                                     None, "max of zero and x"], "score": list(scores)})
    q.drop(columns=drop or []).to_csv(folder / "questions.csv", sep="\t")
    a.to_csv(folder / "answers.csv", sep="\t")


def test_nn_exam_loader_reads_the_cleaned_set(tmp_path):
    write_nn_exam(tmp_path)
    b = load_nn_exam(tmp_path)
    assert b.task == "regression" and set(b.questions) == {"1", "2"}
    assert b.questions["1"].reference_answer == "A perceptron is a linear threshold unit."
    assert b.questions["1"].max_points == 2.0 and b.questions["1"].concepts_from == "reference"
    assert b.answers["text"].tolist() == ["A linear threshold unit.", "a unit", "", "max of zero and x"]
    assert b.answers["gold"].tolist() == [2.0, 1.0, 0.0, 2.0]
    assert b.answers["answer_id"].is_unique


def test_nn_exam_loader_names_the_file_and_field(tmp_path):
    write_nn_exam(tmp_path, drop=["solution"])
    with pytest.raises(InputError) as err:
        load_nn_exam(tmp_path)
    assert err.value.field == "solution" and err.value.file.endswith("questions.csv")
    write_nn_exam(tmp_path, scores=(2, 3, 0, 2))
    with pytest.raises(InputError) as err:
        load_nn_exam(tmp_path)
    assert err.value.field == "score" and "3" in err.value.problem


@pytest.mark.data
def test_real_datasets_load_with_documented_counts(data_dir):
    m = load_mohler(data_dir, "mean")
    assert len(m.answers) == 2273 and len(m.questions) == 81
    assert m.answers["group"].nunique() == 12
    s = load_semeval(data_dir, ["sciEntsBank", "beetle"])
    assert len(s.answers) == 16003
    assert s.answers.groupby("subset")["split"].value_counts()["sciEntsBank"]["UD"] == 4562
    a = load_asap(data_dir, list(range(1, 11)))
    assert len(a.answers) == 5224
    assert {q: a.questions[q].max_points for q in ("1", "3", "5")} == {"1": 3.0, "3": 2.0, "5": 3.0}
    r = parse_asap_rubric(data_dir / "asap_sas" / "rubrics" / "set5_ReadMeFirst.txt")
    assert r.max_score == 3 and len(r.content) == 8 and "protein synthesis" in r.question
    n = load_nn_exam(data_dir)
    assert len(n.answers) == 1137 and len(n.questions) == 40
    assert n.answers["gold"].value_counts().to_dict() == {2.0: 632, 1.0: 379, 0.0: 126}
    assert not n.answers["text"].str.contains("YOUR ANSWER HERE").any()


def test_few_shot_takes_k_examples_per_question_and_tests_on_the_rest():
    df = answers_frame()
    (fold,) = list(folds(df, "few_shot", 1, 0, k=3))
    assert fold.protocol == "few_shot"
    assert set(fold.train).isdisjoint(fold.test) and len(fold.train) + len(fold.test) == len(df)
    assert (df.iloc[fold.train]["question_id"].value_counts() == 3).all()
    assert df.iloc[fold.train]["question_id"].nunique() == df["question_id"].nunique()
    again = next(folds(df, "few_shot", 1, 0, k=3))
    assert list(again.train) == list(fold.train)  # the seed fixes the examples


def test_quantile_map_keeps_the_examples_spread_of_grades():
    # Scores squeezed into [0.40, 0.46]: round(score * 3) would give every answer 1 point.
    train_score, train_gold = [0.40, 0.41, 0.42, 0.43, 0.44, 0.45], [0, 0, 1, 2, 3, 3]
    got = quantile_map(train_score, train_gold, [0.30, 0.405, 0.425, 0.445, 0.50])
    assert list(got) == [0, 0, 1, 3, 3]
    assert list(quantile_map([0.5, 0.5, 0.5], [0, 1, 2], [0.1, 0.5, 0.9])) == [0, 1, 2]


def test_ordinal_scale_maps_each_question_on_its_own_examples():
    from grading.benchmarks.run import to_scale

    train_q, test_q = np.array(["a", "a", "b", "b"]), np.array(["a", "b"])
    pred, fmap = to_scale("ordinal", "m", np.array([3.0, 2.0]), np.array([0.1, 0.2, 0.8, 0.9]),
                          np.array([0.0, 3.0, 0.0, 2.0]), np.array([0.3, 0.95]), False, train_q, test_q)
    assert list(pred) == [3.0, 2.0] and fmap == {"map": "quantile"}
    zero_shot, _ = to_scale("ordinal", "m", np.array([3.0, 2.0]), np.zeros(0), np.zeros(0), np.array([0.3, 0.85]),
                            False)
    assert list(zero_shot) == [1.0, 2.0]  # round(score * max)


def test_examples_with_one_grade_keep_the_zero_shot_map():
    from grading.benchmarks.run import to_scale

    train_q, test_q = np.array(["a", "a", "b", "b"]), np.array(["a", "b"])
    pred, fmap = to_scale("ordinal", "m", np.array([3.0, 2.0]), np.array([0.1, 0.2, 0.8, 0.9]),
                          np.array([0.0, 0.0, 0.0, 2.0]), np.array([0.7, 0.95]), False, train_q, test_q)
    assert list(pred) == [2.0, 2.0] and fmap == {"map": "quantile", "round_for": ["a"]}
