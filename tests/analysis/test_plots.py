"""Tests for metabp/plots.py: files are written and the numbers behind them are right."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import metabp
from metabp import plots
from metabp._cli import main
from metabp.exceptions import ConfigError

torch.set_num_threads(1)


def _is_png(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("c", [0.5, 2.0, -1.0])
def test_implicit_lr_of_scaled_relu_is_lr_times_c(tmp_path, c):
    out = plots.plot_implicit_lr(metabp.Scaled(c), "relu", lr=0.01, path=tmp_path / "beta.png")
    assert _is_png(out.path) and out.path.stat().st_size > 1000
    z, beta = out.data["z"], out.data["beta"]
    np.testing.assert_allclose(beta[z > 0], 0.01 * c, rtol=1e-12)
    assert np.isnan(beta[z < 0]).all()
    np.testing.assert_allclose(out.data["g"][z > 0], c)
    np.testing.assert_array_equal(out.data["dsigma"], (z > 0).astype(float))


def test_implicit_lr_of_derivative_tanh_under_relu(tmp_path):
    # g = tanh' in place of relu': beta = lr (1 - tanh^2) on z > 0
    z = torch.linspace(-3, 3, 61, dtype=torch.float64)
    out = plots.plot_implicit_lr(metabp.Derivative("tanh"), "relu", lr=0.1, path=tmp_path / "b.png", z=z,
                                 optimizer="adam")
    zz = out.data["z"]
    np.testing.assert_allclose(out.data["beta"][zz > 0], 0.1 * (1 - np.tanh(zz[zz > 0]) ** 2), rtol=1e-12)
    assert np.isnan(out.data["beta"][zz <= 0]).all()


def test_implicit_lr_smooth_activation_defined_everywhere(tmp_path):
    g = metabp.MetaNet(omega=[1.0, 0.0, 2.0, 0.5])
    out = plots.plot_implicit_lr(g, "tanh", lr=0.1, path=tmp_path / "b.png")
    zz = torch.from_numpy(out.data["z"])
    expect = 0.1 * (2 * torch.tanh(zz) + 0.5) / (1 - torch.tanh(zz) ** 2)
    np.testing.assert_allclose(out.data["beta"], expect.numpy(), rtol=1e-10)


def test_optimizer_note_says_which_case():
    assert "scale-invariant" in plots.optimizer_note("adam")
    assert "cancels" in plots.optimizer_note("adam") and "exact" not in plots.optimizer_note("adam")
    assert "SGD-like" in plots.optimizer_note("sgd")
    assert "SGD-like" in plots.optimizer_note("momentum")
    assert "exact for plain SGD" not in plots.optimizer_note(None)
    with pytest.raises(ConfigError, match="optimizer='lbfgs' is not known"):
        plots.optimizer_note("lbfgs")
    from metabp._implicit_lr import SCALE_INVARIANT
    from metabp._plot_base import SGD_LIKE
    from metabp.targets import OPTIMIZERS

    assert set(OPTIMIZERS) == SGD_LIKE | SCALE_INVARIANT  # every optimizer a target can use is classified


def test_implicit_lr_shades_only_where_g_injects_credit(tmp_path):
    # g = 0.5 + 0.5 tanh(z): about 0 for z << 0 (no credit), clearly nonzero near 0 (credit injected)
    g = metabp.MetaNet(omega=[1.0, 0.0, 0.5, 0.5])
    out = plots.plot_implicit_lr(g, "relu", lr=0.1, path=tmp_path / "b.png", optimizer="adam")
    z, gz, injected = out.data["z"], out.data["g"], out.data["injected"]
    assert not injected[z > 0].any()  # sigma' != 0 there: beta is defined
    assert injected[(z < 0) & (z > -1)].all()
    assert not injected[z < -3].any()  # g < 1% of max|g| there
    np.testing.assert_array_equal(injected, (z <= 0) & (np.abs(gz) > plots.CREDIT_TOL * np.abs(gz).max()))
    # Scaled(c) is 0 wherever relu' is 0: nothing injected
    flat = plots.plot_implicit_lr(metabp.Scaled(2.0), "relu", lr=0.1, path=tmp_path / "s.png")
    assert not flat.data["injected"].any()


def test_plot_bfunctions_and_spread(tmp_path):
    gs = {"relu'": metabp.Derivative("relu"), "sigmoid'": metabp.Derivative("sigmoid")}
    out = plots.plot_bfunctions(gs, "relu", tmp_path / "f.png")
    assert _is_png(out.path)
    np.testing.assert_allclose(out.data["sigmoid'"], 0.25 / np.cosh(out.data["z"] / 2) ** 2, rtol=1e-10)
    cands = [metabp.Scaled(c) for c in (1.0, 2.0, 3.0)]
    sp = plots.plot_bfunction_spread(cands, "relu", tmp_path / "s.png")
    assert sp.data["curves"].shape == (3, 401)
    np.testing.assert_allclose(sp.data["median"][sp.data["z"] > 0], 2.0)


def test_loss_curves_mean_and_band(tmp_path):
    out = plots.plot_loss_curves({"a": [[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]], "b": [1.0, math.nan, 0.5]},
                                 tmp_path / "l.png", logy=True)
    assert _is_png(out.path)
    np.testing.assert_allclose(out.data["a/mean"], [2.0, 3.0, 4.0])
    np.testing.assert_allclose(out.data["a/min"], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(out.data["a/max"], [3.0, 4.0, 5.0])
    assert np.isnan(out.data["b/mean"][1])


def test_search_trace_is_running_minimum(tmp_path):
    out = plots.plot_search_trace({"gp": [3.0, 2.0, math.nan, 2.5, 1.0]}, tmp_path / "t.png",
                                  reference={"plain": 2.2})
    np.testing.assert_allclose(out.data["gp"], [3.0, 2.0, 2.0, 2.0, 1.0])
    np.testing.assert_array_equal(out.data["gp/numbers"], [0, 1, 2, 3, 4])  # as metabp show counts
    out = plots.plot_search_trace({"gp": [3.0, 1.0]}, tmp_path / "t.png", numbers={"gp": [0, 4]})
    np.testing.assert_array_equal(out.data["gp/numbers"], [0, 4])
    with pytest.raises(ConfigError, match="numbers"):
        plots.plot_search_trace({"gp": [3.0, 1.0]}, tmp_path / "t.png", numbers={"gp": [0]})


def test_heldout_scatter_and_transfer(tmp_path):
    out = plots.plot_heldout_scatter([0.2, 0.21], [0.23, 0.2], tmp_path / "h.png", heldout_std=[0.01, 0.02],
                                     labels=["0", "3"],
                                     controls={"backprop": (0.22, 0.21), "lr": (None, 0.2)})
    assert _is_png(out.path)
    np.testing.assert_array_equal(out.data["heldout"], [0.23, 0.2])
    with pytest.raises(ConfigError, match="heldout"):
        plots.plot_heldout_scatter([0.2], [], tmp_path / "h.png")
    tr = plots.plot_transfer({"a": {"g": (1.0, 0.1), "backprop": (2.0, 0.1)}}, {"a": (0.5, 0.01)},
                             tmp_path / "t.png")
    assert _is_png(tr.path)
    np.testing.assert_array_equal(tr.data["ratio"], [0.5])
    np.testing.assert_array_equal(tr.data["backprop"], [2.0])


def test_many_curves_put_the_legend_below(tmp_path):
    curves = {f"m{i}": [1.0, 0.5, 0.25] for i in range(13)}
    out = plots.plot_loss_curves(curves, tmp_path / "l.png")
    assert _is_png(out.path) and len([k for k in out.data if k.endswith("/mean")]) == 13


def test_alignment_plot(tmp_path):
    out = plots.plot_alignment({"fc1.weight": [1.0, 0.9, 0.8]}, tmp_path / "a.png")
    assert _is_png(out.path)


def test_errors_name_the_argument(tmp_path):
    with pytest.raises(ConfigError, match="lr=-1"):
        plots.plot_implicit_lr(metabp.Scaled(1.0), "relu", lr=-1, path=tmp_path / "x.png")
    with pytest.raises(ConfigError, match=r"\.png"):
        plots.plot_bfunction(metabp.Scaled(1.0), "relu", tmp_path / "x.pdf")
    with pytest.raises(ConfigError, match="empty"):
        plots.plot_loss_curves({}, tmp_path / "x.png")


def test_cli_plot_implicit_lr(tmp_path, capsys):
    bfn = metabp.save(metabp.Scaled(0.5), tmp_path / "best.bfn")
    out = tmp_path / "beta.png"
    rc = main(["plot", "implicit-lr", str(bfn), "--activation", "relu", "--lr", "0.01", "-o", str(out)])
    assert rc == 0 and _is_png(out)
    text = capsys.readouterr().out
    assert "beta in [0.005, 0.005]" in text
    assert "optimizer not given" in text
    assert main(["plot", "bfunction", str(bfn), "-o", str(tmp_path / "g.png")]) == 0
    assert main(["plot", "implicit-lr", str(tmp_path / "missing.bfn")]) != 0


def test_cli_plot_reads_the_optimizer_and_lr_of_the_bfn_target(tmp_path, capsys):
    g = metabp.Scaled(0.5)
    g.meta = {"target": "gaussians-mlp3", "overrides": {"optimizer": "sgd", "lr": 0.2}}
    bfn = metabp.save(g, tmp_path / "best.bfn")
    assert main(["plot", "implicit-lr", str(bfn), "-o", str(tmp_path / "b.png")]) == 0
    text = capsys.readouterr().out
    assert "beta in [0.1, 0.1]" in text and "sgd is SGD-like" in text
    assert main(["plot", "implicit-lr", str(bfn), "--optimizer", "adam", "--lr", "0.01",
                 "-o", str(tmp_path / "b.png")]) == 0
    text = capsys.readouterr().out
    assert "beta in [0.005, 0.005]" in text and "adam is scale-invariant" in text


def test_cli_plot_draws_each_site_of_a_per_site_file(tmp_path, capsys):
    g = metabp.PerSite({"act1": metabp.Scaled(0.5), "act2": metabp.Scaled(2.0)})
    bfn = metabp.save(g, tmp_path / "g.bfn")
    assert main(["plot", "implicit-lr", str(bfn), "--lr", "0.1", "-o", str(tmp_path / "b.png")]) == 0
    out = capsys.readouterr().out
    assert "g at act1: beta in [0.05, 0.05]" in out and "g at act2: beta in [0.2, 0.2]" in out
    assert (tmp_path / "b.act1.png").stat().st_size > 1000 and (tmp_path / "b.act2.png").exists()


def test_bfunction_panels_draw_each_panel(tmp_path):
    panels = {"act1": {"g": metabp.Scaled(0.5)},
              "act2": {"g": metabp.Scaled(2.0), "h": metabp.Derivative("relu")}}
    out = plots.plot_bfunction_panels(panels, "relu", tmp_path / "p.png")
    assert float(out.data["act1/g"][-1]) == 0.5 and float(out.data["act2/g"][-1]) == 2.0
    assert set(out.data) == {"z", "act1/g", "act2/g", "act2/h"} and out.path.stat().st_size > 1000
    with pytest.raises(ConfigError, match="empty panel"):
        plots.plot_bfunction_panels({"act1": {}}, "relu", tmp_path / "q.png")


def test_cli_plot_names_a_glob_sites_png_without_its_glob_characters(tmp_path, capsys):
    g = metabp.PerSite({"act1": metabp.Scaled(0.5), "act*": metabp.Scaled(2.0)})
    bfn = metabp.save(g, tmp_path / "g.bfn")
    assert main(["plot", "bfunction", str(bfn), "-o", str(tmp_path / "b.png")]) == 0
    assert "(g at act*)" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.glob("b.*.png")) == ["b.act1.png", "b.act_.png"]
