"""Knowledge-graph grader: graph construction, S_KG, span extraction, matching on obvious cases, grade.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from grading.graders import build_grader
from grading.graders.concepts import (
    extract_spans,
    load_nlp,
    polarity,
    polarity_conflicts,
    span_options,
    span_parser,
)
from grading.graders.kg import kg_coverage, kg_score, rubric_graph, satisfied_relations
from grading.rubric import Answer, Question
from inkbase.cli import compose
from inkbase.errors import ConfigError

QUESTION = Question.model_validate({
    "id": "Q1", "text": "Why do a heavy and a light ball dropped in a vacuum land together?", "max_points": 4,
    "granularity": 0.5, "reference_answer": "Gravity pulls harder on the heavier ball, but it has more inertia; "
                                            "the mass cancels, so both accelerate at g.",
    "concepts": [
        {"id": "gravity", "label": "gravitational force proportional to mass", "weight": 1,
         "synonyms": ["gravity pulls harder on the heavier ball"]},
        {"id": "cancels", "label": "mass cancels out", "weight": 2, "synonyms": ["the m cancels in a = mg/m"]},
        {"id": "same_acc", "label": "same gravitational acceleration", "weight": 1,
         "synonyms": ["both accelerate at g"]},
    ],
    "edges": [{"source": "cancels", "relation": "depends_on", "target": "gravity"},
              {"source": "cancels", "relation": "causes", "target": "same_acc"}],
})
SUPPLY = Question.model_validate({
    "id": "Q2", "text": "A frost destroys coffee plants. What happens to the market?", "max_points": 2,
    "granularity": 1, "reference_answer": "Supply shifts left.",
    "concepts": [{"id": "supply_left", "label": "supply curve shifts left", "weight": 1}], "edges": [],
})


def kg_config(cache_dir, **overrides):
    cfg = compose("grade", ["grader=kg", "rubric=x", "answers=y", f"paths.cache_dir={cache_dir}",
                            *[f"grader.{k}={v}" for k, v in overrides.items()]])
    return cfg.grader


@pytest.fixture(scope="module")
def kg(embedder, tmp_path_factory):
    return build_grader(kg_config(tmp_path_factory.mktemp("kg-cache")), embedder)


def test_rubric_graph_nodes_weights_and_relations():
    graph = rubric_graph(QUESTION)
    assert set(graph.nodes) == {"gravity", "cancels", "same_acc"}
    assert graph.nodes["cancels"]["weight"] == 2.0
    assert graph.nodes["gravity"]["label"] == "gravitational force proportional to mass"
    assert graph.nodes["same_acc"]["synonyms"] == ["both accelerate at g"]
    assert graph.edges["cancels", "gravity"]["relation"] == "depends_on"
    assert graph.edges["cancels", "same_acc"]["relation"] == "causes"
    assert graph.number_of_edges() == 2 and graph.is_directed()


def test_s_kg_is_matched_weight_over_total_weight():
    graph = rubric_graph(QUESTION)
    assert kg_coverage(graph, set()) == 0.0
    assert kg_coverage(graph, {"cancels"}) == pytest.approx(2 / 4)
    assert kg_coverage(graph, {"gravity", "same_acc"}) == pytest.approx(2 / 4)
    assert kg_coverage(graph, {"gravity", "cancels", "same_acc"}) == pytest.approx(1.0)
    # The edge bonus blends in the share of relations whose two ends are matched.
    assert satisfied_relations(graph, {"cancels", "gravity"}) == [("cancels", "depends_on", "gravity")]
    assert kg_score(graph, {"cancels", "gravity"}, 0.0) == pytest.approx(0.75)
    assert kg_score(graph, {"cancels", "gravity"}, 0.5) == pytest.approx(0.5 * 0.75 + 0.5 * 0.5)


def test_spans_include_clauses_segments_and_noun_chunks():
    options = span_options(kg_config("/tmp").spans)
    doc = load_nlp()("Gravity pulls harder on the bowling ball, but it has more inertia, so the mass cancels "
                     "and both balls accelerate at 9.8 m/s^2.")
    spans = dict(extract_spans(doc, options))
    assert "the mass cancels" in spans
    assert "gravity pulls harder on the bowling ball" in spans
    assert "the bowling ball" in spans
    assert all(s == s.lower() for s in spans)


def test_polarity_tags_and_conflicts():
    right, left, unchanged = polarity("the curve shifts right"), polarity("shifts to the left"), polarity("unchanged")
    up, down = polarity("the price goes up"), polarity("price falls")
    conflicts = polarity_conflicts(np.array([right, up, unchanged]), np.array([left, down, polarity("moves left")]))
    assert conflicts[0, 0] and conflicts[1, 1] and conflicts[2, 2]
    assert not conflicts[0, 1] and not conflicts[1, 0]
    # Naming both directions is no conflict; negation only counts when asked for.
    both = polarity("rises then falls")
    assert not polarity_conflicts(np.array([both]), np.array([up]))[0, 0]
    neg = polarity("correlation doesn't imply causation")
    assert polarity_conflicts(np.array([neg]), np.array([polarity("correlation implies causation")]))[0, 0]
    assert not polarity_conflicts(np.array([neg]), np.array([0]), negation=False)[0, 0]


def test_span_cache_is_read_back_without_parsing(tmp_path):
    options = span_options(kg_config("/tmp").spans)
    texts = ["The mass cancels out.", "Both balls accelerate at g."]
    first = span_parser(options, cache_dir=tmp_path)(texts)
    again = span_parser(options, cache_dir=tmp_path)
    again._nlp = object()  # any attempt to parse would fail
    assert again(texts) == [[list(s) for s in spans] for spans in first]


def test_right_answer_matches_and_wrong_answer_does_not(kg):
    answers = [
        Answer(answer_id="right", question_id="Q1", text="Gravity pulls harder on the heavier ball, but the mass "
                                                          "cancels out, so both accelerate at g."),
        Answer(answer_id="wrong", question_id="Q1", text="I like swimming in the sea on holiday."),
        Answer(answer_id="empty", question_id="Q1", text=""),
    ]
    right, wrong, empty = kg.grade(QUESTION, answers)
    assert set(right.matched) == {"gravity", "cancels", "same_acc"} and right.missing == []
    assert right.points == 4 and right.details["s_kg"] == pytest.approx(1.0)
    assert {m["id"] for m in right.details["matches"]} == set(right.matched)
    for m in right.details["matches"]:
        assert m["span"] and m["span"] in answers[0].text and m["similarity"] >= kg.threshold
    assert {tuple(r) for r in right.details["relations_satisfied"]} == {("cancels", "depends_on", "gravity"),
                                                                        ("cancels", "causes", "same_acc")}
    assert wrong.matched == [] and wrong.points == 0 and wrong.details["s_kg"] == 0
    assert {m["id"] for m in wrong.details["closest_missing"]} == {"gravity", "cancels", "same_acc"}
    assert empty.points == 0 and empty.matched == []


def test_partial_answer_gets_the_weight_of_what_it_states(kg):
    (result,) = kg.grade(QUESTION, [Answer(answer_id="p", question_id="Q1", text="The mass cancels out.")])
    assert result.matched == ["cancels"]
    assert result.details["fraction"] == pytest.approx(0.5) and result.points == 2.0


def test_direction_check_rejects_the_opposite_shift(embedder, tmp_path):
    text = [Answer(answer_id="a", question_id="Q2", text="The supply curve shifts right.")]
    plain = build_grader(kg_config(tmp_path, direction_check=False), embedder)
    checked = build_grader(kg_config(tmp_path), embedder)
    assert plain.grade(SUPPLY, text)[0].matched == ["supply_left"]  # what the check is for
    assert checked.grade(SUPPLY, text)[0].matched == []
    assert checked.grade(SUPPLY, [Answer(answer_id="b", question_id="Q2", text="Supply shifts to the left.")]
                         )[0].matched == ["supply_left"]


@pytest.mark.parametrize("key,value", [("threshold", 1.5), ("edge_bonus", -0.1), ("spans.window", -1)])
def test_out_of_range_knobs_are_refused(embedder, key, value):
    with pytest.raises(ConfigError, match=key.split(".")[-1]):
        build_grader(kg_config("/tmp", **{key: value}), embedder)


def test_grade_entry_point_writes_kg_explanations(tmp_path, grade_overrides):
    from grading import grade

    texts = ["The mass cancels out, so both accelerate at g.", "No idea."]
    cfg = compose("grade", [*grade_overrides(QUESTION, texts), "grader=kg"])
    metrics = grade.run(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "scores.jsonl").read_text().splitlines()]
    assert metrics["n_answers"] == 2 and [r["answer_id"] for r in rows] == ["a0", "a1"]
    for key in ("answer_id", "question_id", "points", "max_points", "matched", "missing", "fraction", "s_kg",
                "matches", "closest_missing", "relations_satisfied"):
        assert key in rows[0]
    assert set(rows[0]["matched"]) == {"cancels", "same_acc"} and rows[0]["points"] == 3.0
    assert rows[1]["matched"] == [] and rows[1]["points"] == 0.0


def test_phrase_slope_raises_the_threshold_of_concepts_with_more_phrases(embedder, tmp_path):
    kg = build_grader(kg_config(tmp_path, phrase_slope=0.2, threshold=0.5), embedder)
    answer = [Answer(answer_id="a", question_id="Q1", text="The mass cancels out, so both accelerate at g.")]
    flat = build_grader(kg_config(tmp_path, threshold=0.5), embedder)
    sims = kg.concept_similarities(QUESTION, [answer[0].text])
    plain = flat.concept_similarities(QUESTION, [answer[0].text])
    # Every concept of QUESTION has two phrases: its score is its cosine less 0.2 * ln 2.
    np.testing.assert_allclose(sims.similarity, np.clip(plain.similarity - 0.2 * np.log(2), 0, 1), atol=1e-6)
    np.testing.assert_allclose(sims.cosine, plain.similarity, atol=1e-6)
    assert sims.best_span == plain.best_span
    entries = kg.grade(QUESTION, answer)[0].details["matches"]
    assert entries and all(e["threshold"] == round(0.5 + 0.2 * np.log(2), 4) for e in entries)
