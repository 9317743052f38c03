"""The layout file (where the answer tables are) and the key file (the expected letter per cell).

Layout (written by an external tool; the format is fixed)::

    {"exam_id": "...", "alphabet": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
     "tables": [{"id": "t1", "page": 1, "box": {"x": 100, "y": 200, "width": 600, "height": 60},
                 "page_size": [1240, 1754], "role": "answers",
                 "cells": [{"item_id": "q1", "points": 1}, ...]}]}

A table is one printed row of equal cells inside ``box`` (pixels at ``page_size``), cells in reading
order; ``page`` counts from 1 within one student's script. A ``student_id`` table holds one digit per
cell. Key: ``{"<table id>": {"<item_id>": "<letter>", ...}}`` for the ``answers`` tables.

Every problem is an :class:`~inkbase.errors.InputError` naming the file and the field
(e.g. ``layout.json: tables[2].box: lies outside the page (x + width = 1300 > 1240)``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from inkbase.errors import InputError


class Box(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: float = Field(ge=0)
    y: float = Field(ge=0)
    width: float = Field(gt=0)
    height: float = Field(gt=0)


class Cell(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: str = Field(min_length=1)
    points: float = Field(ge=0)


class Table(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    page: int = Field(ge=1)
    box: Box
    page_size: tuple[float, float]
    cells: list[Cell] = Field(min_length=1)
    role: Literal["answers", "student_id"] = "answers"

    @model_validator(mode="after")
    def _inside_page(self) -> Table:
        items = [c.item_id for c in self.cells]
        if len(set(items)) != len(items):
            raise ValueError("an item_id appears twice")
        w, h = self.page_size
        if w <= 0 or h <= 0:
            raise ValueError(f"page_size {list(self.page_size)} must be positive")
        b = self.box
        if b.x + b.width > w:
            raise ValueError(f"box lies outside the page (x + width = {b.x + b.width:g} > page width {w:g})")
        if b.y + b.height > h:
            raise ValueError(f"box lies outside the page (y + height = {b.y + b.height:g} > page height {h:g})")
        return self


class Layout(BaseModel):
    model_config = ConfigDict(extra="forbid")
    exam_id: str
    alphabet: str = Field(min_length=1)
    tables: list[Table] = Field(min_length=1)

    @field_validator("alphabet")
    @classmethod
    def _alphabet(cls, value: str) -> str:
        if len(set(value)) != len(value) or not all(c.isascii() and c.isalnum() and not c.islower() for c in value):
            raise ValueError(f"{value!r}: expected distinct capital letters and/or digits")
        return value

    @model_validator(mode="after")
    def _unique(self) -> Layout:
        seen: set[str] = set()
        for t in self.tables:
            if t.id in seen:
                raise ValueError(f"table id {t.id!r} appears twice")
            seen.add(t.id)
        return self

    def table(self, table_id: str) -> Table:
        return next(t for t in self.tables if t.id == table_id)

    @property
    def pages_per_script(self) -> int:
        return max(t.page for t in self.tables)


def _field(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(file)"


def _read_json(path: Path) -> object:
    if not path.is_file():
        raise InputError(path, "(file)", "not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, "(file)", f"not valid JSON: {err}") from None


def load_layout(path: str | Path) -> Layout:
    path = Path(path)
    try:
        return Layout.model_validate(_read_json(path))
    except ValidationError as err:
        e = err.errors()[0]
        msg = e["msg"].removeprefix("Value error, ")
        raise InputError(path, _field(tuple(e["loc"])), msg) from None


def load_key(path: str | Path, layout: Layout) -> dict[str, dict[str, str]]:
    """The key, checked against ``layout``: known answer tables and items, one letter of the alphabet each.
    Items the key leaves out are read but score nothing."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise InputError(path, "(file)", "expected an object {table id: {item_id: letter}}")
    tables = {t.id: t for t in layout.tables}
    key: dict[str, dict[str, str]] = {}
    for table_id, items in data.items():
        if table_id not in tables:
            raise InputError(path, table_id, f"unknown table (layout has {', '.join(tables)})")
        if tables[table_id].role != "answers":
            raise InputError(path, table_id, "is a student_id table; only answers tables have a key")
        if not isinstance(items, dict):
            raise InputError(path, table_id, "expected an object {item_id: letter}")
        known = {c.item_id for c in tables[table_id].cells}
        for item_id, letter in items.items():
            if item_id not in known:
                raise InputError(path, f"{table_id}.{item_id}", f"unknown item of table {table_id!r}")
            if not isinstance(letter, str) or len(letter) != 1 or letter not in layout.alphabet:
                raise InputError(path, f"{table_id}.{item_id}", f"{letter!r} is not a letter of the alphabet "
                                 f"{layout.alphabet!r}")
        key[table_id] = dict(items)
    return key
