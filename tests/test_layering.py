"""The package layers: ``metabp`` (core) <- ``metabp.targets`` <- ``metabp.search``.

Importing the core loads neither targets nor search, importing targets never loads search
(checked in fresh interpreters), and no file outside a package imports its underscore modules
(checked in the source text; tests may). Over the whole library's source: no import cycle (lazy
imports inside functions count, ``if TYPE_CHECKING:`` blocks do not), no ``globals()``, the upper
layers (targets, search, analysis, the CLI) import the core through its public names only, and
analysis has no training loop of its own (it observes ``metabp.targets.train`` through callbacks).
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
    ("import metabp.analysis", ("metabp.targets", "metabp.search")),  # imported where a function needs them
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


# --- the whole library's import graph: no cycles, counting lazy imports -------------------------

PACKAGES = {"metabp": "metabp", "metabp.targets": "targets", "metabp.search": "search"}


def library_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three packages."""
    mods = {}
    for package, folder in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            mods[".".join([package, *parts])] = path
    return mods


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imported_modules(source: str, name: str, is_package: bool) -> set[str]:
    """Every dotted name module ``name`` imports, at any depth (lazy imports inside functions too),
    relative imports resolved, ``if TYPE_CHECKING:`` blocks left out. ``from a import b`` yields
    ``a`` and ``a.b`` (b may be a submodule)."""
    tree = ast.parse(source)
    skip = _type_checking_lines(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and node.lineno not in skip:
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.lineno not in skip:
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the library modules it imports. Importing a package's face (its ``__init__``) is
    not an edge: a face only re-exports its submodules."""
    mods = library_modules()
    faces = {m for m, p in mods.items() if p.name == "__init__.py"}
    return {m: {t for t in imported_modules(p.read_text(encoding="utf-8"), m, p.name == "__init__.py")
                if t in mods and t != m and t not in faces}
            for m, p in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles (lazy imports count):\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_cycle_check_counts_lazy_imports_and_skips_type_checking():
    lazy = "def f():\n    from metabp.analysis import _b\n"
    assert imported_modules(lazy, "metabp.analysis._a", False) == {"metabp.analysis", "metabp.analysis._b"}
    typed = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ._b import X\n"
    assert imported_modules(typed, "metabp.analysis._a", False) == {"typing", "typing.TYPE_CHECKING"}
    assert imported_modules("from . import _b\n", "metabp.search", True) == {"metabp.search",
                                                                          "metabp.search._b"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# --- no globals(), and the upper layers use the core's public names only ------------------------

def _calls_globals(source: str) -> list[int]:
    return [n.lineno for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "globals"]


def test_no_globals_in_library_code():
    found = [f"{p.relative_to(ROOT)}:{line}" for p in library_modules().values()
             for line in _calls_globals(p.read_text(encoding="utf-8"))]
    assert not found, "globals() in library code (pass settings as values):\n" + "\n".join(found)


UPPER_LAYERS = ("targets", "search", "metabp/analysis", "metabp/_cli")


def test_upper_layers_import_only_the_cores_public_names():
    offenders = []
    for folder in UPPER_LAYERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            own = "metabp._cli" if folder == "metabp/_cli" else None  # the CLI's own modules
            offenders += [f"{path.relative_to(ROOT)}: {name}"
                          for name in private_imports(path.read_text(encoding="utf-8"), "metabp")
                          if own is None or not name.startswith(own)]
    assert not offenders, "private core modules imported by an upper layer:\n" + "\n".join(offenders)


# --- analysis observes training through the targets' callbacks, never trains by itself ---------

def training_loops(source: str) -> list[int]:
    """Lines of ``for``/``while`` loops whose body calls ``.backward()`` or ``.step()``."""
    found = []
    for loop in ast.walk(ast.parse(source)):
        if isinstance(loop, (ast.For, ast.While, ast.AsyncFor)):
            calls = [n for stmt in loop.body for n in ast.walk(stmt) if isinstance(n, ast.Call)]
            if any(isinstance(c.func, ast.Attribute) and c.func.attr in ("backward", "step") for c in calls):
                found.append(loop.lineno)
    return found


def test_analysis_has_no_training_loop_of_its_own():
    found = [f"{p.relative_to(ROOT)}:{line}" for p in sorted((ROOT / "metabp" / "analysis").rglob("*.py"))
             for line in training_loops(p.read_text(encoding="utf-8"))]
    assert not found, "training loops in metabp/analysis (use metabp.targets.train's callbacks):\n" + \
        "\n".join(found)
    assert training_loops("for x, y in batches:\n    loss(x, y).backward()\n    opt.step()\n") == [1]


# --- storage keys are named in one module ----------------------------------------------------------

def storage_key_literals(source: str) -> list[tuple[int, str]]:
    """String constants that spell a distinctive storage key (``metabp:<name>``, ``heldout_controls``,
    ``heldout_aulc:``) instead of naming it through ``search/_schema.py``."""
    import re

    key = re.compile(r"^(metabp:[a-z_]+|heldout_controls|heldout_aulc:)$")
    return [(n.lineno, n.value) for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and key.match(n.value)]


def test_storage_keys_are_spelled_only_in_the_schema():
    schema = ROOT / "search" / "_schema.py"
    found = [f"{p.relative_to(ROOT)}:{line} {value!r}" for p in library_modules().values() if p != schema
             for line, value in storage_key_literals(p.read_text(encoding="utf-8"))]
    assert not found, "storage keys spelled out, not taken from metabp.search.schema:\n" + "\n".join(found)
    sample = 'x = "metabp:config"\ny = "metabp: a description"\n'
    assert storage_key_literals(sample) == [(1, "metabp:config")]
