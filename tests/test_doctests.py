"""Every docstring example (``>>>``) in ``metabp``, ``metabp.targets`` and ``metabp.search`` runs.

Modules are imported by their package names (walking ``pkgutil``), not collected by file path:
``targets/`` and ``search/`` are mapped into the ``metabp`` namespace, so pytest's
``--doctest-modules`` over the folders would import them a second time under other names.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil
import types

import pytest
import torch

PACKAGES = ["metabp", "metabp.targets", "metabp.search"]


def module_names() -> list[str]:
    names = []
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        names.append(package)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=package + "."):
            if info.name.endswith(".__main__"):  # runs the CLI when imported
                continue
            if info.name.split(".")[1] not in ("targets", "search") or package != "metabp":
                names.append(info.name)
    return sorted(set(names))


MODULES = module_names()


def test_every_package_is_walked():
    assert {"metabp._artifact", "metabp._cli", "metabp.analysis", "metabp.targets._train",
            "metabp.search._config"} <= set(MODULES)


def run_examples(module: types.ModuleType) -> tuple[int, int, str]:
    """Run every ``>>>`` example found in ``module``: (failed, attempted, failure report)."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for test in finder.find(module, module.__name__):
            runner.run(test, out=report.write)
    finally:
        torch.set_num_threads(threads)
    return runner.failures, runner.tries, report.getvalue()


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    failed, attempted, report = run_examples(importlib.import_module(name))
    assert failed == 0, f"{failed} of {attempted} examples in {name} failed:\n{report[:4000]}"


def test_a_wrong_example_is_caught():
    module = types.ModuleType("example_module")
    exec("def f():\n    \"\"\"\n    >>> 1 + 1\n    3\n    \"\"\"\n", module.__dict__)
    failed, attempted, report = run_examples(module)
    assert (failed, attempted) == (1, 1) and "Expected:\n    3\nGot:\n    2" in report
