"""Grade tables: validation messages name file, row and column; the converter from grading runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from grading.analysis.io import load_grades, read_grade_table, run_sort_key, scores_to_long_csv
from inkbase.errors import InputError

SAMPLE = Path(__file__).resolve().parents[2] / "src" / "grading" / "sample_exam"

HUMAN = """student_id,item_id,points,max_points,problem_type
S01,Q1,1,2,numerical
S01,Q2,0.5,1,graphing
S02,Q1,2,2,numerical
S02,Q2,1,1,graphing
"""
AI = """student_id,item_id,run,points,max_points
S01,Q1,1,1,2
S01,Q2,1,0.5,1
S02,Q1,1,2.5,2
S02,Q2,1,1,1
S01,Q1,2,1,2
S01,Q2,2,-0.5,1
S02,Q1,2,2,2
S02,Q2,2,1,1
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(tmp_path: Path, ai: str = AI, human: str = HUMAN) -> str:
    with pytest.raises(InputError) as err:
        load_grades(write(tmp_path, "ai.csv", ai), write(tmp_path, "human.csv", human))
    return str(err.value).replace(f"{tmp_path}/", "")


def test_valid_tables_give_matrices_and_out_of_range_list(tmp_path):
    data = load_grades(write(tmp_path, "ai.csv", AI), write(tmp_path, "human.csv", HUMAN))
    assert data.students == ["S01", "S02"] and data.items == ["Q1", "Q2"] and data.runs == ["1", "2"]
    assert data.human.tolist() == [[1, 0.5], [2, 1]]
    assert data.ai["2"].tolist() == [[1, -0.5], [2, 1]]  # kept as given, never clipped
    assert data.problem_type == ["numerical", "graphing"] and data.problem == ["Q1", "Q2"]
    assert [(o["row"], o["points"], o["run"]) for o in data.out_of_range] == [(4, 2.5, "1"), (7, -0.5, "2")]


def test_single_run_without_run_column(tmp_path):
    ai = "\n".join(line.rsplit(",", 1)[0] for line in HUMAN.splitlines()) + "\n"  # drop problem_type
    data = load_grades(write(tmp_path, "ai.csv", ai), write(tmp_path, "human.csv", HUMAN))
    assert data.runs == ["1"] and data.problem_type == ["numerical", "graphing"]


def test_non_numeric_points(tmp_path):
    bad = AI.replace("S02,Q1,2,2,2", "S02,Q1,2,abc,2")
    assert error_of(tmp_path, ai=bad) == "ai.csv: row 8: points: 'abc' is not a number"


def test_missing_column(tmp_path):
    human = HUMAN.replace(",max_points", ",maximum")
    assert error_of(tmp_path, human=human) == "human.csv: column 'max_points': missing"


def test_student_missing_from_one_run(tmp_path):
    lines = AI.splitlines()
    ai = "\n".join(line for line in lines if not line.startswith("S02") or ",2," not in line[:9]) + "\n"
    assert error_of(tmp_path, ai=ai) == "ai.csv: run 2: student S02 missing (present in run 1)"


def test_duplicate_rows(tmp_path):
    ai = AI + "S01,Q2,1,1,1\n"
    assert error_of(tmp_path, ai=ai) == "ai.csv: rows 3 and 10: duplicate (student_id=S01, item_id=Q2, run=1)"
    human = HUMAN + "S02,Q1,1,2,numerical\n"
    assert error_of(tmp_path, human=human) == "human.csv: rows 4 and 6: duplicate (student_id=S02, item_id=Q1)"


def test_item_missing_for_a_student(tmp_path):
    human = "\n".join(line for line in HUMAN.splitlines() if not line.startswith("S02,Q2")) + "\n"
    assert error_of(tmp_path, human=human) == "human.csv: student S02: item Q2 missing (graded for other students)"


def test_unmatched_items_and_students(tmp_path):
    assert error_of(tmp_path, ai=AI.replace("S01,Q2,1,", "S01,Q9,1,").replace("S01,Q2,2,", "S01,Q9,2,")) \
        .startswith("ai.csv: ")  # Q9 is then missing for S02, caught inside the AI table
    ai = AI.replace("S02,", "S03,")
    assert error_of(tmp_path, ai=ai) == "ai.csv: student_id: S03 not in human.csv (1 value(s) unmatched)"
    human = HUMAN + "S03,Q1,1,2,numerical\nS03,Q2,1,1,graphing\n"
    assert error_of(tmp_path, human=human) == "human.csv: student_id: S03 not in ai.csv (1 value(s) unmatched)"


