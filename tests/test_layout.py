"""The shape of the code, held by tests: what ships, how big a module may grow, and
``train()`` as a story one screen long. (The import layering is ``lint-imports``'s.)"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from setuptools import find_packages

from tests.conftest import REPO

PRODUCT = ("checkpoints", "trainer")
MAX_MODULE_LINES = 500
MAX_TRAIN_LINES = 60


def test_the_wheel_ships_the_product_and_no_test_tooling():
    settings = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = settings["tool"]["setuptools"]["packages"]["find"]["include"]
    shipped = set(find_packages(where=str(REPO), include=include))
    assert {"checkpoints", "checkpoints.io", "checkpoints.keras", "trainer"} <= shipped
    assert not {p for p in shipped if p.split(".")[0] not in PRODUCT}, shipped
    on_disk = {
        str(init.parent.relative_to(REPO)).replace("/", ".")
        for root in PRODUCT
        for init in (REPO / root).rglob("__init__.py")
    }
    assert on_disk <= shipped  # every product package is in the wheel


def test_no_product_module_is_over_500_lines():
    sizes = {
        str(path.relative_to(REPO)): len(path.read_text().splitlines())
        for root in PRODUCT
        for path in (REPO / root).rglob("*.py")
    }
    assert sizes and {p: n for p, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_train_reads_as_a_story_of_at_most_60_lines():
    tree = ast.parse((REPO / "trainer" / "train.py").read_text())
    train = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train")
    assert train.end_lineno - train.lineno + 1 <= MAX_TRAIN_LINES


def test_train_py_stays_a_thin_entry_point():
    tree = ast.parse(Path(REPO / "train.py").read_text())
    functions = [n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    assert functions == ["main"]
