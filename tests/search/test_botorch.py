"""search/_botorch.py and _warps.py: output warps, the cached posterior, the proposer and its settings."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from metabp.exceptions import ConfigError
from metabp.search import EngineSettings
from metabp.search._botorch import CachedGP, Proposer, fit_gp
from metabp.search._warps import cap_outliers, warp_log1p, warp_power


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
    y = -((x - 0.5) ** 2).sum(-1, keepdim=True)  # the proposer maximises
    bounds = torch.tensor([[-2.0] * d, [2.0] * d], dtype=torch.float64)
    return x, y, bounds


def _inside(c, bounds):
    return c.shape == (1, bounds.shape[1]) and torch.isfinite(c).all() and (
        (c >= bounds[0]) & (c <= bounds[1])).all()


@pytest.mark.parametrize("changes", [{}, {"kernel": "rbf", "outputscale": False, "noise_var": 1e-4}])
def test_cached_posterior_equals_botorchs(changes):
    x, y, bounds = _data(n=20)
    model, _ = fit_gp(x, y, bounds, settings=EngineSettings(**changes))
    gp = CachedGP.of(model)
    test = torch.rand(7, 3, dtype=torch.float64)
    post = model.posterior(test)
    mean, var = gp.mean_var(test)
    assert torch.allclose(mean, post.mean.squeeze(-1), atol=1e-8)
    assert torch.allclose(var, post.variance.squeeze(-1), atol=1e-8)


def test_a_pending_point_is_believed_at_the_posterior_mean():
    x, y, bounds = _data(n=20)
    gp = CachedGP.of(fit_gp(x, y, bounds)[0])
    p = torch.tensor([[0.3, 0.6, 0.2]], dtype=torch.float64)
    mean0, var0 = gp.mean_var(p)
    mean1, var1 = gp.with_pending(p).mean_var(p)
    assert torch.allclose(mean0, mean1, atol=1e-6) and var1 < 2e-4 < var0  # about the noise, 1e-4


@pytest.mark.parametrize("q_form", [False, True])
def test_candidate_in_bounds_and_pending_points_move_it(q_form):
    x, y, bounds = _data()
    f = Proposer(q_form=q_form)
    c1 = f(x, y, bounds)
    assert _inside(c1, bounds)
    c2 = f(x, y, bounds, c1)  # the first is now pending: the second must differ
    assert _inside(c2, bounds) and (c1 - c2).abs().max() > 1e-3
    assert f.seconds > 0


def test_same_data_same_candidate():
    x, y, bounds = _data()
    torch.manual_seed(0)
    a = Proposer()(x, y, bounds)
    torch.manual_seed(1)
    b = Proposer()(x, y, bounds)
    assert torch.allclose(a, b, atol=1e-6)


def test_warm_started_fit_proposes_what_a_cold_fit_proposes():
    x, y, bounds = _data(n=16)
    warm = Proposer()
    warm(x[:15], y[:15], bounds)  # fitted once: the next fit starts from these hyperparameters
    a = warm(x, y, bounds)
    b = Proposer(settings=EngineSettings(warm_start=False))(x, y, bounds)
    assert (a - b).abs().max() < 0.02 * 4  # within 2% of the box width


def test_proposal_moves_towards_the_minimum():
    x, y, bounds = _data(n=12)
    c = Proposer()(x, y, bounds)
    assert (c - 0.5).norm() < (x[y.argmax()] - 0.5).norm() + 0.3


@pytest.mark.parametrize("y", [
    torch.zeros(8, 1, dtype=torch.float64),  # all equal
    torch.tensor([[float("nan")]] * 4 + [[1.0]] * 4, dtype=torch.float64),
    torch.tensor([[float("nan")]] * 7 + [[1.0]], dtype=torch.float64),  # one finite value
    torch.tensor([[float("inf")]] * 3 + [[float("-inf")]] + [[1.0]] * 4, dtype=torch.float64),
])
def test_degenerate_data_give_a_point_in_the_box(y):
    x, _, bounds = _data()
    assert _inside(Proposer()(x, y, bounds), bounds)


def test_nan_parameters_are_dropped():
    x, y, bounds = _data(n=10)
    x[2, 1] = float("nan")
    pending = torch.tensor([[float("nan"), 0.0, 0.0], [0.1, 0.2, 0.3]], dtype=torch.float64)
    assert _inside(Proposer()(x, y, bounds, pending), bounds)


def test_fewer_than_two_points_give_a_point_in_the_box():
    x, y, bounds = _data(n=1)
    assert _inside(Proposer()(x, y, bounds), bounds)


def test_a_diverged_candidate_does_not_flatten_the_rest():
    """One penalty 1e9 times the spread: the proposal still goes where the good values are."""
    x, y, bounds = _data(n=12)
    y_bad = torch.cat([y, torch.tensor([[-1e9]], dtype=torch.float64)])
    x_bad = torch.cat([x, torch.tensor([[-1.9, 1.9, -1.9]], dtype=torch.float64)])
    c = Proposer()(x_bad, y_bad, bounds)
    assert _inside(c, bounds)
    assert (c - 0.5).norm() < (x[y.argmax()] - 0.5).norm() + 0.3


def test_bad_settings_are_errors():
    with pytest.raises(ConfigError, match=r"warp='exp'.*log1p, power, cap"):
        EngineSettings(warp="exp")
    with pytest.raises(ConfigError, match=r"num_restarts=0.*integer >= 1"):
        EngineSettings(num_restarts=0)
    with pytest.raises(ConfigError, match=r"noise_var=2.*0 < noise_var < 1"):
        EngineSettings(noise_var=2)
    with pytest.raises(ConfigError, match=r"local_starts=-1.*integer >= 0"):
        EngineSettings(local_starts=-1)
    with pytest.raises(ConfigError, match=r"tr_length=-0.5.*>= 0 \(0: off\)"):
        EngineSettings(tr_length=-0.5)
    with pytest.raises(ConfigError, match=r"kernel='periodic'.*choose rbf or matern"):
        EngineSettings(kernel="periodic")
    with pytest.raises(ConfigError, match=r"ls_prior='flat'.*choose dim_scaled or optuna"):
        EngineSettings(ls_prior="flat")
    with pytest.raises(ConfigError, match=r"EngineSettings\(fast_fit='false'\): choose True or False"):
        EngineSettings(fast_fit="false")  # a non-empty string would have read as True
    with pytest.raises(ConfigError, match=r"EngineSettings\(FOO=...\): unknown; the settings are noise_var"):
        EngineSettings().replace(FOO=1)
    with pytest.raises(ConfigError, match=r"engine=.*EngineSettings"):
        Proposer(settings={"warp": "cap"})


def test_settings_are_a_frozen_value():
    s = EngineSettings()
    changed = s.replace(warp="log1p", num_restarts=2)
    assert (s.warp, changed.warp, changed.num_restarts) == ("power", "log1p", 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.warp = "cap"


def test_inferred_noise_path():
    x, y, bounds = _data()
    settings = EngineSettings(noise_var=None)
    model, _ = fit_gp(x, y, bounds, settings=settings)
    assert model.likelihood.noise.item() > 0
    assert _inside(Proposer(settings=settings)(x, y, bounds), bounds)


def test_the_fixed_noise_is_the_models():
    x, y, bounds = _data()
    for noise in (1e-6, 1e-4):
        model, _ = fit_gp(x, y, bounds, settings=EngineSettings(noise_var=noise))
        assert torch.allclose(model.likelihood.noise, torch.full((len(x),), noise, dtype=torch.float64))


@pytest.mark.parametrize("changes", [{"local_starts": 32}, {"tr_length": 0.5}, {"local_starts": 0}])
def test_local_starts_and_trust_region_propose_in_the_box(changes):
    x, y, bounds = _data(n=12)
    pending = x[:2] * 0.5
    c = Proposer(settings=EngineSettings(**changes))(x, y, bounds, pending)
    assert _inside(c, bounds)
    assert (c - 0.5).norm() < (x[y.argmax()] - 0.5).norm() + 0.3


@pytest.mark.parametrize(("kernel", "outputscale"), [("rbf", False), ("matern", False), ("matern", True)])
def test_plain_torch_objective_equals_gpytorchs(kernel, outputscale):
    """``_mll.neg_log_posterior`` is minus ExactMarginalLogLikelihood (priors included, the output
    scale's Gamma(2, 1) too) at the same hyperparameters, and its fit finds the lengthscales and
    marginal likelihood of fit_gpytorch_mll."""
    from gpytorch.mlls import ExactMarginalLogLikelihood

    from metabp.search._mll import neg_log_posterior

    x, y, bounds = _data(n=20)
    slow = EngineSettings(kernel=kernel, fast_fit=False, ls_prior="dim_scaled", outputscale=outputscale)
    fits = [fit_gp(x, y, bounds, settings=s)[0] for s in (slow, slow.replace(fast_fit=True))]
    mlls = []
    for model in fits:
        model.train()
        mlls.append(float(ExactMarginalLogLikelihood(model.likelihood, model)(
            model(*model.train_inputs), model.train_targets)))
        base = model.covar_module.base_kernel if outputscale else model.covar_module
        theta = torch.cat([base.lengthscale.reshape(-1), model.mean_module.constant.reshape(1)]
                          + ([model.covar_module.outputscale.reshape(1)] if outputscale else []))
        ours, _ = neg_log_posterior(theta, model.train_inputs[0], model.train_targets,
                                    model.likelihood.noise, kernel == "matern")
        assert abs(-float(ours) - mlls[-1]) < 1e-9
    # the same optimum up to L-BFGS-B's tolerance (GPyTorch optimises a softplus of the output scale)
    assert abs(mlls[0] - mlls[1]) < (1e-5 if outputscale else 1e-6)
    ls = [(m.covar_module.base_kernel if outputscale else m.covar_module).lengthscale for m in fits]
    assert torch.allclose(ls[0], ls[1], rtol=1e-2 if outputscale else 1e-3)


@pytest.mark.parametrize(("matern", "scale", "prior"), [
    (False, None, "dim_scaled"), (True, None, "dim_scaled"), (True, 1.7, "dim_scaled"),
    (True, 1.7, "optuna")])
def test_plain_torch_gradient_equals_autograds(matern, scale, prior):
    from metabp.search._mll import neg_log_posterior

    g = torch.Generator().manual_seed(0)
    x = torch.rand(15, 4, generator=g, dtype=torch.float64)
    y = torch.randn(15, generator=g, dtype=torch.float64)
    theta = torch.tensor([0.3, 0.7, 1.5, 0.05, 0.4] + ([scale] if scale else []), dtype=torch.float64,
                         requires_grad=True)
    noise = torch.full((15,), 1e-4, dtype=torch.float64)
    value, grad = neg_log_posterior(theta.detach(), x, y, noise, matern, prior)
    # the same objective through autograd: GPyTorch's kernel and LogNormal prior
    from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
    k = get_covar_module_with_dim_scaled_prior(4, use_rbf_kernel=not matern).double()
    k.lengthscale = theta[:4].detach()
    k.raw_lengthscale.requires_grad_(True)
    s = theta[5] if scale else 1.0
    cov = s * k(x).to_dense() + 1e-4 * torch.eye(15, dtype=torch.float64)
    mvn = torch.distributions.MultivariateNormal(theta[4].expand(15), cov)
    ls = k.lengthscale
    ls_prior = (k.lengthscale_prior.log_prob(ls).sum() if prior == "dim_scaled"
                else -(0.1 * ls**2 + 0.1 / ls**2).sum())  # Optuna GPSampler's, up to a constant
    log_prior = ls_prior + (s.log() - s if scale else 0)
    ref = -(mvn.log_prob(y) + log_prior) / 15
    ref.backward()
    assert torch.allclose(value, ref.detach(), atol=1e-10)
    assert torch.allclose(grad[:4], k.raw_lengthscale.grad.reshape(-1), atol=1e-8)
    assert torch.allclose(grad[4:], theta.grad[4:], atol=1e-8)


def test_cholesky_adds_a_jitter_only_where_the_factorisation_fails():
    from metabp.search._mll import cholesky

    k = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    assert torch.equal(cholesky(k), torch.linalg.cholesky(k))  # positive definite: no jitter
    singular = torch.ones(3, 3, dtype=torch.float64)
    chol = cholesky(singular)
    assert torch.allclose(chol @ chol.T, singular + 1e-8 * torch.eye(3, dtype=torch.float64), atol=1e-14)
    with pytest.raises(torch.linalg.LinAlgError, match="even with a jitter 1e-05"):
        cholesky(-torch.eye(3, dtype=torch.float64))


@pytest.mark.parametrize("num_restarts", [1, 3])
def test_best_start_makes_the_best_observed_point_the_last_start(num_restarts):
    from metabp.search._acquisition import _cached_logei_class, _starts

    x, y, bounds = _data(n=12)
    settings = EngineSettings(best_start=True, num_restarts=num_restarts, raw_samples=16, local_starts=4)
    model, y_std = fit_gp(x, y, bounds, settings=settings)
    gp = CachedGP.of(model)
    box = torch.stack([torch.zeros(3), torch.ones(3)]).double()
    starts = _starts(_cached_logei_class()(gp, y_std.max()), gp, box, settings)
    assert starts.shape == (num_restarts, 1, 3)
    assert torch.equal(starts[-1, 0], gp.x[y_std.reshape(-1).argmax()])
