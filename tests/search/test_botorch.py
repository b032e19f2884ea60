"""search/_botorch.py: output warps and the candidates function BoTorchSampler calls."""

from __future__ import annotations

import torch

from metabp.search._botorch import GPCandidates, cap_outliers, warp_log1p


def test_warp_is_monotone_and_compresses_the_penalty():
    y = torch.tensor([[0.21], [0.22], [0.25], [0.40], [165.0]], dtype=torch.float64)
    w = warp_log1p(y)
    assert (w[1:] > w[:-1]).all() and w[0] == 0
    assert w[-1] < 10 * w[-2]  # a penalty 400x the spread ends a few units up, not 400x


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


def test_candidate_in_bounds_and_pending_points_move_it():
    x, y, bounds = _data()
    f = GPCandidates(acquisition="qlogei")
    c1 = f(x, y, None, bounds, None)
    assert c1.shape == (1, 3) and ((c1 >= -2) & (c1 <= 2)).all()
    c2 = f(x, y, None, bounds, c1)  # the first is now pending: the second must differ
    assert (c1 - c2).abs().max() > 1e-3
    assert f.seconds > 0


def test_degenerate_data_never_crash():
    x, _, bounds = _data()
    f = GPCandidates()
    for y in (torch.zeros(8, 1, dtype=torch.float64),
              torch.tensor([[float("nan")]] * 4 + [[1.0]] * 4, dtype=torch.float64)):
        c = f(x, y, None, bounds, None)
        assert c.shape == (1, 3) and torch.isfinite(c).all()
