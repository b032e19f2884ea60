"""Size limits of the library's source: no module over 400 lines, no function over 60 lines.

A function's length runs from its ``def`` (decorators excluded) to its last line, docstring
included; nested functions count towards their enclosing function too. The limits apply to
``metabp/``, ``targets/`` and ``search/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("metabp", "targets", "search")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def sources() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int, int]]:
    """``(name, first line, length)`` of every function in ``source`` longer than ``limit`` lines."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit:
                found.append((node.name, node.lineno, length))
    return found


def test_no_module_over_400_lines():
    long = [f"{p.relative_to(ROOT)}: {n} lines" for p in sources()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    assert not long, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(long)


def test_no_function_over_60_lines():
    long = [f"{p.relative_to(ROOT)}:{line} {name}: {n} lines" for p in sources()
            for name, line, n in long_functions(p.read_text(encoding="utf-8"))]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


@pytest.mark.parametrize("body_lines, flagged", [(58, False), (59, True)])
def test_the_function_check_counts_def_to_last_line(body_lines, flagged):
    source = "@decorator\ndef f():\n    '''doc'''\n" + "    x = 1\n" * body_lines
    # def + docstring + body_lines: 60 lines pass, 61 do not; the decorator does not count
    assert bool(long_functions(source)) is flagged
