"""Rubric/answer validation, run folders, rounding and the grade entry point."""

from __future__ import annotations

import copy
import json
import runpy
import sys
from pathlib import Path

import pytest

from grading.rubric import load_answers, load_rubric
from grading.scoring import round_points, to_points
from inkbase.errors import ConfigError, InputError, RunFolderError, check_range
from inkbase.jsonio import JsonlAppender, read_jsonl
from inkbase.runs import start_run

REPO = Path(__file__).resolve().parents[1]

RUBRIC = {
    "exam_id": "t",
    "questions": [{
        "id": "q1", "text": "Why do a feather and a hammer fall together on the Moon?", "max_points": 2,
        "granularity": 0.5, "problem_type": "explanation",
        "reference_answer": "Without air resistance every object has the same gravitational acceleration "
                            "because the mass cancels.",
        "concepts": [{"id": "c1", "label": "no air resistance", "weight": 1},
                     {"id": "c2", "label": "mass cancels", "weight": 1, "synonyms": ["independent of mass"]}],
        "edges": [{"source": "c1", "relation": "causes", "target": "c2"}],
    }],
}


def write(tmp_path: Path, name: str, obj) -> Path:
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def mutated(fn):
    data = copy.deepcopy(RUBRIC)
    fn(data)
    return data


@pytest.mark.parametrize("mutate, field, problem", [
    (lambda d: d["questions"][0]["concepts"][0].update(weight=-1), "questions[0].concepts[0].weight", "greater than"),
    (lambda d: d["questions"][0].pop("max_points"), "questions[0].max_points", "missing"),
    (lambda d: d["questions"][0]["edges"][0].update(target="c9"), "questions[0].edges[0].target", "unknown concept"),
    (lambda d: d["questions"][0].update(granularity=0.3), "questions[0].granularity", "does not divide"),
    (lambda d: d.pop("exam_id"), "exam_id", "missing"),
])
def test_malformed_rubric_names_file_and_field(tmp_path, mutate, field, problem):
    path = write(tmp_path, "rubric.json", mutated(mutate))
    with pytest.raises(InputError) as err:
        load_rubric(path)
    assert err.value.file == str(path)
    assert err.value.field == field
    assert problem in err.value.problem


def test_broken_json_names_position(tmp_path):
    path = write(tmp_path, "rubric.json", '{"exam_id": "x", "questions": [}')
    with pytest.raises(InputError, match=r"rubric.json: line 1 column \d+: invalid JSON"):
        load_rubric(path)


def test_answers_validation(tmp_path):
    rubric = load_rubric(write(tmp_path, "rubric.json", RUBRIC))
    good = write(tmp_path, "a.jsonl", '{"answer_id": 1, "question_id": "q1", "text": "x", "extra": 3}\n')
    answers = load_answers(good, rubric)
    assert answers[0].answer_id == "1" and answers[0].extra == {"extra": 3}
    cases = {
        '{"answer_id": "a", "question_id": "q7", "text": "x"}\n': "line 1: question_id",
        '{"answer_id": "a", "question_id": "q1"}\n': "line 1: text",
        '{"answer_id": "a", "question_id": "q1", "text": "x"}\n{"answer_id": "a", "question_id": "q1", "text": "y"}\n':
            "line 2: answer_id",
        '{"answer_id": "a", "question_id": "q1", "text": "x"}\n{oops\n': "line 2",
    }
    for content, field in cases.items():
        with pytest.raises(InputError) as err:
            load_answers(write(tmp_path, "bad.jsonl", content), rubric)
        assert err.value.field == field


def test_to_points_rounds_half_up_and_clamps():
    assert to_points(0.5, 2, 0.5) == 1.0
    assert to_points(0.3125, 4, 0.25) == 1.25  # 1.25 exactly
    assert to_points(0.33, 2, 0.5) == 0.5      # 0.66 -> 0.5
    assert to_points(0.38, 2, 0.5) == 1.0      # 0.76 -> 1.0 (half-up at 0.75)
    assert to_points(1.7, 3, 1) == 3 and to_points(-0.2, 3, 1) == 0
    assert round_points(2.6, 5, 0.5) == 2.5


def test_check_range():
    assert check_range("alpha", 0.6, 0, 1) == 0.6
    with pytest.raises(ConfigError, match="config: alpha: 1.5 is outside"):
        check_range("alpha", 1.5, 0, 1)


