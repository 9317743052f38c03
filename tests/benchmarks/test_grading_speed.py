"""The speed benchmark's answer generator (the benchmark itself is run by scripts/benchmark_grading_speed.py)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from benchmarks.grading_speed import distinct_answers
from grading.graders.concepts import span_options
from grading.graders.semantic import load_scorer
from grading.rubric import Answer, Rubric

RUBRIC = Rubric.model_validate({"exam_id": "t", "questions": [
    {"id": q, "text": "?", "max_points": 1, "granularity": 1, "reference_answer": "r"} for q in ("A", "B")]})
SEED = [Answer(answer_id=f"{q}{i}", question_id=q, text=f"Sentence one of {q}{i} is here. And a second one now.")
        for q in ("A", "B") for i in range(4)]


def test_distinct_answers_are_distinct_and_deterministic():
    answers = distinct_answers(RUBRIC, SEED, 30, seed=1)
    assert len(answers) == 30 and len({a.text for a in answers}) == 30
    assert len({a.answer_id for a in answers}) == 30
    assert {a.question_id for a in answers} == {"A", "B"}
    assert [a.text for a in distinct_answers(RUBRIC, SEED, 30, seed=1)] == [a.text for a in answers]


def test_too_few_seed_answers_is_an_error():
    with pytest.raises(ValueError, match="two non-empty"):
        distinct_answers(RUBRIC, [SEED[0], SEED[4]], 10, seed=0)
    short = [Answer(answer_id=t, question_id="A", text=t) for t in ("Yes.", "No.")]
    with pytest.raises(ValueError, match="cannot build 50 distinct"):
        distinct_answers(RUBRIC, short, 50, seed=0)


def test_variant_settings_reach_the_kg_alone_and_inside_the_hybrid(tmp_path):
    from benchmarks.grading_speed import _grader
    from inkbase.cli import compose

    cfg = compose("benchmark_grading_speed", [])
    variant = {"embedder": {"variant": "onnx-int8"},
               "kg": {"span_encoding": "pooled", "spans": {"clauses": False, "noun_chunks": False, "entities": False}}}
    kg = _grader(cfg, cfg.graders.kg, variant, tmp_path / "kg")
    hybrid = _grader(cfg, cfg.graders.hybrid, variant, tmp_path / "hybrid")
    for grader in (kg, hybrid.kg):
        assert grader.span_encoding == "pooled" and grader.embedder.variant == "onnx-int8"
        assert not grader.span_options.clauses and grader.span_options.window == 6
        assert grader.parse._pipes == ("sentencizer",)
    assert hybrid.other.embedder is hybrid.kg.embedder  # one encoder pass serves both parts
    default = _grader(cfg, cfg.graders.hybrid, {}, tmp_path / "default")  # no variant: the configured defaults
    assert default.kg.span_encoding == "separate" and default.kg.embedder.variant == "onnx-int8"
    today = _grader(cfg, cfg.graders.hybrid, dict(cfg.variants.today), tmp_path / "today")
    assert today.kg.embedder.variant == "torch"


@pytest.mark.parametrize(("variant", "preset", "expected"), [("fast", "kg_fast", ("pooled", 0.25, True)),
                                                              ("static", "kg_static", ("static", 0.35, True))])
def test_benchmark_variants_are_the_presets(tmp_path, variant, preset, expected):
    from benchmarks.grading_speed import _grader
    from inkbase.cli import compose

    cfg = compose("benchmark_grading_speed", [])
    timed = _grader(cfg, cfg.graders.hybrid, OmegaConf.to_container(cfg.variants[variant]), tmp_path / variant).kg
    preset_name = preset
    preset = compose("grade", [f"grader={preset_name}", "rubric=x", "answers=y"]).grader
    for key in ("span_encoding", "threshold", "negation_check", "direction_check", "phrase_slope"):
        assert getattr(timed, key) == preset[key], key
    assert timed.span_options == span_options(dict(preset.spans))
    assert (timed.span_encoding, timed.threshold, timed.negation_check) == expected
    hybrid = _grader(cfg, cfg.graders.hybrid, OmegaConf.to_container(cfg.variants[variant]), tmp_path / "h")
    partner = compose("grade", [f"grader=hybrid_{preset_name.removeprefix('kg_')}", "rubric=x",
                                "answers=y"]).grader.other
    assert hybrid.other.model.embedder_model == load_scorer(partner.model_path).embedder_model
