"""One b-function per site: PerSite, patching it, saving and loading it, training with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import metabp
from metabp import ArtifactError, Derivative, MetaNet, PatchError, PerSite, Scaled
from metabp.exceptions import ConfigError
from tests.core.test_artifact import _write


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))


def _grads(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    net.zero_grad()
    net(x).square().sum().backward()
    return [p.grad.clone() for p in net.parameters()]


def _manual_grads(net: nn.Sequential, x: torch.Tensor, g1, g3) -> list[torch.Tensor]:
    """Backprop by hand with g1 after layer 0 and g3 after layer 2 (eq. 1 with sigma' -> g_s)."""
    w0, b0, w2, b2, w4, b4 = (p.detach() for p in net.parameters())
    z1 = x @ w0.T + b0
    h1 = torch.relu(z1)
    z3 = h1 @ w2.T + b2
    h3 = torch.tanh(z3)
    out = h3 @ w4.T + b4
    d_out = 2 * out
    d3 = (d_out @ w4) * g3(z3)
    d1 = (d3 @ w2) * g1(z1)
    return [d1.T @ x, d1.sum(0), d3.T @ h1, d3.sum(0), d_out.T @ h3, d_out.sum(0)]


def test_each_site_backprops_its_own_g_exactly():
    net, x = _net().double(), torch.randn(5, 3, dtype=torch.float64)
    assert metabp.patch(net, PerSite({"1": Scaled(2.0), "3": Scaled(-0.5)})) == ["1", "3"]
    got = _grads(net, x)
    # Scaled(c) is c * sigma'(z): relu' = [z > 0], tanh' = 1 - tanh^2
    want = _manual_grads(net, x, lambda z: 2.0 * (z > 0).double(), lambda z: -0.5 * (1 - torch.tanh(z) ** 2))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert metabp.patched(net) == {"1": net[1]._metabp_bfn, "3": net[3]._metabp_bfn}


def test_a_dict_patches_like_a_per_site_and_a_glob_selects_several():
    a, b = _net(), _net()
    metabp.patch(a, {"1": Scaled(0.5), "3": Scaled(0.5)})
    metabp.patch(b, Scaled(0.5))
    x = torch.randn(4, 3)
    for ga, gb in zip(_grads(a, x), _grads(b, x), strict=True):
        assert torch.equal(ga, gb)
    assert list(PerSite({"*": Scaled(1.0)}).resolve(_net())) == ["1", "3"]


@pytest.mark.parametrize("functions, message", [
    ({}, "1 to 256 sites"),
    ([Scaled(1.0)], "must be a dict"),
    ({"": Scaled(1.0)}, "non-empty module name"),
    ({"act1": 2.0}, "is not a b-function"),
    ({"act1": PerSite({"a": Scaled(1.0)})}, "is not a b-function"),
])
def test_bad_per_site_is_named(functions, message):
    with pytest.raises(PatchError, match=message):
        PerSite(functions)


@pytest.mark.parametrize("meta", ["study s", [("study", "s")]])
def test_a_meta_that_is_not_a_dict_is_named(meta):
    with pytest.raises(PatchError, match=r"PerSite\(meta=.*must be a dict of provenance"):
        PerSite({"act1": Scaled(1.0)}, meta=meta)


def test_sites_that_overlap_or_miss_are_named():
    with pytest.raises(PatchError, match="both select activation '1'"):
        metabp.patch(_net(), {"1": Scaled(1.0), "*": Scaled(2.0)})
    with pytest.raises(PatchError, match="site 'act9' matches no activation"):
        metabp.patch(_net(), {"act9": Scaled(1.0)})
    with pytest.raises(PatchError, match="leave where at its default"):
        metabp.patch(_net(), {"1": Scaled(1.0)}, where="1")
    net = _net()
    with pytest.raises(PatchError, match="both select"):
        metabp.patch(net, {"1": Scaled(1.0), "*": Scaled(2.0)})
    assert metabp.patched(net) == {}  # nothing patched by a refused call


def test_round_trip_keeps_every_site_and_the_meta(tmp_path: Path):
    g = PerSite({"act1": MetaNet(2, seed=3), "act2": Derivative("leaky_relu", negative_slope=0.1),
                 "act3": Scaled(-1.5)}, meta={"study": "s"})
    back = metabp.load(metabp.save(g, tmp_path / "g.bfn", meta={"trial": 4}))
    assert isinstance(back, PerSite) and list(back) == ["act1", "act2", "act3"]
    assert back.meta == {"study": "s", "trial": 4}
    assert torch.equal(back["act1"].omega, g["act1"].omega)
    assert back["act2"].of.kwargs == {"negative_slope": 0.1} and back["act3"].c == -1.5
    z = torch.linspace(-3, 3, 101)
    for site in g:
        assert torch.equal(back[site].vjp(torch.ones_like(z), z, z, metabp.get_activation("relu")),
                           g[site].vjp(torch.ones_like(z), z, z, metabp.get_activation("relu")))


def test_one_function_at_two_sites_saves_and_loads(tmp_path: Path):
    g = MetaNet(1, seed=4)
    back = metabp.load(metabp.save({"act1": g, "act2": g}, tmp_path / "g.bfn"))
    assert torch.equal(back["act1"].omega, g.omega) and torch.equal(back["act2"].omega, g.omega)


def test_save_refuses_a_site_that_would_not_load(tmp_path: Path):
    with pytest.raises(ArtifactError, match="site 'act2'.*allowed: finite"):
        metabp.save({"act1": Scaled(1.0), "act2": Scaled(1e9)}, tmp_path / "g.bfn")
    with pytest.raises(ArtifactError, match="not saved whole"):
        metabp.save({"act1": metabp.stack([Scaled(1.0), Scaled(2.0)])}, tmp_path / "g.bfn")
    with pytest.raises(ArtifactError, match="is not a b-function"):
        metabp.save({"act1": "relu"}, tmp_path / "g.bfn")
    assert not (tmp_path / "g.bfn").exists()


OMEGA4 = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
SITE = {"site": "act1", "kind": "metanet", "config": {"hidden": 1}}


@pytest.mark.parametrize("config, tensors, message", [
    ({"sites": []}, {}, "list of 1 to 256"),
    ({"sites": "act1"}, {}, "list of 1 to 256"),
    ({"sites": [SITE], "extra": 1}, {"0.omega": OMEGA4}, "unknown"),
    ({"sites": [{"site": "act1", "kind": "metanet"}]}, {"0.omega": OMEGA4}, "exactly the fields"),
    ({"sites": [SITE, SITE]}, {"0.omega": OMEGA4, "1.omega": OMEGA4.clone()}, "each site once"),
    ({"sites": [{**SITE, "kind": "per_site"}]}, {"0.omega": OMEGA4}, "allowed: a kind of"),
    ({"sites": [SITE]}, {}, "exactly one tensor, 'omega'"),
    ({"sites": [SITE]}, {"0.omega": OMEGA4, "5.omega": OMEGA4.clone()}, "belong to no site"),
    ({"sites": [{**SITE, "kind": ["metanet"]}]}, {"0.omega": OMEGA4}, "allowed: a kind of"),
    ({"sites": [SITE]}, {"0.omega": OMEGA4, "0": OMEGA4.clone()}, "belong to no site"),
    ({"sites": [{**SITE, "config": {"hidden": 2}}]}, {"0.omega": OMEGA4}, "3\\*hidden\\+1 = 7"),
    ({"sites": [{"site": "act1", "kind": "scaled", "config": {"c": 1e9}}]}, {}, "site 'act1'"),
])
def test_every_field_of_a_per_site_file_is_checked(tmp_path: Path, config, tensors, message):
    path = _write(tmp_path / "g.bfn", "per_site", config, tensors)
    with pytest.raises(ArtifactError, match=message):
        metabp.load(path)


def test_training_with_one_g_at_each_site_equals_the_g_shared_by_where():
    from metabp.targets import get_target, train

    spec = get_target("gaussians-mlp3", epochs=3)
    g = MetaNet(2, seed=1)
    shared = train(spec, g, where="act*", seed=0)
    assert train(spec, PerSite({"act1": g, "act2": g}), seed=0).step_losses == shared.step_losses
    with pytest.raises(ConfigError, match="leave where at None"):
        train(spec, {"act1": g}, where="act1")
    with pytest.raises(ConfigError, match="bfn: PerSite.*not a b-function"):
        train(spec, {"act1": 3.0})
