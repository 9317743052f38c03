"""Run records: the weights digest a run can record, and resuming despite a new time-stamped default out_dir."""

from __future__ import annotations

import hashlib

import pytest

from inkbase.errors import RunFolderError
from inkbase.runs import file_digest, start_run


def test_file_digest_is_the_sha256_of_the_file(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights")
    assert file_digest(weights) == "sha256:" + hashlib.sha256(b"weights").hexdigest()


def test_folder_digest_changes_with_any_file_and_its_name(tmp_path):
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "sub" / "w.bin").write_bytes(b"a")
    first = file_digest(model)
    assert first == file_digest(model) and first.startswith("sha256:")
    (model / "sub" / "w.bin").write_bytes(b"b")
    second = file_digest(model)
    assert second != first
    (model / "sub" / "w.bin").rename(model / "w.bin")
    assert file_digest(model) not in (first, second)


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        file_digest(tmp_path / "absent")


def test_resume_ignores_the_time_stamped_run_dir_but_not_other_paths(tmp_path):
    run = tmp_path / "run"
    start_run(run, {"n": 1, "paths": {"run_dir": "outputs/x/2026-01-01_00-00-00", "cache_dir": "c"}})
    again = start_run(run, {"n": 1, "paths": {"run_dir": "outputs/x/2026-01-02_00-00-00", "cache_dir": "c"}})
    assert again.resumed
    with pytest.raises(RunFolderError, match="differs in: paths"):
        start_run(run, {"n": 1, "paths": {"run_dir": "outputs/x/2026-01-02_00-00-00", "cache_dir": "d"}})
