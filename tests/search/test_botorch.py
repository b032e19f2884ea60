"""search/_botorch.py: output warps and the candidates function BoTorchSampler calls."""

from __future__ import annotations

import pytest
import torch

import metabp.search._botorch as engine
from metabp.exceptions import ConfigError
from metabp.search._botorch import GPCandidates, cap_outliers, warp_log1p, warp_power


def test_warp_is_monotone_and_compresses_the_penalty():
    y = torch.tensor([[0.21], [0.22], [0.25], [0.40], [165.0]], dtype=torch.float64)
    w = warp_log1p(y)
    assert (w[1:] > w[:-1]).all() and w[0] == 0
    assert w[-1] < 10 * w[-2]  # a penalty 400x the spread ends a few units up, not 400x


def test_power_warp_is_monotone_and_log_like_on_a_heavy_tail():
    heavy = torch.tensor([[v] for v in (0.1, 0.2, 0.3, 0.5, 1.0, 3.0, 10.0, 30.0, 100.0)],
                         dtype=torch.float64)
    w = warp_power(heavy)
    assert (w[1:] > w[:-1]).all()
    gaps = w[1:] - w[:-1]
    assert gaps[-1] / gaps[0] < 700 / 10  # top step / bottom step: 700 before, 10x less after
    even = torch.linspace(-1, 1, 9, dtype=torch.float64).unsqueeze(1)
    z = (even - even.mean()) / even.std()
    assert torch.allclose(warp_power(even), z, atol=0.05)  # symmetric values: nearly unchanged


def test_power_warp_degenerate():
    ones = torch.ones(5, 1, dtype=torch.float64)
    assert torch.equal(warp_power(ones), torch.zeros_like(ones))
    assert warp_power(torch.ones(1, 1, dtype=torch.float64)).shape == (1, 1)


def test_cap_outliers_keeps_order_and_replaces_nonfinite():
    y = torch.tensor([[float(i)] for i in range(1, 9)] + [[1e6], [float("inf")]], dtype=torch.float64)
    c = cap_outliers(y)
    assert torch.isfinite(c).all() and c[8] < 100 and (c[1:] >= c[:-1]).all()
    assert torch.equal(c[:8], y[:8])  # the bulk untouched


def _data(n=8, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=torch.float64) * 4 - 2
    y = -((x - 0.5) ** 2).sum(-1, keepdim=True)  # BoTorchSampler passes values to maximise
    bounds = torch.tensor([[-2.0] * d, [2.0] * d], dtype=torch.float64)
    return x, y, bounds


def _inside(c, bounds):
    return c.shape == (1, bounds.shape[1]) and torch.isfinite(c).all() and (
        (c >= bounds[0]) & (c <= bounds[1])).all()


def test_candidate_in_bounds_and_pending_points_move_it():
    x, y, bounds = _data()
    f = GPCandidates(acquisition="qlogei")
    c1 = f(x, y, None, bounds, None)
    assert _inside(c1, bounds)
    c2 = f(x, y, None, bounds, c1)  # the first is now pending: the second must differ
    assert _inside(c2, bounds) and (c1 - c2).abs().max() > 1e-3
    assert f.seconds > 0


def test_same_data_same_candidate():
    x, y, bounds = _data()
    torch.manual_seed(0)
    a = GPCandidates()(x, y, None, bounds, None)
    torch.manual_seed(1)
    b = GPCandidates()(x, y, None, bounds, None)
    assert torch.allclose(a, b, atol=1e-6)


def test_proposal_moves_towards_the_minimum():
    x, y, bounds = _data(n=12)
    c = GPCandidates()(x, y, None, bounds, None)
    assert (c - 0.5).norm() < (x[y.argmax()] - 0.5).norm() + 0.3


@pytest.mark.parametrize("y", [
    torch.zeros(8, 1, dtype=torch.float64),  # all equal
    torch.tensor([[float("nan")]] * 4 + [[1.0]] * 4, dtype=torch.float64),
    torch.tensor([[float("nan")]] * 7 + [[1.0]], dtype=torch.float64),  # one finite value
])
def test_degenerate_data_give_a_point_in_the_box(y):
    x, _, bounds = _data()
    assert _inside(GPCandidates()(x, y, None, bounds, None), bounds)


def test_fewer_than_two_points_give_a_point_in_the_box():
    x, y, bounds = _data(n=1)
    assert _inside(GPCandidates()(x, y, None, bounds, None), bounds)


def test_a_diverged_candidate_does_not_flatten_the_rest():
    """One penalty 1e9 times the spread: the proposal still goes where the good values are."""
    x, y, bounds = _data(n=12)
    y_bad = torch.cat([y, torch.tensor([[-1e9]], dtype=torch.float64)])
    x_bad = torch.cat([x, torch.tensor([[-1.9, 1.9, -1.9]], dtype=torch.float64)])
    c = GPCandidates()(x_bad, y_bad, None, bounds, None)
    assert _inside(c, bounds)
    assert (c - 0.5).norm() < (x[y.argmax()] - 0.5).norm() + 0.3


def test_unknown_acquisition_or_warp_is_an_error():
    with pytest.raises(ConfigError, match=r"acquisition='ei'.*logei, qlogei"):
        GPCandidates(acquisition="ei")
    with pytest.raises(ConfigError, match=r"warp='exp'.*log1p, power, cap"):
        GPCandidates(warp="exp")


def test_inferred_noise_path(monkeypatch):
    monkeypatch.setattr(engine, "NOISE_VAR", None)
    x, y, bounds = _data()
    model, _ = engine.fit_gp(x, y, bounds)
    assert model.likelihood.noise.item() > 0
    assert _inside(GPCandidates()(x, y, None, bounds, None), bounds)


def test_engine_settings_change_only_inside_the_block_and_name_unknown_settings():
    from metabp.search import engine_settings

    before = engine.WARP
    with engine_settings(WARP="log1p", NUM_RESTARTS=2) as current:
        assert engine.WARP == "log1p" and current["NUM_RESTARTS"] == 2
    assert engine.WARP == before
    with pytest.raises(ConfigError, match=r"engine_settings\(FOO=...\): unknown; the settings are NOISE"):
        with engine_settings(FOO=1):
            pass
