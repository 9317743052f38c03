"""``scripts/review.py`` as a real server: a killed server loses nothing it acknowledged, and it will not
listen on a non-loopback address without a token."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from inkbase.cli import compose
from inkbase.errors import ConfigError
from inkgrade.review.serve import is_loopback, resolve_token
from inkgrade.store import ExamStore

REPO = Path(__file__).resolve().parents[3]


def test_sigkill_loses_nothing_acknowledged(exam, tmp_path, review_server):
    exam_dir, _ = exam
    proc, url = review_server(exam_dir, tmp_path / "run")
    items = httpx.get(url + "/api/items", params={"question": "Q2"}).json()
    acknowledged = {}
    for item, points in zip(items[:3], (1.0, 2.5, 0.0), strict=True):
        res = httpx.post(f"{url}/api/items/{item['answer_id']}", json={"points": points, "version": item["version"]},
                         headers={"X-Inkgrade-Reviewer": "kill-test"})
        assert res.status_code == 200
        acknowledged[item["answer_id"]] = points
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=20)
    assert proc.returncode == -signal.SIGKILL
    with ExamStore.open(exam_dir) as store:
        for answer_id, points in acknowledged.items():
            item = store.item(answer_id)
            assert (item.points, item.status, item.version) == (points, "reviewed", 2)
            assert [(a["who"], a["new_points"]) for a in store.audit(answer_id)] == [("kill-test", points)]
    assert not (tmp_path / "run" / "metrics.json").exists() and (tmp_path / "run" / "run.json").is_file()


def test_refuses_a_public_address_without_a_token(exam, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "INKGRADE_REVIEW_TOKEN"}
    env["PYTHONPATH"] = str(REPO / "src")
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "review.py"), f"exam_dir={exam[0]}", "host=0.0.0.0",
                          f"out_dir={tmp_path / 'run'}", "warm_up=false"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2
    assert "error: config: token: host 0.0.0.0 is reachable from other machines" in res.stderr
    assert not (tmp_path / "run" / "run.json").exists()


def test_token_from_config_or_environment(monkeypatch):
    monkeypatch.delenv("INKGRADE_REVIEW_TOKEN", raising=False)
    local = compose("review", ["exam_dir=x"])
    assert resolve_token(local) is None
    public = compose("review", ["exam_dir=x", "host=0.0.0.0"])
    with pytest.raises(ConfigError, match="token"):
        resolve_token(public)
    assert resolve_token(compose("review", ["exam_dir=x", "host=0.0.0.0", "token=abcdefgh12"])) == "abcdefgh12"
    with pytest.raises(ConfigError, match="shorter than 8"):
        resolve_token(compose("review", ["exam_dir=x", "host=0.0.0.0", "token=abc"]))
    monkeypatch.setenv("INKGRADE_REVIEW_TOKEN", "from-the-environment")
    assert resolve_token(public) == "from-the-environment"
    assert [is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "127.0.0.2", "0.0.0.0", "10.0.0.1", "host")] == [
        True, True, True, True, False, False, False]


def test_missing_store_is_one_clear_line(tmp_path):
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "review.py"), f"exam_dir={tmp_path / 'none'}",
                          f"out_dir={tmp_path / 'run'}", "warm_up=false"], cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO / "src")}, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "exam.sqlite: not found" in res.stderr
