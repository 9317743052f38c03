"""Grader registry: ``grader=<name>`` selects ``configs/grader/<name>.yaml``, whose ``_target_`` is built here."""

from __future__ import annotations

import inspect
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from grading.embed import Embedder
from grading.graders.base import Grader, GradeResult

__all__ = ["Grader", "GradeResult", "build_grader"]


def build_grader(cfg: DictConfig | dict, embedder: Embedder | None = None, **shared: Any) -> Grader:
    """Instantiate a grader from its config; ``embedder`` and ``shared`` objects are passed to the
    constructor where it takes them (a hybrid grader passes them on to its parts)."""
    params = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    cls = get_class(params.pop("_target_"))
    accepted = inspect.signature(cls.__init__).parameters
    extra = {"embedder": embedder, **shared}
    params.update({k: v for k, v in extra.items() if k in accepted and k not in params})
    return cls(**params)
