"""The default grader's rubric-structure rules: which concept lists the hybrid weighs, lists of alternatives
with a count for full marks, how an ASAP rubric file says which it is, and zero-shot maps without a training fold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from grading.benchmarks.datasets import load_asap, parse_asap_rubric
from grading.benchmarks.run import to_scale
from grading.graders import build_grader
from grading.graders.hybrid import effective_alpha
from grading.rubric import Question
from grading.scoring import list_share
from inkbase.cli import compose
from inkbase.errors import InputError

from .test_benchmarks import write_mohler

ALTERNATIVES = Question.model_validate({
    "id": "Q1", "text": "Name ways to make the experiment repeatable.", "max_points": 3, "granularity": 1,
    "reference_answer": "State the amount of vinegar. State the container size. State the drying method. "
                        "State the rinse time.",
    "concepts": [{"id": f"k{i}", "label": label, "weight": 1} for i, label in enumerate(
        ["amount of vinegar", "container size", "drying method", "rinse time"], 1)],
    "concepts_for_full_marks": 3,
})


def test_list_share_counts_matched_concepts_up_to_the_number_for_full_marks():
    assert list_share(0.25, 4, 3) == pytest.approx(1 / 3)  # one of four listed, three earn full marks
    assert list_share(0.5, 4, 3) == pytest.approx(2 / 3)
    assert list_share(0.75, 4, 3) == 1.0
    assert list_share(1.0, 4, 3) == 1.0  # more than asked for: still full marks
    assert list_share(0.375, 8, 4) == pytest.approx(0.75)  # ASAP set 5: 3 of 8 key elements, 4 for full marks
    assert list_share(0.6, 5, None) == 0.6  # unset: Lanke et al.'s coverage


def test_kg_scores_a_list_of_alternatives_by_the_count_for_full_marks(embedder, tmp_path):
    cfg = compose("grade", ["grader=kg", "rubric=x", "answers=y", f"paths.cache_dir={tmp_path}"])
    kg = build_grader(cfg.grader, embedder)
    one, two, four = (np.array(s, np.float32) for s in ([0.9, 0.1, 0.1, 0.1], [0.9, 0.9, 0.1, 0.1], [0.9] * 4))
    assert kg.explain(ALTERNATIVES, one, [""] * 4)[0] == pytest.approx(1 / 3)
    assert kg.explain(ALTERNATIVES, two, [""] * 4)[0] == pytest.approx(2 / 3)
    assert kg.explain(ALTERNATIVES, four, [""] * 4)[0] == 1.0
    all_needed = ALTERNATIVES.model_copy(update={"concepts_for_full_marks": None})
    assert kg.explain(all_needed, two, [""] * 4)[0] == pytest.approx(0.5)


def test_more_concepts_for_full_marks_than_listed_is_refused():
    with pytest.raises(ValueError, match="concepts_for_full_marks"):
        Question.model_validate({**ALTERNATIVES.model_dump(), "concepts_for_full_marks": 5})


def test_score_level_lines_get_no_weight_in_the_hybrid():
    levels = ALTERNATIVES.model_copy(update={"concepts_from": "score_levels", "concepts_for_full_marks": None})
    assert effective_alpha(0.6, ALTERNATIVES) == 0.6
    assert effective_alpha(0.6, levels) == 0.0 and not levels.has_concept_rubric


KEY_ELEMENTS = """Rubric range: | 0-3
Prompt—Protein Synthesis
List and describe four major steps involved in protein synthesis.
Rubric for Protein Synthesis
Key Elements:
mRNA exits nucleus via nuclear pore.
mRNA travels through the cytoplasm to the ribosome.
mRNA bases are read in triplets called codons.
tRNA carrying the anticodon recognizes the codon.
Amino acids are linked together to make a protein.

Rubric:
3 points
Four key elements
2 points
Three key elements
1 point
One or two key elements
0 points
Other
"""

# A general holistic scale comes first; the item's own levels follow the list (ASAP sets 1 and 2).
ACCEPTABLE = """Rubric range: | 0-3
Prompt—Polymer
Describe two ways the student could have improved the experimental design.
Scoring Rubric for Science Open-Ended Items
Score 3
The response is an excellent answer to the question.
Score 0
The response is an unsatisfactory answer.
Rubric for Polymer
Sample Response:
Provide the before and after measurements for length.
Make sure the samples are all of the same thickness.
Perform additional trials.
Other acceptable responses

