"""Fuzzing ``load_study`` with mutated study files.

Every generated file is either refused with a ``ConfigError`` or accepted; an accepted file must
then open as a ``Study`` (memory storage) and, when its target is small, train one candidate on
one seed without error. Nothing else may escape. Three generators, fixed by ``derandomize=True``:
byte mutations of a good file (80 cases), one value replaced anywhere by a random TOML value
(150 cases), and tables/keys added, removed or renamed (60 cases): 290 cases.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from metabp.exceptions import ConfigError
from metabp.search import Study, load_study

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib



def fuzz(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

GOOD = """
name = "fuzz"
where = "act2"
seeds = [0, 1]
device = "cpu"

[target]
preset = "gaussians-mlp3"
epochs = 2
lr = 0.1
hidden = [8, 8]

[metanet]
hidden = 1
act = "tanh"

[search]
sampler = "random"
n_initial = 2
n_trials = 3
bounds = [-2.0, 2.0]
lr = [1e-3, 1.0]
seed = 0

[validate]
seeds = [10, 11]
top_k = 2
"""
DOC = tomllib.loads(GOOD)
KEYS = [(t, k) for t, v in DOC.items() if isinstance(v, dict) for k in v] + [
    (None, k) for k, v in DOC.items() if not isinstance(v, dict)]

SCALARS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, -1, 2**31, 10**18, 2**63 - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-300, 1e300, 0.5, float("nan"), float("inf")]),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["", "cuda", "cuda:3", "bogus", "act1", "act9", "*", "fc2", "relu", "tanh", "sgd",
                     "digits-mlp", "mnist1d-mlp", "x", "memory", "/", ".", "..", "qlogei", "cmaes", "es"]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4), max_leaves=8)


def dumps(doc: dict) -> str:
    """A small TOML writer for what the strategies make (scalars, arrays, one level of tables)."""
    lines = [f"{k} = {value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines += [f"{kk} = {value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, str):
        return json.dumps(v)
    return "[" + ", ".join(value(x) for x in v) + "]"


def check(text: str | bytes) -> str:
    """Load; an accepted file must open and (small targets) train. Returns "accepted" / "refused"."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "s.toml"
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        try:
            cfg = load_study(p)
        except ConfigError:
            return "refused"
        study = Study(cfg, storage="memory")
        spec = cfg.target_spec()
        if spec.dataset == "gaussians" and spec.epochs <= 5 and len(cfg.targets) == 1:
            g = study.bfn_of(_fake_trial(cfg))
            lr = cfg.lr_bounds[0] if cfg.lr_bounds else None
            runs = study.evaluator([g], [cfg.seeds[0]], target=0, lr=lr)
            assert math.isfinite(runs[0].aulc)
        return "accepted"


def _fake_trial(cfg):
    import optuna

    params = {n: lo for n, (lo, hi) in zip(cfg.param_names, cfg.search_bounds, strict=True)}
    dists = {n: optuna.distributions.FloatDistribution(lo, hi, log=log)
             for n, (lo, hi), log in zip(cfg.param_names, cfg.search_bounds, cfg.search_log, strict=True)}
    return optuna.trial.create_trial(params=params, distributions=dists, value=1.0)


def test_the_base_file_is_accepted():
    torch.set_num_threads(1)
    assert check(GOOD) == "accepted"


@fuzz(80)
@given(st.data())
def test_byte_mutations(data):
    raw = bytearray(GOOD.encode())
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if op == "flip":
            raw[i] = data.draw(st.integers(0, 255))
        elif op == "insert":
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del raw[i:i + data.draw(st.integers(1, 10))]
        else:
            del raw[i:]
        if not raw:
            raw = bytearray(b" ")
    event(check(bytes(raw)))


@fuzz(150)
@given(st.sampled_from(KEYS), VALUES)
def test_one_value_replaced(key, new):
    doc = json.loads(json.dumps(DOC))
    table, name = key
    (doc if table is None else doc[table])[name] = new
    event(check(dumps(doc)))


@fuzz(60)
@given(st.data())
def test_tables_and_keys_added_removed_renamed(data):
    doc = json.loads(json.dumps(DOC))
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["drop-key", "drop-table", "add-key", "rename", "table-as-value"]))
        table, name = data.draw(st.sampled_from(KEYS))
        where = doc[table] if isinstance(doc.get(table), dict) else doc
        if op == "drop-key":
            where.pop(name, None)
        elif op == "drop-table" and table is not None:
            doc.pop(table, None)
        elif op == "add-key":
            where[data.draw(st.sampled_from(["seed", "seeds", "targets", "name", "lr", "k", "where",
                                             "compile", "top_k", "storage", "sampler", "population",
                                             "sigma", "step_size"]))] = data.draw(SCALARS)
        elif op == "rename" and name in where:
            where[name + data.draw(st.sampled_from(["s", "_", "x"]))] = where.pop(name)
        elif op == "table-as-value" and table is not None:
            doc[table] = data.draw(SCALARS)
    event(check(dumps(doc)))


@pytest.mark.parametrize("text", ["a = " + "[" * 5000 + "]" * 5000, "[a]\n" * 3000,
                                  "x = '" + "y" * 10**6 + "'"])
def test_pathological_files(text):
    assert check(text) == "refused"