def test_max_points_must_agree(tmp_path):
    ai = AI.replace("S01,Q1,1,1,2", "S01,Q1,1,1,3")
    assert error_of(tmp_path, ai=ai) == "ai.csv: row 4: max_points: 2 differs from 3 for item Q1 (row 2)"
    ai = AI.replace(",2\n", ",4\n")
    assert error_of(tmp_path, ai=ai) == "ai.csv: row 2: max_points: 4 but human.csv has 2 for item Q1"


def test_other_row_problems(tmp_path):
    assert error_of(tmp_path, ai=AI.replace("S01,Q1,1,1,2", "S01,Q1,1,1,0")) == \
        "ai.csv: row 2: max_points: must be > 0 (got 0)"
    assert error_of(tmp_path, ai=AI.replace("S01,Q1,1,1,2", ",Q1,1,1,2")) == "ai.csv: row 2: student_id: empty"
    assert error_of(tmp_path, ai=AI.replace("S01,Q1,1,1,2", "S01,Q1,1,nan,2")) == \
        "ai.csv: row 2: points: 'nan' is not a finite number"
    assert error_of(tmp_path, human="student_id,item_id,run,points,max_points\nS01,Q1,1,1,2\n").startswith(
        "human.csv: column 'run': not allowed here")
    with pytest.raises(InputError, match="not found"):
        read_grade_table(tmp_path / "absent.csv", allow_run=True)
    with pytest.raises(InputError, match="no data rows"):
        read_grade_table(write(tmp_path, "empty.csv", "student_id,item_id,points,max_points\n"), allow_run=True)


def test_runs_sort_numerically():
    assert sorted(["10", "2", "1", "b", "a"], key=run_sort_key) == ["1", "2", "10", "a", "b"]


def test_scores_to_long_csv_on_the_sample_exam(tmp_path):
    answers = [json.loads(line) for line in (SAMPLE / "answers.jsonl").read_text().splitlines() if line.strip()]
    max_points = {q["id"]: q["max_points"] for q in json.loads((SAMPLE / "rubric.json").read_text())["questions"]}
    scores = {}
    for run in (1, 2):
        path = tmp_path / f"run{run}" / "scores.jsonl"
        path.parent.mkdir()
        with path.open("w") as fh:
            for a in answers:  # a fake grader: reference points plus a run-dependent shift
                fh.write(json.dumps({"answer_id": a["answer_id"], "question_id": a["question_id"],
                                     "points": a["reference_points"] + 0.5 * (run - 1),
                                     "max_points": max_points[a["question_id"]]}) + "\n")
        scores[str(run)] = path
    ai_csv, human_csv = scores_to_long_csv(scores, SAMPLE / "answers.jsonl", SAMPLE / "rubric.json",
                                           tmp_path / "ai.csv", tmp_path / "human.csv")
    ai, human = pd.read_csv(ai_csv, dtype={"run": str}), pd.read_csv(human_csv)
    assert len(human) == len(answers) and len(ai) == 2 * len(answers)
    assert set(human.columns) == {"student_id", "item_id", "points", "max_points", "problem_type"}
    assert set(human.problem_type) >= {"graphing"}
    data = load_grades(ai_csv, human_csv)
    assert data.runs == ["1", "2"] and len(data.students) == 20 and data.items == ["Q1", "Q2", "Q3", "Q4", "Q5"]
    assert np.allclose(data.ai["2"] - data.ai["1"], 0.5)
    assert np.allclose(data.ai["1"], data.human)
    # A run that did not score every answer is refused, naming the file.
    lines = scores["2"].read_text().splitlines()
    scores["2"].write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(InputError, match="not scored"):
        scores_to_long_csv(scores, SAMPLE / "answers.jsonl", SAMPLE / "rubric.json", tmp_path / "a.csv",
                           tmp_path / "h.csv")
