"""Shared fixtures. Tests run offline on the CPU; tests on external data skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_EXAM = REPO_ROOT / "src" / "grading" / "sample_exam"


def external_data_dir() -> Path | None:
    """``INKGRADE_DATA_DIR`` if set, else ``<repo>/data``; None when it holds no datasets."""
    env = os.environ.get("INKGRADE_DATA_DIR")
    path = Path(env) if env else REPO_ROOT / "data"
    return path if path.is_dir() and any(path.iterdir()) else None


@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory) -> Path:
    """Recognisers exported to ONNX (htr.ctc_onnx) are cached for this test session only, not for the user."""
    path = tmp_path_factory.mktemp("inkgrade-cache")
    os.environ["INKGRADE_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = external_data_dir()
    if path is None:
        pytest.skip("external evaluation data not found (set INKGRADE_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def embedder(tmp_path_factory):
    """The packaged all-MiniLM-L6-v2, with a cache private to this test session."""
    from grading.embed import Embedder

    return Embedder(cache_dir=tmp_path_factory.mktemp("emb-cache"))


@pytest.fixture
def grade_overrides(tmp_path):
    """Writes a one-question rubric and answers to it (ids a0, a1, ...) under ``tmp_path``; returns the
    ``grade`` config overrides that grade them into ``tmp_path / "run"`` with a private cache."""
    import json

    def write(question, texts: list[str]) -> list[str]:
        rubric = tmp_path / "rubric.json"
        rubric.write_text(json.dumps({"exam_id": "t", "questions": [question.model_dump()]}))
        answers = tmp_path / "answers.jsonl"
        answers.write_text("".join(json.dumps({"answer_id": f"a{i}", "question_id": question.id, "text": t}) + "\n"
                                   for i, t in enumerate(texts)))
        return [f"rubric={rubric}", f"answers={answers}", f"out_dir={tmp_path / 'run'}",
                f"paths.cache_dir={tmp_path / 'cache'}"]

    return write
