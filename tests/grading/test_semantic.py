"""The semantic scorer: features, training on a tiny synthetic set, the JSON model file, the grader."""

from __future__ import annotations

import json

import numpy as np
import pytest

from grading.graders.semantic import (
    ALIGN_FEATURES,
    EXAMPLE_FEATURES,
    SCALAR_FEATURES,
    WEIGHTS_DIR,
    Examples,
    Item,
    SemanticEnsemble,
    SemanticGrader,
    SemanticModel,
    fit_semantic,
    load_scorer,
    pair_features,
    sentences,
)
from grading.rubric import Answer, Question
from inkbase.errors import ConfigError, InputError

TOPICS = [
    ("Why does ice float on water?", "Ice is less dense than liquid water.",
     ["ice has a lower density than water", "frozen water is less dense so it floats", "ice is lighter per volume"],
     ["ice is cold", "because water is wet", "the sun heats the lake"]),
    ("What does a compiler do?", "A compiler translates source code into machine code.",
     ["it converts program source into machine instructions", "translates code to machine language",
      "turns high level code into executable machine code"],
     ["it runs on a computer", "a compiler is a person", "it stores files on disk"]),
    ("What is photosynthesis?", "Plants turn light, water and carbon dioxide into sugar and oxygen.",
     ["plants use sunlight to make glucose from CO2 and water", "light energy makes sugar and releases oxygen",
      "green plants convert light into chemical energy as sugar"],
     ["plants grow in soil", "animals breathe air", "it is a kind of photograph"]),
]


def synthetic_items():
    items, targets = [], []
    for qi, (q, ref, good, bad) in enumerate(TOPICS):
        for k, text in enumerate(good + bad):
            items.append(Item(q, [ref], text, f"q{qi}", f"q{qi}-{k}"))
            targets.append(1.0 if k < len(good) else 0.0)
    return items, np.array(targets)


def test_features_have_the_documented_layout(embedder):
    items, _ = synthetic_items()
    x = pair_features(embedder, items[:2])
    assert x.shape == (2, len(SCALAR_FEATURES) + 2 * embedder.dim)
    # cos_ref of a paraphrase beats that of an unrelated answer to the same question
    bad = pair_features(embedder, [items[4]])
    assert x[0, 0] > bad[0, 0]


def test_example_features_never_include_the_answer_itself(embedder):
    items, y = synthetic_items()
    q0 = [it for it in items if it.question_id == "q0"]
    ex = {"q0": Examples([it.answer_id for it in q0], [it.answer for it in q0], y[:6])}
    x = pair_features(embedder, q0, ex, use_examples=True)
    nn_sim = x[:, len(SCALAR_FEATURES) + EXAMPLE_FEATURES.index("ex_nn_sim")]
    assert np.all(nn_sim < 0.999)  # an answer compared with itself would have cosine 1
    count = x[:, len(SCALAR_FEATURES) + EXAMPLE_FEATURES.index("ex_count")]
    assert np.allclose(count, np.log1p(5))


@pytest.mark.parametrize("binary", [True, False])
def test_trains_predicts_in_range_and_ranks_held_out_question(embedder, binary, tmp_path):
    items, y = synthetic_items()
    if not binary:
        y = np.where(y == 1, 0.9, 0.15) + np.linspace(0, 0.05, len(y))
    train = [i for i, it in enumerate(items) if it.question_id != "q2"]
    test = [i for i, it in enumerate(items) if it.question_id == "q2"]
    x = pair_features(embedder, items)
    model = fit_semantic(x[train], y[train], False, embedder.model_name, card={"trained_on": "synthetic"})
    assert model.kind == ("classification" if binary else "regression")
    pred = model.predict(x[test])
    assert np.all((pred >= 0) & (pred <= 1))
    good, bad = pred[:3], pred[3:]
    assert good.mean() > bad.mean()
    model.save(tmp_path / "m.json")
    again = SemanticModel.load(tmp_path / "m.json")
    assert np.allclose(again.predict(x[test]), pred)
    assert again.card["trained_on"] == "synthetic"


