"""Fuzzing the public functions of ``metabp`` with generated arguments, good and bad.

Each call either works or raises a ``MetabpError`` subclass (``ConfigError``, ``PatchError``,
``ArtifactError``) whose message names the argument; nothing else may escape (no ``TypeError``
from deep inside torch, no ``AttributeError`` on ``None``). Arguments are drawn from a pool of
plausible and wrong values: None, bools, huge and negative integers, NaN/inf, strings, nested
lists, dicts, tensors of odd shapes and dtypes, modules and arbitrary objects. Cases: 12 tests
x 25 = 300 generated calls, plus the named-error cases below, fixed by ``derandomize=True``.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch import nn

import metabp
from metabp.exceptions import ConfigError, MetabpError, PatchError

torch.set_num_threads(1)
FUZZ = settings(deadline=None, derandomize=True, database=None, max_examples=25,
                suppress_health_check=[HealthCheck.too_slow])

SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.sampled_from([0, 1, -1, 2, 3, 16, 10**9]) | st.floats()
           | st.sampled_from([math.nan, math.inf, -math.inf, 1e300, 0.5])
           | st.text(max_size=8) | st.sampled_from(["*", "1", "act*", "relu", "tanh", "fa", "", "bogus"]))
TENSORS = st.sampled_from([torch.tensor(1.0), torch.zeros(0), torch.ones(4), torch.ones(2, 3),
                           torch.tensor([1, 2]), torch.tensor([math.nan, 1.0]),
                           torch.ones(4, dtype=torch.float64), torch.tensor([True, False])])
OBJECTS = st.sampled_from([object(), nn.Linear(2, 2), nn.ReLU(), b"bytes", {1, 2}, (1.5,), str, print])
JUNK = st.recursive(
    SCALARS | TENSORS | OBJECTS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
    max_leaves=4)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))


def named_only(fn, *args, **kwargs):
    """Call ``fn``; a MetabpError is fine (its message names something), any other exception fails."""
    try:
        out = fn(*args, **kwargs)
    except MetabpError as exc:
        assert str(exc), f"{type(exc).__name__} without a message"
        event(f"{fn.__name__}: {type(exc).__name__}")
        return None
    event(f"{fn.__name__}: ok")
    return out


def bfns() -> st.SearchStrategy:
    return st.sampled_from([metabp.Scaled(0.5), metabp.Derivative("tanh"), metabp.MetaNet(1, seed=2)]) | JUNK


@settings(FUZZ)
@given(model=st.just("net") | JUNK, bfn=bfns(), where=JUNK)
def test_patch(model, bfn, where):
    net = _net() if model == "net" else model
    if named_only(metabp.patch, net, bfn, where) is not None:
        net(torch.randn(2, 3, requires_grad=True)).sum().backward()


@settings(FUZZ)
@given(model=st.just("net") | JUNK, where=JUNK)
def test_unpatch(model, where):
    net = _net() if model == "net" else model
    if model == "net":
        metabp.patch(net, metabp.Scaled(0.5))
    named_only(metabp.unpatch, net, where)


@settings(FUZZ)
@given(model=st.just("net") | JUNK, mode=st.sampled_from(["bp", "fa", "sign", "frsf", "brsf", "dfa"]) | JUNK,
       where=st.just("*") | JUNK, kw=st.dictionaries(
           st.sampled_from(["seed", "scale", "sparsity", "output_dim", "output"]), JUNK, max_size=3))
def test_feedback(model, mode, where, kw):
    net = _net() if model == "net" else model
    if named_only(metabp.feedback, net, mode, where, **kw) is not None:
        net(torch.randn(2, 3)).sum().backward()


@settings(FUZZ)
@given(hidden=st.sampled_from([1, 2]) | JUNK, kw=st.dictionaries(
    st.sampled_from(["act", "omega", "seed", "table_size"]), JUNK, max_size=3))
def test_metanet(hidden, kw):
    args = (hidden,)
    g = named_only(metabp.MetaNet, *args, **kw)
    if g is not None:
        assert torch.isfinite(g.table.values).all(), f"MetaNet(*{args}, **{kw}) has a non-finite table"


@settings(FUZZ)
@given(name=st.sampled_from(["leaky_relu", "elu", "gelu", "softplus", "relu"]) | JUNK,
       kw=st.dictionaries(st.sampled_from(["negative_slope", "alpha", "approximate", "beta", "x"]),
                          JUNK, max_size=2))
def test_derivative_and_get_activation(name, kw):
    g = named_only(metabp.Derivative, name, **kw)
    if g is not None:
        g(torch.linspace(-3, 3, 7))
    act = named_only(metabp.get_activation, name, **kw)
    if act is not None:
        act.derivative(torch.linspace(-3, 3, 7))


@settings(FUZZ)
@given(c=JUNK)
def test_scaled(c):
    g = named_only(metabp.Scaled, c)
    if g is not None:
        assert math.isfinite(g.c)


@settings(FUZZ)
@given(bfn=bfns(), path=st.just("ok") | JUNK, meta=st.none() | JUNK)
def test_save(bfn, path, meta):
    with tempfile.TemporaryDirectory() as d:
        target = Path(d) / "g.bfn" if path == "ok" else path
        if named_only(metabp.save, bfn, target, meta=meta) is not None:
            assert metabp.load(target).kind == bfn.kind


@settings(FUZZ)
@given(path=JUNK)
def test_load(path):
    named_only(metabp.load, path)


@settings(FUZZ)
@given(bfn=bfns(), activation=st.sampled_from(["relu", "tanh"]) | JUNK, lr=JUNK,
       z=st.none() | TENSORS | JUNK)
def test_implicit_lr(bfn, activation, lr, z):
    named_only(metabp.implicit_lr, bfn, activation, lr, z)


@settings(FUZZ)
@given(items=st.lists(bfns(), max_size=3) | JUNK)
def test_stack(items):
    named_only(metabp.stack, items)


@settings(FUZZ)
@given(model=st.just("net") | JUNK, where=st.just("1") | JUNK, kw=st.dictionaries(
    st.sampled_from(["num_classes", "hidden", "seed"]), JUNK, max_size=2))
def test_synthetic_gradients(model, where, kw):
    net = _net() if model == "net" else model
    named_only(metabp.synthetic_gradients, net, where, **kw)


@settings(FUZZ)
@given(opt=st.just("sgd") | JUNK)
def test_batch_manhattan(opt):
    inner = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1) if opt == "sgd" else opt
    named_only(metabp.BatchManhattan, inner)


# --- the cases that were unnamed before, with the messages they now give ---
@pytest.mark.parametrize("where, text", [
    (None, "where=None: must be a module name, a glob such as 'act*', an integer index, or a non-empty list"),
    (1.5, "where=1.5: must be"),
    (True, "where=True: True is not a name, glob or index"),
    ([], "where=[]: must be"),
    (["1", None], "where=['1', None]: None is not a name, glob or index"),
    ([["1"]], "where=[['1']]: ['1'] is not a name, glob or index"),
])
def test_where_errors_name_where(where, text):
    for fn in (lambda: metabp.patch(_net(), metabp.Scaled(0.5), where), lambda: metabp.unpatch(_net(), where),
               lambda: metabp.feedback(_net(), "fa", where)):
        with pytest.raises(PatchError) as info:
            fn()
        assert text in str(info.value)


def test_where_true_is_not_index_one():
    net = _net()
    with pytest.raises(PatchError, match="where=True"):
        metabp.patch(net, metabp.Scaled(0.5), True)
    assert metabp.patched(net) == {}


@pytest.mark.parametrize("kw, text", [
    ({"lr": math.nan}, "implicit_lr(lr=nan): must be a finite number"),
    ({"lr": True}, "implicit_lr(lr=True): must be a finite number"),
    ({"lr": "0.1"}, "implicit_lr(lr='0.1'): must be a finite number"),
    ({"activation": "bogus"}, "activation='bogus' is not known"),
    ({"activation": 3}, "activation=3 is not known"),
    ({"z": [0.0, 1.0]}, "implicit_lr(z=[0.0, 1.0]): must be None or a floating-point tensor"),
    ({"z": torch.tensor([1, 2])}, "implicit_lr(z=tensor([1, 2])): must be None or a floating-point tensor"),
])
def test_implicit_lr_errors(kw, text):
    with pytest.raises(ConfigError) as info:
        metabp.implicit_lr(metabp.Scaled(0.5), **kw)
    assert text in str(info.value)
    with pytest.raises(ConfigError, match=r"implicit_lr\(bfn='g'\): must be a b-function"):
        metabp.implicit_lr("g")


def test_implicit_lr_values_are_unchanged_by_the_checks():
    z = torch.tensor([-1.0, 0.5, 2.0])
    beta = metabp.implicit_lr(metabp.Scaled(0.5), "tanh", lr=2, z=z)
    assert torch.allclose(beta, torch.ones(3))


# --- calls that hypothesis found (longer runs than CI's) escaping as plain TypeErrors ---
@pytest.mark.parametrize("call", [
    pytest.param(lambda: metabp.feedback(_net(), "dfa", output=[]), id="feedback-dfa-output-list"),
    pytest.param(lambda: metabp.stack(torch.tensor(1.0)), id="stack-0d-tensor"),
    pytest.param(lambda: metabp.stack(3), id="stack-int"),
])
def test_found_by_fuzzing(call):
    with pytest.raises(MetabpError):
        call()


def test_numpy_integers_are_indices():
    import numpy as np

    assert metabp.patch(_net(), metabp.Scaled(0.5), np.int64(-1)) == ["3"]
    assert metabp.patch(_net(), metabp.Scaled(0.5), [np.int32(0), "3"]) == ["1", "3"]
    with pytest.raises(PatchError, match=r"where=(np\.)?True_?: must be"):
        metabp.patch(_net(), metabp.Scaled(0.5), np.bool_(True))
