"""The README's results table equals what experiments/*/results.yaml renders, and the renderer names
the file and key behind a value it cannot find."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from inkbase.errors import InputError
from inkbase.results_table import END, START, lookup, render, replace_table
from inkbase.runs import REPO_ROOT


def test_readme_results_table_is_up_to_date():
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "report_results.py"), "--check"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_committed_run_folder_has_config_and_run_json():
    outputs = [*(REPO_ROOT / "experiments").rglob("metrics.json"), *(REPO_ROOT / "experiments").rglob("results.json")]
    assert outputs
    missing = sorted({str(p.parent.relative_to(REPO_ROOT)) for p in outputs
                      if not ((p.parent / "run.json").exists() and (p.parent / "config.yaml").exists())})
    assert not missing, f"run folders without config.yaml or run.json: {missing}"


def folder(tmp_path: Path, rows: list[dict], files: dict[str, object], name: str = "runs") -> Path:
    exp = tmp_path / "experiments"
    (exp / name).mkdir(parents=True)
    (exp / "README.md").write_text(f"| folder | what |\n|---|---|\n| `{name}/` | a run |\n")
    (exp / name / "results.yaml").write_text(yaml.safe_dump({"rows": rows}))
    for rel, data in files.items():
        (exp / name / rel).parent.mkdir(parents=True, exist_ok=True)
        (exp / name / rel).write_text(json.dumps(data))
    return exp


ROW = {"goal": "CER on real lines", "command": "python scripts/eval_htr.py a|b", "result": "ours {cer:.3f} / WER {wer:.2f}",
       "values": {"cer": "eval/metrics.json:cer", "wer": "eval/metrics.json:scores.wer"}, "runtime": "3 s",
       "chosen_on": "nothing"}


def test_render_formats_values_and_escapes_pipes(tmp_path):
    exp = folder(tmp_path, [ROW], {"eval/metrics.json": {"cer": 0.17779, "scores": {"wer": 0.4983}}})
    table = render(exp).splitlines()
    assert table[0] == START and table[-1] == END
    assert table[3] == "| paper table / goal | command | number we got | runtime | chosen on |"
    assert table[5] == "| CER on real lines | python scripts/eval_htr.py a\\|b | ours 0.178 / WER 0.50 | 3 s | nothing |"


def test_missing_file_names_the_file_and_the_value(tmp_path):
    exp = folder(tmp_path, [ROW], {})
    with pytest.raises(InputError) as err:
        render(exp)
    assert err.value.file.endswith("runs/results.yaml") and err.value.field == "rows[0].values.cer"
    assert "eval/metrics.json does not exist" in err.value.problem


def test_missing_key_names_the_file_and_the_key(tmp_path):
    exp = folder(tmp_path, [ROW], {"eval/metrics.json": {"cer": 0.1, "scores": {"cer": 0.2}}})
    with pytest.raises(InputError) as err:
        render(exp)
    assert err.value.field == "rows[0].values.wer"
    assert "eval/metrics.json has no key 'scores.wer'" in err.value.problem


def test_bad_row_and_unlisted_folder_are_errors(tmp_path):
    exp = folder(tmp_path, [{**ROW, "numbers": 1}], {"eval/metrics.json": {"cer": 0.1, "scores": {"wer": 0.2}}})
    with pytest.raises(InputError, match=r"rows\[0\]\.numbers"):
        render(exp)
    (exp / "README.md").write_text("no registry\n")
    with pytest.raises(InputError, match="runs/ has a results.yaml but is not listed"):
        render(exp)


def test_lookup_matches_keys_with_dots_and_list_items():
    data = {"baselines": {"KG only (t=0.7)": {"r": 0.85}}, "rows": [{"x": 1}, {"x": 2}]}
    assert lookup(data, "baselines.KG only (t=0.7).r") == 0.85
    assert lookup(data, "rows.1.x") == 2
    with pytest.raises(KeyError, match="rows.2"):
        lookup(data, "rows.2.x")


def test_replace_table_keeps_the_rest_and_needs_both_markers(tmp_path):
    text = f"intro\n{START}\nold\n{END}\noutro\n"
    assert replace_table(text, f"{START}\nnew\n{END}", tmp_path / "README.md") == f"intro\n{START}\nnew\n{END}\noutro\n"
    with pytest.raises(InputError, match="results table"):
        replace_table("no markers\n", "x", tmp_path / "README.md")