def test_grader_returns_points_on_the_granularity(embedder, tmp_path):
    items, y = synthetic_items()
    model = fit_semantic(pair_features(embedder, items), y, False, embedder.model_name)
    grader = SemanticGrader(embedder, model=model)
    q, ref, good, bad = TOPICS[0]
    question = Question(id="q0", text=q, max_points=2, granularity=0.5, reference_answer=ref)
    answers = [Answer(answer_id=str(i), question_id="q0", text=t) for i, t in enumerate([good[0], bad[2], ""])]
    res = grader.grade(question, answers)
    for r in res:
        assert 0 <= r.points <= 2 and (r.points / 0.5).is_integer()
        assert r.details["fraction"] == r.details["s_semantic"]
    assert res[0].details["fraction"] > res[1].details["fraction"]
    assert res[2].points == 0 and res[2].details["fraction"] == 0


def test_shipped_model_loads_and_grades(embedder):
    path = WEIGHTS_DIR / "semantic_semeval.json"
    assert path.is_file(), "the shipped semantic scorer is missing"
    grader = SemanticGrader(embedder, model_path="semantic_semeval.json")
    assert not grader.model.use_examples and "semeval" in grader.model.card["trained_on"]
    q, ref, good, bad = TOPICS[1]
    question = Question(id="q", text=q, max_points=1, granularity=0.25, reference_answer=ref)
    res = grader.grade(question, [Answer(answer_id="a", question_id="q", text=good[0]),
                                  Answer(answer_id="b", question_id="q", text=bad[2])])
    assert res[0].details["fraction"] > res[1].details["fraction"]


