"""Errors that the command-line entry points turn into one clear line (file, field, problem)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class InputError(Exception):
    """A user-supplied file is malformed. Printed as ``<file>: <field>: <problem>``."""

    def __init__(self, file: str | Path, field: str, problem: str):
        self.file = str(file)
        self.field = field
        self.problem = problem
        super().__init__(f"{self.file}: {field}: {problem}")


class ConfigError(Exception):
    """A configuration value is out of range or inconsistent. Printed as ``config: <key>: <problem>``."""

    def __init__(self, key: str, problem: str):
        self.key = key
        self.problem = problem
        super().__init__(f"config: {key}: {problem}")


class RunFolderError(Exception):
    """A run folder cannot be used (it holds a finished run or a different configuration)."""


def check_range(key: str, value: float, lo: float, hi: float) -> float:
    """Return ``value`` if ``lo <= value <= hi``; raise :class:`ConfigError` naming ``key`` otherwise."""
    if value is None or not (lo <= float(value) <= hi):
        raise ConfigError(key, f"{value!r} is outside [{lo}, {hi}]")
    return float(value)


def config_dataclass(cls: type[T], cfg: Mapping[str, Any], key: str) -> T:
    """Build the config dataclass ``cls`` from a plain or OmegaConf mapping: unknown keys are a
    :class:`ConfigError` naming ``<key>.<name>``; lists become tuples (the dataclasses' ranges)."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(cfg):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", "unknown key")
    return cls(**{k: tuple(v) if isinstance(v, list | tuple) else v for k, v in cfg.items()})
