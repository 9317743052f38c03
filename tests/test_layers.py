"""The packages under ``src/`` form three layers and import only downwards:

    benchmarks          (at the repository root: benchmarks and profilers, imported by scripts and tests)
    inkgrade            (composes both: pipeline, handwritten benchmark, exam workflow)
    htr     grading     (never import each other)
    inkbase             (torch-free base: errors, run folders, JSON I/O, the Hydra entry helper)

Every ``import`` statement of every module is read with :mod:`ast`, including imports inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ALLOWED = {
    "inkbase": {"inkbase"},
    "htr": {"inkbase", "htr"},
    "grading": {"inkbase", "grading"},
    "inkgrade": {"inkbase", "htr", "grading", "inkgrade"},
}
# Packages at the repository root above every layer: they import the layers, no module under src/ imports them.
ABOVE = {"benchmarks"}
# The base stays light: nothing in it may pull in torch or a model library.
HEAVY = {"torch", "transformers", "sentence_transformers", "spacy", "cv2", "onnxruntime"}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def layer_violations(src: Path = SRC) -> list[str]:
    bad = []
    for package, allowed in ALLOWED.items():
        for path in sorted((src / package).rglob("*.py")):
            for lineno, module in imported_modules(path):
                top = module.split(".")[0]
                rel = path.relative_to(src)
                if (top in ALLOWED or top in ABOVE) and top not in allowed:
                    bad.append(f"{rel}:{lineno}: {package} imports {module}")
                if package == "inkbase" and top in HEAVY:
                    bad.append(f"{rel}:{lineno}: the base imports {module}")
    return bad


def test_every_package_under_src_is_in_a_layer():
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(ALLOWED)


def test_imports_only_point_down():
    assert layer_violations() == []


@pytest.mark.parametrize("package,module", [("htr", "grading.rubric"), ("grading", "htr.segment"),
                                            ("inkbase", "inkgrade.pipeline"), ("inkbase", "torch"),
                                            ("htr", "benchmarks.htr_speed.models"),
                                            ("inkgrade", "benchmarks.grading_speed")])
def test_the_check_catches_a_wrong_import(tmp_path, package, module):
    for name in ALLOWED:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / package / "bad.py").write_text(f"def f():\n    import {module}\n")
    assert layer_violations(tmp_path) == [f"{package}/bad.py:2: "
                                          + (f"the base imports {module}" if module == "torch"
                                             else f"{package} imports {module}")]
