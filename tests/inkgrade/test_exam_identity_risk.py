"""Identity matching that never guesses, and the risk's two sources with their reasons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from grading.analysis.irt import IrtPrior
from grading.roster import load_roster
from inkgrade.workflow.ingest import identify
from inkgrade.workflow.risk import RiskOptions, combine, grader_uncertainty, irt_risks
from inkgrade.workflow.template import PageCode

SAMPLE_EXAM = Path(__file__).resolve().parents[2] / "src" / "grading" / "sample_exam"



@pytest.fixture(scope="module")
def roster():
    return load_roster(SAMPLE_EXAM / "roster.csv")


@pytest.mark.parametrize(("read_id", "read_name", "expected"), [
    ("SO2", "Jonas Brandt", "S02"),  # O for 0 in the ID, the name confirms
    ("S/3", "Ish Mckenzie", "S13"),  # ID ambiguous (S03 / S13), the name decides
    ("| sos", "Dylan Price ` ``-", "S08"),  # stray marks around the name are ignored
    ("", "Grace O'Neill", "S17"),
    ("S07", "", "S07"),
    ("X99", "Zed Quillfeather", None),  # not in the roster
    ("S07", "Amelia Hartley", None),  # ID and name name different students
    ("S0", "", None),  # fits S01..S09 alike, nothing else decides
    ("", "", None),
])
def test_identify_assigns_only_confident_matches(roster, read_id, read_name, expected):
    student, _score, problem = identify(read_id, read_name, roster, min_score=80, min_margin=10)
    assert student == expected
    assert bool(problem) == (expected is None)


def test_booklet_code_round_trip_and_check():
    code = PageCode()
    page = np.full((1754, 1240), 235, np.uint8)
    code.draw(page, 1234)
    assert code.read(page) == 1234
    x, y = code.squares()[3]  # flip one data square: the check squares no longer agree
    page[y:y + code.size, x:x + code.size] = 255 - page[y + 2, x + 2] + 20
    assert code.read(page) is None
    assert code.read(np.full((1754, 1240), 235, np.uint8)) is None  # no code printed


def test_grader_uncertainty_names_the_undecided_concept():
    details = {"fraction": 0.5, "threshold": 0.7,
               "matched": [{"id": "a", "label": "mass cancels", "similarity": 0.71}],
               "missing": [{"id": "b", "label": "same g", "similarity": 0.2}]}
    risk, reason = grader_uncertainty(details, 4, 0.5, RiskOptions())
    assert risk == pytest.approx(0.6 * (1 - 0.01 / 0.05))
    assert reason.startswith("grader: concept 'mass cancels' matched at similarity 0.71 (threshold 0.70)")
    clear, why = grader_uncertainty({"fraction": 1.0, "threshold": 0.7, "matched": [], "missing": []}, 4, 0.5,
                                    RiskOptions())
    assert (clear, why) == (0.0, "grader: clear-cut")


def test_irt_risk_needs_enough_students_and_flags_the_outlier():
    prior = IrtPrior(sd_log_a=1.0, sd_b=3.0, a_min=0.1, a_max=8.0, b_max=8.0, quadrature_points=41, max_iter=500)
    rng = np.random.default_rng(0)
    students, questions = [f"s{i}" for i in range(30)], ["Q1", "Q2", "Q3", "Q4"]
    ability = np.linspace(-2, 2, 30)
    scores = {(s, q): float(1 / (1 + np.exp(-(ability[i] - 0.3 * j))) > rng.uniform(0.3, 0.7))
              for i, s in enumerate(students) for j, q in enumerate(questions)}
    none, note = irt_risks(scores, students[:5], questions, prior, min_students=10)
    assert none == {} and "10 fully graded students, 5" in note
    scores[("s29", "Q1")] = 0.0  # the strongest student gets nothing on the easiest question
    risks, note = irt_risks(scores, students, questions, prior, min_students=10)
    assert note == "IRT 2PL on 30 students"
    assert max(risks, key=lambda k: risks[k][0]) == ("s29", "Q1")
    risk, reason = combine((0.1, "grader: partial credit (0.50 of the rubric)"), risks[("s29", "Q1")], 0.0)
    assert risk == pytest.approx(risks[("s29", "Q1")][0], abs=1e-4) and reason.startswith("IRT: AI gave 0.00")