def test_run_folder_never_overwrites_and_resumes(tmp_path):
    out = tmp_path / "run"
    folder = start_run(out, {"a": 1, "out_dir": str(out)})
    assert not folder.resumed and (out / "config.yaml").exists() and (out / "run.json").exists()
    again = start_run(out, {"a": 1, "out_dir": str(out)})
    assert again.resumed
    with pytest.raises(RunFolderError, match="different config"):
        start_run(out, {"a": 2, "out_dir": str(out)})
    folder.finish({"x": 1})
    with pytest.raises(RunFolderError, match="finished run"):
        start_run(out, {"a": 1, "out_dir": str(out)})
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not a run folder"):
        start_run(foreign, {})


def test_jsonl_appender_drops_a_torn_last_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"a": 1}\n{"a": 2')
    assert read_jsonl(path) == [{"a": 1}]
    with JsonlAppender(path) as out:
        out.write({"a": 3})
    assert read_jsonl(path) == [{"a": 1}, {"a": 3}]


def run_grade(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """``scripts/grade.py`` with these arguments in this process (Hydra and the error handling as on the
    command line, without starting a new interpreter); returns the exit status and stderr."""
    monkeypatch.setattr(sys, "argv", ["grade.py", *args])
    capsys.readouterr()
    try:
        runpy.run_path(str(REPO / "scripts" / "grade.py"), run_name="__main__")
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


def test_grade_script_end_to_end_and_bad_input(tmp_path, monkeypatch, capsys):
    rubric = write(tmp_path, "rubric.json", RUBRIC)
    answers = tmp_path / "answers.jsonl"
    answers.write_text("\n".join(json.dumps(a) for a in [
        {"answer_id": "a1", "question_id": "q1", "text": "There is no air on the Moon so the mass cancels out."},
        {"answer_id": "a2", "question_id": "q1", "text": ""},
        {"answer_id": "a3", "question_id": "q1", "text": "The hammer is heavier so it lands first."},
    ]) + "\n")
    out = tmp_path / "out"
    status, err = run_grade(monkeypatch, capsys, f"rubric={rubric}", f"answers={answers}", "grader=similarity",
                            f"out_dir={out}", f"paths.cache_dir={tmp_path / 'cache'}")
    assert status == 0, err
    rows = read_jsonl(out / "scores.jsonl")
    assert [r["answer_id"] for r in rows] == ["a1", "a2", "a3"]
    for r in rows:
        assert {"answer_id", "question_id", "points", "max_points", "matched", "missing"} <= set(r)
        assert 0 <= r["points"] <= r["max_points"] and (r["points"] / 0.5).is_integer()
    assert rows[1]["points"] == 0
    assert rows[0]["points"] > rows[2]["points"]
    assert json.loads((out / "metrics.json").read_text())["n_answers"] == 3
    # a finished run folder is never overwritten
    status, err = run_grade(monkeypatch, capsys, f"rubric={rubric}", f"answers={answers}", f"out_dir={out}")
    assert status == 2 and "finished run" in err
    # malformed rubric: one line naming file and field, no traceback
    bad = write(tmp_path, "bad.json", mutated(lambda d: d["questions"][0]["concepts"][1].update(weight=-2)))
    status, err = run_grade(monkeypatch, capsys, f"rubric={bad}", f"answers={answers}", f"out_dir={tmp_path / 'o2'}")
    assert status == 2
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"error: {bad}: questions[0].concepts[1].weight")


def test_interrupted_grading_resumes(tmp_path):
    from grading.embed import Embedder
    from grading.grade import grade_answers
    from grading.graders.similarity import SimilarityGrader
    from grading.rubric import Answer

    rubric = load_rubric(write(tmp_path, "rubric.json", RUBRIC))
    answers = [Answer(answer_id=f"a{i}", question_id="q1", text=f"the mass cancels {i}") for i in range(5)]
    scores = tmp_path / "scores.jsonl"
    grader = SimilarityGrader(Embedder(cache_dir=tmp_path / "c"))
    grade_answers(grader, rubric, answers[:2], scores, progress=False)

    class Counting(SimilarityGrader):
        seen: list[str] = []

        def grade(self, question, batch):
            self.seen.extend(a.answer_id for a in batch)
            return super().grade(question, batch)

    counting = Counting(grader.embedder)
    rows = grade_answers(counting, rubric, answers, scores, progress=False)
    assert counting.seen == ["a2", "a3", "a4"]
    assert [r["answer_id"] for r in rows] == [f"a{i}" for i in range(5)]


def test_write_bytes_replaces_whole_files_and_leaves_no_temp_file_on_failure(tmp_path, monkeypatch):
    import os

    from inkbase.jsonio import write_bytes

    target = tmp_path / "sub" / "model.bin"
    write_bytes(target, b"first")
    write_bytes(target, b"second version")
    assert target.read_bytes() == b"second version"

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_bytes(target, b"third")
    assert target.read_bytes() == b"second version"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.bin"]
