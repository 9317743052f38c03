"""The README's results table, generated from the committed run folders under ``experiments/``.

Each ``experiments/<folder>/results.yaml`` declares the rows that folder backs::

    rows:
      - goal: "HTR on 41 real lines (goal CER < 0.30)"       # paper table / goal
        command: "`python scripts/eval_htr.py manifest=<lines>`"
        result: "ours {cer:.3f} / WER {wer:.3f}"              # str.format over the values below
        values:
          cer: "eval/real_lines/metrics.json:cer"             # JSON file relative to the folder : dotted key
          wer: "eval/real_lines/metrics.json:wer"
        runtime: "3 s, 2 CPU cores"
        chosen_on: ""  # where a setting was chosen on the data it is reported on, say so here

Folders are rendered in the order of the registry table in ``experiments/README.md`` (rows that start
with ``| `<folder>/` |``); a folder with a ``results.yaml`` that the registry does not list is an error.
The table replaces what lies between :data:`START` and :data:`END` in the top-level README.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from inkbase.errors import InputError

START = "<!-- results:start -->"
END = "<!-- results:end -->"
HEADER = ("paper table / goal", "command", "number we got", "runtime", "chosen on")
_REGISTRY_ROW = re.compile(r"^\|\s*`([\w.-]+)/`\s*\|")


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid")

    goal: str
    command: str
    result: str
    values: dict[str, str] = {}
    runtime: str
    chosen_on: str = ""


def registry_order(experiments: Path) -> list[str]:
    """Folder names in the order of the registry table of ``experiments/README.md``."""
    readme = experiments / "README.md"
    if not readme.exists():
        raise InputError(readme, "registry", "missing: it lists the folders whose results.yaml are rendered")
    return [m.group(1) for line in readme.read_text().splitlines() if (m := _REGISTRY_ROW.match(line))]


def lookup(data: Any, dotted: str) -> Any:
    """``data`` at ``dotted``; a key that itself contains dots (``KG only (t=0.7)``) is matched whole,
    the longest key first, and a number picks a list item. Raises ``KeyError(<the part not found>)``."""
    parts = dotted.split(".")
    i = 0
    while i < len(parts):
        if isinstance(data, dict):
            for j in range(len(parts), i, -1):
                key = ".".join(parts[i:j])
                if key in data:
                    data, i = data[key], j
                    break
            else:
                raise KeyError(".".join(parts[: i + 1]))
        elif isinstance(data, list) and parts[i].isdigit() and int(parts[i]) < len(data):
            data, i = data[int(parts[i])], i + 1
        else:
            raise KeyError(".".join(parts[: i + 1]))
    return data


def resolve(folder: Path, spec: str, source: Path, field: str) -> Any:
    """The value that ``spec`` (``relative/path.json:dotted.key``) names inside ``folder``."""
    path_part, sep, key = spec.partition(":")
    if not sep or not path_part or not key:
        raise InputError(source, field, f"{spec!r} is not of the form relative/path.json:dotted.key")
    path = folder / path_part
    if not path.is_file():
        raise InputError(source, field, f"{path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(path, "json", f"not valid JSON ({err.msg}, line {err.lineno})") from err
    try:
        return lookup(data, key)
    except KeyError as err:
        raise InputError(source, field, f"{path} has no key {err.args[0]!r} (looking up {key!r})") from err


def load_rows(folder: Path) -> list[list[str]]:
    """The rendered cells of every row that ``folder/results.yaml`` declares."""
    source = folder / "results.yaml"
    try:
        doc = yaml.safe_load(source.read_text())
    except yaml.YAMLError as err:
        raise InputError(source, "yaml", str(err).splitlines()[0]) from err
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list) or not doc["rows"]:
        raise InputError(source, "rows", "must be a non-empty list of rows")
    out = []
    for i, raw in enumerate(doc["rows"]):
        try:
            row = Row.model_validate(raw)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InputError(source, f"rows[{i}].{where}" if where else f"rows[{i}]", first["msg"]) from err
        values = {name: resolve(folder, spec, source, f"rows[{i}].values.{name}") for name, spec in row.values.items()}
        try:
            result = row.result.format(**values)
        except (KeyError, IndexError, ValueError, TypeError) as err:
            raise InputError(source, f"rows[{i}].result", f"cannot format {row.result!r}: {err!r}") from err
        out.append([row.goal, row.command, result, row.runtime, row.chosen_on])
    return out


def _cell(text: str) -> str:
    # A bare | would end the cell; one already escaped stays as it is.
    return re.sub(r"(?<!\\)\|", r"\\|", " ".join(text.split()))


def render(experiments: Path) -> str:
    """The Markdown table (with its markers) for every registered folder that has a results.yaml."""
    order = registry_order(experiments)
    declared = sorted(p.parent.name for p in experiments.glob("*/results.yaml"))
    unlisted = [name for name in declared if name not in order]
    if unlisted:
        raise InputError(experiments / "README.md", "registry",
                         f"{', '.join(unlisted)}/ has a results.yaml but is not listed in the registry table")
    lines = [START,
             "<!-- generated by `python scripts/report_results.py` from experiments/<folder>/results.yaml; "
             "edit those, not this table -->",
             "",
             "| " + " | ".join(HEADER) + " |",
             "|" + "---|" * len(HEADER)]
    for name in order:
        if (experiments / name / "results.yaml").exists():
            lines += ["| " + " | ".join(_cell(c) for c in cells) + " |" for cells in load_rows(experiments / name)]
    return "\n".join([*lines, "", END])


def replace_table(readme_text: str, table: str, readme: Path) -> str:
    """``readme_text`` with the region between the markers (markers included) replaced by ``table``."""
    if readme_text.count(START) != 1 or readme_text.count(END) != 1:
        raise InputError(readme, "results table", f"needs exactly one {START} and one {END} line")
    head, rest = readme_text.split(START)
    _, tail = rest.split(END)
    return head + table + tail


def diff(old: str, new: str, name: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=f"{name} (committed)", tofile=f"{name} (from experiments/)"))