3-Point Rubric:
Score 3
The response draws a valid conclusion and describes two ways the student could have improved the design.
Score 0
The response provides little or no correct information.
"""

LEVELS_ONLY = """Rubric range: | 0-2
Prompt—Doghouse
Use the results from the experiment to describe the best paint color for the doghouse.
Rubric for Doghouse
2 points
The response chooses a color and describes how that color might affect the inside of the doghouse
--AND--
Using results from the experiment to support the description.
1 point
The response chooses a color but the results from the experiment are missing.
0 points
Little or no understanding.
"""


def write_asap(root, rubrics: dict[int, str]):
    (root / "asap_sas" / "rubrics").mkdir(parents=True)
    rows = []
    for s, text in rubrics.items():
        (root / "asap_sas" / "rubrics" / f"set{s}_ReadMeFirst.txt").write_text(text, encoding="utf-8")
        rows += [{"id": f"{s}{i}", "essay_set": s, "essay_score": i % 2, "essay_text": "an answer"} for i in range(3)]
    pd.DataFrame(rows).to_csv(root / "asap_sas" / "public_leaderboard_with_gold.csv", index=False)


def test_asap_rubric_structure_decides_how_its_lines_are_used(tmp_path):
    write_asap(tmp_path, {5: KEY_ELEMENTS, 2: ACCEPTABLE, 10: LEVELS_ONLY})
    key, acceptable, levels = (parse_asap_rubric(tmp_path / "asap_sas" / "rubrics" / f"set{s}_ReadMeFirst.txt")
                               for s in (5, 2, 10))
    assert len(key.content) == 5 and not key.from_levels and key.for_full_marks == 4
    assert len(acceptable.content) == 3 and not acceptable.from_levels
    assert acceptable.for_full_marks is None  # its top level counts no listed items
    assert levels.from_levels and levels.for_full_marks is None and levels.content[0].startswith("The response")
    q = load_asap(tmp_path, [5, 2, 10]).questions
    assert (q["5"].concepts_from, q["5"].concepts_for_full_marks) == ("rubric", 4)
    assert (q["2"].concepts_from, q["2"].concepts_for_full_marks) == ("rubric", 3)  # one listed item per point
    assert (q["10"].concepts_from, q["10"].concepts_for_full_marks) == ("score_levels", None)
    assert [effective_alpha(0.6, q[s]) for s in ("5", "2", "10")] == [0.6, 0.6, 0.0]


def test_asap_rubric_without_levels_is_named(tmp_path):
    write_asap(tmp_path, {3: "Rubric range: | 0-2\nPrompt—X\nWhy?\nRubric for X\n"})
    with pytest.raises(InputError, match="neither key content nor a top score level"):
        parse_asap_rubric(tmp_path / "asap_sas" / "rubrics" / "set3_ReadMeFirst.txt")


@pytest.mark.data
def test_real_asap_rubrics_are_read_by_their_structure(data_dir):
    q = load_asap(data_dir, [1, 2, 5, 6, 10]).questions
    assert {s: (q[s].concepts_from, q[s].concepts_for_full_marks) for s in q} == {
        "1": ("rubric", 3), "2": ("rubric", 3), "5": ("rubric", 4), "6": ("rubric", 3), "10": ("score_levels", None)}


def test_zero_shot_maps_need_no_training_fold():
    none = np.zeros(0)
    pred, fmap = to_scale("regression", "m", np.array([5.0, 5.0]), none, none, np.array([0.2, 0.9]), False)
    assert list(pred) == pytest.approx([1.0, 4.5]) and fmap == {}  # the score's own 0-5 scale
    pred, fmap = to_scale("binary", "m", np.array([1.0, 1.0]), none, none, np.array([0.49, 0.5]), False)
    assert list(pred) == [0.0, 1.0] and fmap == {"threshold": 0.5}


def test_zero_shot_maps_are_scored_on_held_out_questions(tmp_path):
    from grading.benchmarks.metrics import pearson
    from grading.benchmarks.train_semantic import run

    write_mohler(tmp_path / "data")
    metrics = run(compose("train_semantic", ["benchmark=mohler", f"data_dir={tmp_path / 'data'}", "cv_folds=3",
                                             f"out_dir={tmp_path / 'out'}", f"paths.cache_dir={tmp_path / 'cache'}"]))
    maps = metrics["cv_zero_shot_maps"]
    assert set(maps) == {"semantic", "top_anchor", "two_anchors", "scalar_features", "cosine",
                         "mean_semantic_cosine"}
    # The cosine needs no model: its r is the plain correlation of the answers' cosine with the gold.
    from grading.benchmarks.datasets import load_mohler
    from grading.embed import Embedder

    bench = load_mohler(tmp_path / "data", "mean")
    emb = Embedder(cache_dir=tmp_path / "cache")
    refs = emb.encode([bench.questions[q].reference_answer for q in bench.answers["question_id"]])
    cos = (refs * emb.encode(list(bench.answers["text"]))).sum(axis=1)
    assert maps["cosine"]["pearson_r"] == pytest.approx(pearson(cos, bench.answers["gold"] / 5), abs=1e-3)
    assert maps["semantic"]["pearson_r"] > 0.5  # paraphrases of the reference vs unrelated answers


@pytest.mark.slow  # trains on a small Mohler copy and embeds with MiniLM: about 30 s
def test_train_semantic_writes_the_default_recipe_as_an_ensemble(tmp_path):
    from grading.benchmarks.train_semantic import run
    from grading.embed import Embedder
    from grading.graders.semantic import WEIGHTS_DIR, Item, SemanticEnsemble, SemanticModel, load_scorer

    write_mohler(tmp_path / "data")
    out = tmp_path / "out"
    metrics = run(compose("train_semantic", [
        "benchmark=mohler", f"data_dir={tmp_path / 'data'}", "cv_folds=3", "zero_shot_maps=false",
        "feature_version=semantic-v2", "products=false", f"ensemble_with={WEIGHTS_DIR / 'semantic_semeval.json'}",
        f"out_dir={out}", f"paths.cache_dir={tmp_path / 'cache'}"]))
    assert metrics["feature_version"] == "semantic-v2" and metrics["products"] is False
    ens = load_scorer(out / "ensemble.json")
    new = SemanticModel.load(out / "model.json")
    assert isinstance(ens, SemanticEnsemble) and [m.feature_version for m in ens.members] == ["semantic-v1",
                                                                                              "semantic-v2"]
    emb = Embedder(cache_dir=tmp_path / "cache")
    items = [Item("What does a compiler do?", ["A compiler translates source code into machine code."], t)
             for t in ("it turns source code into machine instructions", "it is a person")]
    expected = (ens.members[0].score(emb, items) + new.score(emb, items)) / 2
    np.testing.assert_allclose(ens.score(emb, items), expected, atol=1e-6)
