"""Every main config composes, with every option of every config group it uses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from inkbase.cli import compose

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MAIN = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
# Groups whose options are selected with a package path or that only make sense inside others.
SKIP_GROUPS = {"hydra", "hydra/launcher"}


def groups_of(config_name: str) -> list[str]:
    defaults = yaml.safe_load((CONFIGS / f"{config_name}.yaml").read_text()).get("defaults", [])
    out = []
    for item in defaults:
        if isinstance(item, dict):
            (key, _value), = item.items()
            key = key.replace("override ", "").replace("optional ", "").strip()
            if key.split("@")[0] not in SKIP_GROUPS and (CONFIGS / key.split("@")[0]).is_dir():
                out.append(key)  # "group" or "group@package": the override names it the same way
    return out


def script_config(script: str) -> str:
    """The main config a script in scripts/ composes (its ``hydra_entry`` name)."""
    names = re.findall(r'hydra_entry\("([^"]+)"\)', (CONFIGS.parent / "scripts" / f"{script}.py").read_text())
    assert names, f"scripts/{script}.py is not a Hydra entry point"
    return names[0]


# Groups of global deltas for one script each, chosen with `[+]<group>=<option>`.
DELTA_GROUPS = ("experiment", "ablation")


def experiment_target(option: Path) -> str:
    """Experiments are deltas for one task; each file opens with the command that launches it."""
    head = "\n".join(option.read_text().splitlines()[:6])
    found = re.search(r"scripts/(\w+)\.py", head)
    assert found, f"configs/{option.parent.name}/{option.name} does not open with its command"
    return script_config(found.group(1))


def cases():
    for name in MAIN:
        yield pytest.param(name, [], id=name)
        for group in groups_of(name):
            for option in sorted((CONFIGS / group.split("@")[0]).glob("*.yaml")):
                if group in DELTA_GROUPS:
                    continue  # composed with their own task below
                yield pytest.param(name, [f"{group}={option.stem}"], id=f"{name}:{group}={option.stem}")
    for delta in DELTA_GROUPS:
        for option in sorted((CONFIGS / delta).glob("*.yaml")):
            name = experiment_target(option)
            prefix = "" if delta in groups_of(name) else "+"
            yield pytest.param(name, [f"{prefix}{delta}={option.stem}"], id=f"{name}:{delta}={option.stem}")


@pytest.mark.parametrize("config_name, overrides", list(cases()))
def test_config_composes(config_name, overrides):
    cfg = compose(config_name, overrides)
    container = OmegaConf.to_container(cfg, resolve=False)
    assert container, config_name
    # Interpolations must resolve, except mandatory values the user supplies on the command line.
    for key in cfg:
        if not OmegaConf.is_missing(cfg, key):
            OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]


# Scripts that are not experiments: they write no run folder, so they take no Hydra config.
NOT_HYDRA = {"report_results.py"}  # rewrites README.md's results table from experiments/


def test_every_script_names_an_existing_main_config():
    for script in (CONFIGS.parent / "scripts").glob("*.py"):
        if script.name in NOT_HYDRA:
            continue
        names = re.findall(r'hydra_entry\("([^"]+)"\)', script.read_text())
        assert names, f"{script.name} is not a Hydra entry point"
        assert all(n in MAIN for n in names), f"{script.name}: no configs/{names[0]}.yaml"