def test_bad_model_files_are_clear_errors(embedder, tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        SemanticModel.load(tmp_path / "absent.json")
    (tmp_path / "old.json").write_text(json.dumps({"feature_version": "semantic-v0"}))
    with pytest.raises(InputError, match="feature_version"):
        SemanticModel.load(tmp_path / "old.json")
    (tmp_path / "cut.json").write_text('{"feature_version": ')
    with pytest.raises(InputError, match="not JSON"):
        SemanticModel.load(tmp_path / "cut.json")


def test_grader_config_composes_and_builds(embedder):
    from grading.graders import build_grader
    from inkbase.cli import compose

    cfg = compose("grade", ["grader=semantic", "rubric=r.json", "answers=a.jsonl"])
    grader = build_grader(cfg.grader, embedder)
    assert isinstance(grader, SemanticGrader) and grader.name == "semantic"
    hybrid = compose("grade", ["grader=hybrid", "grader@grader.other=semantic", "rubric=r", "answers=a"])
    assert hybrid.grader.other._target_.endswith("SemanticGrader")


def test_sentences_cut_at_ends_and_line_breaks():
    assert sentences("It floats. Ice is less dense!  Why?\nbecause; so") == [
        "It floats.", "Ice is less dense!", "Why?", "because;", "so"]
    assert sentences("3.14 is pi") == ["3.14 is pi"]  # no cut without a space after the stop
    assert sentences("...") == ["..."]  # nothing with a word: the whole text


def test_alignment_features_find_the_reference_inside_a_longer_answer(embedder):
    q, ref = TOPICS[0][0], TOPICS[0][1]
    inside = Item(q, [ref], f"I like winter sports a lot. {ref} My friend skates on the lake.", "q0", "a")
    off = Item(q, [ref], "I like winter sports a lot. My friend skates on the lake.", "q0", "b")
    x = pair_features(embedder, [inside, off], version="semantic-v2", products=False)
    assert x.shape == (2, len(SCALAR_FEATURES) + len(ALIGN_FEATURES))
    cos_ref, align_ref, align_answer = 0, len(SCALAR_FEATURES), len(SCALAR_FEATURES) + 1
    assert x[0, align_ref] > 0.99  # the reference's one sentence is an answer sentence
    assert x[0, cos_ref] < 0.9  # the whole-answer cosine is diluted by the other sentences
    assert x[1, align_ref] < x[0, align_ref] - 0.2
    assert 0.3 < x[0, align_answer] < 0.99  # one of three answer sentences is on the reference
    # v1's scalars are the first columns of v2's; the products follow the scalars
    full = pair_features(embedder, [inside], version="semantic-v2")
    assert full.shape[1] == len(SCALAR_FEATURES) + len(ALIGN_FEATURES) + 2 * embedder.dim
    assert np.allclose(full[0, :len(SCALAR_FEATURES)], pair_features(embedder, [inside])[0, :len(SCALAR_FEATURES)])


def test_a_v2_scalar_model_saves_loads_and_grades(embedder, tmp_path):
    items, y = synthetic_items()
    x = pair_features(embedder, items, version="semantic-v2", products=False)
    model = fit_semantic(x, y, False, embedder.model_name, version="semantic-v2")
    assert model.feature_version == "semantic-v2" and not model.products
    assert model.feature_names == SCALAR_FEATURES + ALIGN_FEATURES
    model.save(tmp_path / "v2.json")
    again = SemanticModel.load(tmp_path / "v2.json")
    assert again.feature_version == "semantic-v2" and not again.products
    assert np.allclose(again.score(embedder, items), model.predict(x))
    q, ref, good, bad = TOPICS[1]
    question = Question(id="q1", text=q, max_points=1, granularity=0.25, reference_answer=ref)
    res = SemanticGrader(embedder, model=again).grade(
        question, [Answer(answer_id="g", question_id="q1", text=good[0]), Answer(answer_id="b", question_id="q1", text=bad[2])])
    assert res[0].details["fraction"] > res[1].details["fraction"]


def test_an_ensemble_scores_the_mean_of_its_members_and_round_trips(embedder, tmp_path):
    items, y = synthetic_items()
    v1 = fit_semantic(pair_features(embedder, items), y, False, embedder.model_name)
    v2 = fit_semantic(pair_features(embedder, items, version="semantic-v2", products=False), y, False,
                      embedder.model_name, version="semantic-v2")
    ens = SemanticEnsemble([v1, v2], card={"trained_on": "synthetic"})
    expected = (v1.score(embedder, items) + v2.score(embedder, items)) / 2
    assert np.allclose(ens.score(embedder, items), expected)
    ens.save(tmp_path / "ens.json")
    again = load_scorer(tmp_path / "ens.json")
    assert isinstance(again, SemanticEnsemble) and [m.feature_version for m in again.members] == [
        "semantic-v1", "semantic-v2"]
    assert np.allclose(again.score(embedder, items), expected)
    assert isinstance(load_scorer(WEIGHTS_DIR / "semantic_semeval.json"), SemanticModel)
    grader = SemanticGrader(embedder, model_path=str(tmp_path / "ens.json"))
    q, ref, good, bad = TOPICS[2]
    question = Question(id="q2", text=q, max_points=1, granularity=0.5, reference_answer=ref)
    res = grader.grade(question, [Answer(answer_id="g", question_id="q2", text=good[0]),
                                  Answer(answer_id="b", question_id="q2", text=bad[2])])
    assert res[0].details["fraction"] > res[1].details["fraction"]


def test_a_broken_ensemble_file_names_the_member_and_field(tmp_path):
    data = json.loads((WEIGHTS_DIR / "semantic_semeval.json").read_text())
    bad = dict(data, feature_version="semantic-v9")
    (tmp_path / "e.json").write_text(json.dumps({"kind": "ensemble", "members": [data, bad]}))
    with pytest.raises(InputError, match=r"members\[1\]\.feature_version"):
        load_scorer(tmp_path / "e.json")
    (tmp_path / "e2.json").write_text(json.dumps({"kind": "ensemble", "members": "semantic_semeval.json"}))
    with pytest.raises(InputError, match="members"):
        load_scorer(tmp_path / "e2.json")
    with pytest.raises(ConfigError, match="reference-only"):
        SemanticEnsemble([], card={})


def test_clipped_features_bound_the_score_of_an_input_unlike_training(embedder, tmp_path):
    items, y = synthetic_items()
    x = pair_features(embedder, items, version="semantic-v2", products=False)
    model = fit_semantic(x, y, False, embedder.model_name, version="semantic-v2")
    clipped = model.clipped_to(x)
    np.testing.assert_allclose(clipped.predict(x), model.predict(x))  # inside the training range: unchanged
    far = x[:1].copy()
    far[0, SCALAR_FEATURES.index("log_len")] = 50.0  # far longer than any training answer
    bound = x[:1].copy()
    bound[0, SCALAR_FEATURES.index("log_len")] = x[:, SCALAR_FEATURES.index("log_len")].max()
    assert clipped.predict(far)[0] == pytest.approx(clipped.predict(bound)[0])  # scored as the longest seen
    clipped.save(tmp_path / "c.json")
    again = SemanticModel.load(tmp_path / "c.json")
    assert np.allclose(again.predict(far), clipped.predict(far)) and again.clip_low is not None
    data = json.loads((tmp_path / "c.json").read_text())
    del data["clip_high"]
    (tmp_path / "half.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="clip_high"):
        SemanticModel.load(tmp_path / "half.json")
