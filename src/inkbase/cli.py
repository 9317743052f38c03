"""Shared plumbing for the Hydra entry points in ``scripts/``.

``hydra_entry("grade")`` wraps a task function so that bad input (a malformed file, an out-of-range
config value, a run folder that must not be overwritten) ends the command with one clear line on
stderr and exit status 2 instead of a traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from inkbase.errors import ConfigError, InputError, RunFolderError
from inkbase.runs import CONFIG_DIR, REPO_ROOT


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("repo_root"):
        OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT))


def offline_by_default() -> None:
    """Without a network, hub lookups hang on retries; respect an explicit user choice, else stay offline
    unless ``INKGRADE_ONLINE=1`` is set."""
    if os.environ.get("INKGRADE_ONLINE") != "1":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def hydra_entry(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """Decorate a ``task(cfg)`` function as a Hydra main reading ``configs/<config_name>.yaml``."""
    register_resolvers()
    offline_by_default()

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        @functools.wraps(task)
        def guarded(cfg: DictConfig) -> Any:
            try:
                return task(cfg)
            except (InputError, ConfigError, RunFolderError) as err:
                print(f"error: {err}", file=sys.stderr)
                sys.exit(2)
            except OmegaConfBaseException as err:
                msg = str(err).splitlines()[0]
                key = getattr(err, "full_key", None)
                print(f"error: config: {key + ': ' if key else ''}{msg}", file=sys.stderr)
                sys.exit(2)

        return hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)(guarded)

    return decorate


def compose(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose a config without running it (tests, notebooks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return hydra_compose(config_name=config_name, overrides=overrides or [], return_hydra_config=False)
