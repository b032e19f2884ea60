"""Fuzzing ``metabp.search.minimize`` with generated arguments, good and bad.

Each call either works (every point in the box, as many values as trials) or raises a
``MetabpError`` whose message names what is wrong; nothing else may escape (no ``TypeError`` from
torch, no error from inside BoTorch or Optuna). Arguments come from a pool of plausible and wrong
values: None, bools, huge and negative integers, NaN/inf, strings, nested lists, tensors of odd
shapes, arbitrary objects; objectives that return numbers, NaN, inf, strings, None or tensors.
Cases: 3 tests x 25 = 75 generated calls (random sampler, 2-4 trials: cheap), plus 10 botorch
calls, fixed by ``derandomize=True``.
"""

from __future__ import annotations

import math

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from metabp.exceptions import MetabpError
from metabp.search import minimize

torch.set_num_threads(1)
FUZZ = settings(deadline=None, derandomize=True, database=None, max_examples=25,
                suppress_health_check=[HealthCheck.too_slow])

SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.sampled_from([0, 1, -1, 2, 3])
           | st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, 1e300, 0.5])
           | st.text(max_size=6) | st.sampled_from(["abc", "botorch", "random", "", "logei"]))
TENSORS = st.sampled_from([torch.tensor(1.0), torch.zeros(0), torch.ones(4), torch.ones(2, 3),
                           torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([math.nan, 1.0]),
                           torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([True, False])])
OBJECTS = st.sampled_from([object(), b"bytes", {1, 2}, (1.5,), str, print])
JUNK = st.recursive(SCALARS | TENSORS | OBJECTS, lambda inner: st.lists(inner, max_size=3), max_leaves=4)
GOOD_BOUNDS = st.sampled_from([[(0.0, 1.0)], [(-1.0, 1.0), (0.0, 2.0)], [[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]])
RETURNS = st.sampled_from([0.5, math.nan, math.inf, -math.inf, "x", None, torch.tensor(0.25),
                           torch.ones(2), [1.0], True, 1e308])


def named_only(*args, **kwargs):
    """``minimize`` works or raises a MetabpError with a message; any other exception fails."""
    try:
        out = minimize(*args, **kwargs)
    except MetabpError as exc:
        assert str(exc), f"{type(exc).__name__} without a message"
        event(type(exc).__name__)
        return None
    event("ok")
    return out


def _in_box(r, bounds) -> None:
    box = torch.as_tensor(bounds, dtype=torch.float64)
    lo, hi = (box[:, 0], box[:, 1]) if isinstance(bounds[0], tuple) else (box[0], box[1])
    assert r.xs.shape[1] == len(lo) and ((r.xs >= lo) & (r.xs <= hi)).all()


@settings(FUZZ)
@given(bounds=GOOD_BOUNDS | JUNK, n_trials=st.sampled_from([2, 3]) | JUNK, seed=st.just(0) | JUNK)
def test_bounds_trials_seed(bounds, n_trials, seed):
    r = named_only(lambda x: float(x.sum()), bounds, n_trials, seed=seed, sampler="random")
    if r is not None:
        assert len(r.values) == n_trials
        _in_box(r, bounds)


@settings(FUZZ)
@given(value=RETURNS, kw=st.dictionaries(st.sampled_from(["q", "n_initial", "log", "sampler", "acquisition"]),
                                         JUNK, max_size=2))
def test_objective_returns_and_options(value, kw):
    named_only(lambda x: value, [(0.0, 1.0), (1.0, 2.0)], 3, **{"sampler": "random", **kw})


@settings(FUZZ)
@given(f=st.sampled_from([None, 3, "f", print]) | JUNK)
def test_objective_itself(f):
    named_only(f, [(0.0, 1.0)], 2, sampler="random")


@settings(FUZZ.__class__(FUZZ, max_examples=10))
@given(values=st.lists(RETURNS, min_size=6, max_size=6), q=st.sampled_from([1, 2, 3]))
def test_botorch_on_bad_values(values, q):
    """The GP engine with non-finite or refused values among the data: a named error or a point in the box."""
    it = iter(values + [0.5] * 10)
    r = named_only(lambda x: next(it), [(0.0, 1.0), (1.0, 2.0)], 6, n_initial=2, q=q)
    if r is not None:
        _in_box(r, [(0.0, 1.0), (1.0, 2.0)])
