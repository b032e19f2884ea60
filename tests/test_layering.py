"""The package layers: ``metabp`` (core) <- ``metabp.targets`` <- ``metabp.search``.

Importing the core loads neither targets nor search, importing targets never loads search
(checked in fresh interpreters), and no file outside a package imports its underscore modules
(checked in the source text; tests may).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(m for m in sys.modules if m.startswith('metabp')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.split())


@pytest.mark.parametrize("statement, forbidden", [
    ("import metabp", ("metabp.targets", "metabp.search", "metabp.analysis", "metabp._cli")),
    ("import metabp.plots", ("metabp.targets", "metabp.search")),
    ("import metabp.targets", ("metabp.search",)),
])
def test_import_loads_no_higher_layer(statement, forbidden):
    loaded = _loaded_after(statement)
    assert statement.split()[-1] in loaded  # the statement ran
    bad = sorted(m for m in loaded if m.startswith(forbidden))
    assert not bad, f"{statement!r} loads {bad}"


def private_imports(source: str, package: str) -> list[str]:
    """The ``package._x`` modules that ``source`` imports (``import package._x``, ``from package._x
    import ...``, ``from package import _x``), at any depth (inside functions too)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith(package + "._")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith(package + "._"):
                found.append(node.module)
            elif node.module == package:
                found += [f"{package}.{a.name}" for a in node.names if a.name.startswith("_")]
    return found


SOURCE_DIRS = ["metabp", "targets", "search", "benchmarks", "studies", "docs"]


@pytest.mark.parametrize("package, home", [("metabp.targets", "targets"), ("metabp.search", "search")])
def test_no_private_imports_across_packages(package, home):
    offenders = []
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")) if (ROOT / folder).is_dir() else []:
            if path.is_relative_to(ROOT / home):
                continue
            for name in private_imports(path.read_text(encoding="utf-8"), package):
                offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert not offenders, f"private {package} modules imported from outside {home}/:\n" + "\n".join(offenders)


def test_the_static_check_sees_private_imports():
    source = """
from metabp.targets._train import batches
def f():
    import metabp.targets._data as d
from metabp.targets import (train,
                            _batches)
from metabp.targets import train, batches
from metabp.targetsx._y import z
"""
    assert private_imports(source, "metabp.targets") == [
        "metabp.targets._train", "metabp.targets._batches", "metabp.targets._data"]
