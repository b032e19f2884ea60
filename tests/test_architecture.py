"""docs/ARCHITECTURE.md is checked against the code.

Every backticked ``metabp.…`` name imports; every one written with a signature,
``metabp.name(a, b=default, *, c=default)``, has those parameters in that order and kind with
those defaults (``inspect.signature``); every backticked path exists; and every name in the first
column of a table is one of these (fully qualified, so it is checked).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
SPAN = re.compile(r"`([^`\n]+)`")
NAME = re.compile(r"^metabp(\.\w+)*$")
PATH = re.compile(r"^[\w.-]+(/[\w.-]*)+$")


def resolve(dotted: str) -> Any:
    """The object ``dotted`` names: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def signature_problems(dotted: str, params: str) -> list[str]:
    """How the documented ``dotted(params)`` differs from the real signature ([] if it matches)."""
    doc = ast.parse(f"def f({params}): pass").body[0].args
    real = inspect.signature(resolve(dotted)).parameters
    positional = [n for n, p in real.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    problems = []
    doc_pos = [a.arg for a in doc.posonlyargs + doc.args]
    if doc_pos != positional[: len(doc_pos)]:
        problems.append(f"positional parameters {doc_pos}, the code has {positional}")
    for arg in doc.kwonlyargs:
        if arg.arg not in real or real[arg.arg].kind is not inspect.Parameter.KEYWORD_ONLY:
            problems.append(f"{arg.arg} is not a keyword-only parameter")
    if doc.kwarg and not any(p.kind is p.VAR_KEYWORD for p in real.values()):
        problems.append(f"**{doc.kwarg.arg}: the code takes no **kwargs")
    named = doc.posonlyargs + doc.args
    pairs = list(zip(named[len(named) - len(doc.defaults):], doc.defaults, strict=True))
    pairs += [(a, d) for a, d in zip(doc.kwonlyargs, doc.kw_defaults, strict=True) if d is not None]
    for arg, node in pairs:
        try:
            stated = ast.literal_eval(node)
        except ValueError:
            problems.append(f"{arg.arg}={ast.unparse(node)}: write defaults as literals")
            continue
        actual = real[arg.arg].default if arg.arg in real else "(no such parameter)"
        if actual is inspect.Parameter.empty or actual != stated or type(actual) is bool is not type(stated):
            problems.append(f"{arg.arg}={stated!r}, the code has {arg.arg}={actual!r}")
    return problems


def check_span(span: str) -> list[str]:
    """Problems with one backticked span of the page ([] for text that names nothing)."""
    head, paren, rest = span.partition("(")
    if NAME.match(head):
        try:
            resolve(head)
        except (ImportError, AttributeError) as exc:
            return [f"`{span}`: {head} does not import ({exc})"]
        if paren and rest.rstrip().endswith(")"):
            return [f"`{span}`: {p}" for p in signature_problems(head, rest.rstrip()[:-1])]
        return []
    if PATH.match(span) and not (ROOT / span).exists():
        return [f"`{span}`: no such path"]
    return []


def first_column_spans(text: str) -> list[str]:
    rows = [line.split("|")[1] for line in text.splitlines() if line.startswith("|") and "---" not in line]
    return [s for cell in rows for s in SPAN.findall(cell)]


def test_every_name_imports_and_every_signature_matches():
    text = DOC.read_text(encoding="utf-8")
    spans = SPAN.findall(text)
    assert len([s for s in spans if NAME.match(s.partition("(")[0])]) > 50  # the page names the API
    problems = [p for span in dict.fromkeys(spans) for p in check_span(span)]
    assert not problems, "docs/ARCHITECTURE.md is out of date:\n" + "\n".join(problems)


def test_tables_name_only_checked_things():
    unchecked = [s for s in first_column_spans(DOC.read_text(encoding="utf-8"))
                 if not NAME.match(s.partition("(")[0]) and not PATH.match(s)]
    assert not unchecked, f"table entries the test cannot check (write them as metabp.…): {unchecked}"


@pytest.mark.parametrize("span, problem", [
    ("metabp.MetaNet(hidden=1, act=\"tanh\", *, omega=None, seed=0, table_size=4096)",
     "table_size=4096, the code has table_size=16384"),
    ("metabp.search.DIVERGED_AULC", "does not import"),
    ("metabp.patch(model, bfn, where=\"act*\")", "where='act*', the code has where='*'"),
    ("metabp.patch(bfn, model)", "positional parameters ['bfn', 'model']"),
    ("metabp.save(bfn, path, meta=None)", "positional parameters ['bfn', 'path', 'meta']"),
    ("metabp.implicit_lr(bfn, *, lr=1.0)", "lr is not a keyword-only parameter"),
    ("metabp.Scaled(c, **kw)", "the code takes no **kwargs"),
    ("metabp.targets.train(spec, seed=x)", "seed=x: write defaults as literals"),
    ("targets/_nothing.py", "no such path"),
])
def test_the_checker_catches_drift(span, problem):
    assert any(problem in p for p in check_span(span)), check_span(span)


def test_the_checker_accepts_the_truth():
    assert check_span("metabp.MetaNet(hidden=1, act=\"tanh\", *, omega=None, seed=0, table_size=16384)") == []
    assert check_span("metabp.Derivative(name, **kwargs)") == []
    assert check_span("targets/_train.py") == []


def test_the_storage_schema_is_documented_key_by_key():
    from metabp.search import schema

    text = DOC.read_text(encoding="utf-8")
    spans = set(SPAN.findall(text))
    keys = {name: value for name, value in vars(schema).items() if name.isupper() and isinstance(value, str)}
    assert {"CONFIG", "HELDOUT_AULC", "STEP_LOSSES", "HEARTBEAT"} <= set(keys)
    missing = [f"{name} = {value!r}" for name, value in keys.items()
               if f"metabp.search.schema.{name}" not in spans and value not in spans]
    assert not missing, "storage keys docs/ARCHITECTURE.md does not name:\n" + "\n".join(missing)
