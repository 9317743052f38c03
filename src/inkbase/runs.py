"""Run folders that describe themselves and are never overwritten.

A run folder holds ``config.yaml`` (resolved), ``overrides.yaml``, ``run.json`` (git SHA, command,
start time, package versions), the run's outputs, and ``metrics.json`` once it has finished.
Starting a run in a folder that holds a finished run, or a run with a different configuration, is
refused; starting it in a folder that holds an unfinished run with the same configuration resumes it.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from inkbase.errors import RunFolderError
from inkbase.jsonio import write_json

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "configs"
_VERSIONED = ("torch", "transformers", "sentence-transformers", "spacy", "accelerate", "inkgrade")
# Keys that may differ between the first start of a run and its resumption (paths.run_dir: the time-stamped
# default of out_dir, which resolves anew at every start).
_RESUME_IGNORED = ("out_dir", "resume")
_RESUME_IGNORED_PATHS = ("run_dir",)


def user_cache_dir() -> Path:
    """Where derived files that can be rebuilt are kept (exported models, language models):
    ``$INKGRADE_CACHE_DIR``, else the user cache dir (``platformdirs``, e.g. ``~/.cache/inkgrade``)."""
    import os

    env = os.environ.get("INKGRADE_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return platformdirs.user_cache_path("inkgrade")


def git_sha(root: Path = REPO_ROOT) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def file_digest(path: str | Path) -> str:
    """``sha256:<hex>`` of a file, or of a folder (its files' relative paths and contents, in sorted
    order), so that a run can record which weights it scored."""
    path = Path(path)
    if path.is_file():
        with path.open("rb") as f:
            return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
    if not path.is_dir():
        raise FileNotFoundError(path)
    total = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        total.update(f"{file.relative_to(path).as_posix()}\0{file_digest(file)}\n".encode())
    return "sha256:" + total.hexdigest()


@dataclass
class RunFolder:
    path: Path
    resumed: bool

    def file(self, *parts: str) -> Path:
        return self.path.joinpath(*parts)

    def finish(self, metrics: dict[str, Any]) -> Path:
        """Write ``metrics.json``, which marks the run finished."""
        out = self.path / "metrics.json"
        write_json(out, metrics)
        info = json.loads((self.path / "run.json").read_text())
        info["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json(self.path / "run.json", info)
        return out


def _comparable(cfg: dict) -> dict:
    out = {k: v for k, v in cfg.items() if k not in _RESUME_IGNORED}
    if isinstance(out.get("paths"), dict):
        out["paths"] = {k: v for k, v in out["paths"].items() if k not in _RESUME_IGNORED_PATHS}
    return out


def _task_overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except (ImportError, ValueError):
        return []


def hydra_output_dir(default: str | Path) -> Path:
    """The folder Hydra assigned to this job (differs per job in a multirun), else ``default``."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):
        return Path(default)


def start_run(out_dir: str | Path, cfg: DictConfig | dict | None = None) -> RunFolder:
    """Create (or resume) a run folder and record what produced it.

    Raises :class:`RunFolderError` if ``out_dir`` holds a finished run or one with another config.
    """
    path = Path(out_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg or {})
    resumed = False
    if (path / "run.json").exists():
        if (path / "metrics.json").exists():
            raise RunFolderError(f"{path} holds a finished run (metrics.json exists); choose a new out_dir")
        old = yaml.safe_load((path / "config.yaml").read_text()) if (path / "config.yaml").exists() else {}
        old, new = _comparable(old or {}), _comparable(resolved)
        if old != new:
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise RunFolderError(f"{path} holds an unfinished run with a different config (differs in: "
                                 f"{', '.join(changed)}); choose a new out_dir")
        resumed = True
    elif path.exists() and any(p for p in path.iterdir() if not p.name.endswith(".log")):
        raise RunFolderError(f"{path} exists and is not a run folder of this project; choose a new out_dir")
    path.mkdir(parents=True, exist_ok=True)
    if not resumed:
        (path / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))
        (path / "overrides.yaml").write_text(yaml.safe_dump(_task_overrides()))
        write_json(path / "run.json", {
            "git_sha": git_sha(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "python": platform.python_version(),
            "host": platform.node(),
            "versions": _versions(),
        })
    else:
        info = json.loads((path / "run.json").read_text())
        info.setdefault("resumed", []).append(time.strftime("%Y-%m-%dT%H:%M:%S"))
        write_json(path / "run.json", info)
    return RunFolder(path=path, resumed=resumed)


def _versions() -> dict[str, str]:
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def iter_run_folders(root: str | Path, require_metrics: bool = True) -> Iterator[Path]:
    """Yield run folders under ``root`` (those with ``run.json``; finished ones only by default)."""
    for run_json in sorted(Path(root).rglob("run.json")):
        if not require_metrics or (run_json.parent / "metrics.json").exists():
            yield run_json.parent
