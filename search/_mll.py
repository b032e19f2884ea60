r"""The GP's hyperparameters by maximum a posteriori, in plain torch (no GPyTorch module calls).

The model is BoTorch's ``SingleTaskGP`` with a fixed noise: constant mean :math:`c`, an ARD kernel
(RBF or Matern-5/2) of lengthscales :math:`\ell \ge 0.025`, optionally times an output scale
:math:`s`, and a lengthscale prior (:func:`log_prior`: Optuna GPSampler's, the engine's default, or
BoTorch's dimension-scaled one, Hvarfner et al. 2024). Its objective, as
``ExactMarginalLogLikelihood`` with priors, per data point (without :math:`s` and its prior term
when there is no output scale):

.. math:: \frac1n\Big[-\tfrac12 r^\top K^{-1} r - \log|L| - \tfrac n2 \log 2\pi
          + \sum_i \log p(\ell_i) + \log p(s)\Big], \qquad r = y - c, \quad
          K = s\,k_\ell(X, X) + \mathrm{diag}(\sigma^2) = L L^\top

GPyTorch computes the same value through kernel, prior and linear-operator modules, each call
paying their Python overhead; here it is a few tensor operations, the same optimum found by the
same L-BFGS-B (``scipy.optimize.minimize``; lengthscales bounded below as by BoTorch's
constraint, the output scale at 1e-3).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOWER = 0.025  # BoTorch's lengthscale constraint (GreaterThan(2.5e-2))


def kernel(x1: Tensor, x2: Tensor, lengthscale: Tensor, matern: bool) -> Tensor:
    """``k(x1, x2)`` (``a x d``, ``b x d`` -> ``a x b``): RBF :math:`e^{-r^2/2}` or Matern-5/2
    :math:`(1 + \\sqrt5 r + \\tfrac53 r^2) e^{-\\sqrt5 r}`,
    with :math:`r = \\lVert (x_1 - x_2)/\\ell \\rVert`."""
    centre = x2.mean(-2, keepdim=True)  # smaller norms, less cancellation in |a|^2 - 2ab + |b|^2
    a, b = (x1 - centre) / lengthscale, (x2 - centre) / lengthscale
    sq = ((a * a).sum(-1, keepdim=True) - 2 * a @ b.transpose(-1, -2) + (b * b).sum(-1)).clamp_min(0)
    if not matern:
        return torch.exp(-0.5 * sq)
    r = math.sqrt(5) * (sq + 1e-30).sqrt()  # no NaN gradient at r = 0
    return (1 + r + r * r / 3) * torch.exp(-r)


def log_prior(ls: Tensor, kind: str = "dim_scaled") -> tuple[Tensor, Tensor]:
    r"""The lengthscale prior's log density (up to a constant for ``"optuna"``) and its gradient.

    ``"dim_scaled"``: BoTorch's :math:`\log \ell_i \sim \mathcal N(\sqrt2 + \tfrac12\log d, 3)` (median
    :math:`\ell` about 10 on the unit cube in 6-D); ``"optuna"``: Optuna GPSampler's
    :math:`-\sum_i (0.1\,\ell_i^2 + 0.1\,\ell_i^{-2})` (mode :math:`\ell = 1`, long lengthscales
    penalised quadratically).
    """
    if kind == "optuna":
        return -(0.1 * ls**2 + 0.1 / ls**2).sum(), -(0.2 * ls - 0.2 / ls**3)
    loc, scale = math.sqrt(2) + 0.5 * math.log(len(ls)), math.sqrt(3)
    z = (ls.log() - loc) / scale
    value = (-0.5 * z * z - ls.log() - math.log(scale * math.sqrt(2 * math.pi))).sum()
    return value, -(z / scale + 1) / ls


def neg_log_posterior(theta: Tensor, x: Tensor, y: Tensor, noise: Tensor, matern: bool,
                      prior: str = "dim_scaled") -> tuple[Tensor, Tensor]:
    r"""Minus the objective above at ``theta = (lengthscales..., c)`` and its gradient (``y``: ``n``);
    ``theta = (lengthscales..., c, s)``: the kernel times an output scale :math:`s` with
    Optuna GPSampler's prior :math:`s \sim \Gamma(2, 1)` (log density :math:`\log s - s`).

    With :math:`W = \alpha\alpha^\top - K^{-1}`, :math:`\alpha = K^{-1} r`, and
    :math:`\partial K / \partial \ell_i = s\,G \circ D_i / \ell_i^3` (:math:`D_i` the squared
    differences in coordinate ``i``; :math:`G = k` for RBF, :math:`\tfrac53 (1 + \sqrt5 r) e^{-\sqrt5 r}`
    for Matern-5/2): :math:`\partial/\partial\ell_i = \tfrac12 \sum W \circ \partial K/\partial\ell_i`,
    :math:`\partial/\partial s = \tfrac12 \sum W \circ k`,
    :math:`\partial/\partial c = \mathbf 1^\top \alpha`, plus the priors' terms; no autograd.
    """
    n, d = x.shape
    ls, c = theta[:d], theta[d]
    scale = theta[d + 1] if len(theta) > d + 1 else None
    k = kernel(x, x, ls, matern)
    chol = cholesky((k if scale is None else scale * k) + torch.diag(noise))
    r = (y - c).unsqueeze(-1)
    alpha = torch.cholesky_solve(r, chol)
    fit = -0.5 * (r * alpha).sum() - chol.diagonal().log().sum() - 0.5 * n * math.log(2 * math.pi)
    prior_value, prior_grad = log_prior(ls, prior)
    w = alpha @ alpha.T - torch.cholesky_inverse(chol)
    if matern:
        rr = math.sqrt(5) * kernel_distance(x, ls)
        g = 5 / 3 * (1 + rr) * torch.exp(-rr)
    else:
        g = k
    m = w * g * (1 if scale is None else scale)
    # sum_jk m_jk (x_ji - x_ki)^2 = 2 sum_j x_ji^2 rowsum_j - 2 x_i' m x_i
    quad = 2 * (x * x * m.sum(-1, keepdim=True)).sum(0) - 2 * ((m @ x) * x).sum(0)
    grads = [0.5 * quad / ls**3 + prior_grad, alpha.sum().reshape(1)]
    if scale is not None:
        prior_value = prior_value + scale.log() - scale
        grads.append((0.5 * (w * k).sum() + 1 / scale - 1).reshape(1))
    return -(fit + prior_value) / n, -torch.cat(grads) / n


def cholesky(k: Tensor) -> Tensor:
    """Lower Cholesky factor of ``k``, with a jitter (1e-8, 1e-7, ... 1e-5) on the diagonal only
    where the factorisation fails (near-duplicate points under a tiny noise)."""
    for jitter in (0.0, 1e-8, 1e-7, 1e-6, 1e-5):
        eye = torch.eye(len(k), dtype=k.dtype, device=k.device)
        chol, info = torch.linalg.cholesky_ex(k + jitter * eye if jitter else k)
        if not int(info):
            return chol
    raise torch.linalg.LinAlgError(f"kernel matrix not positive definite even with a jitter {jitter:g}")


def kernel_distance(x: Tensor, lengthscale: Tensor) -> Tensor:
    """``n x n`` Euclidean distances of the rows of ``x / lengthscale``."""
    a = (x - x.mean(-2, keepdim=True)) / lengthscale
    sq = (a * a).sum(-1, keepdim=True) - 2 * a @ a.T + (a * a).sum(-1)
    return sq.clamp_min(0).sqrt()


def fit_map(x: Tensor, y: Tensor, noise: Tensor, init: Tensor, *, matern: bool, gtol: float,
            prior: str = "dim_scaled", ftol: float = 1e-7, maxiter: int = 200) -> Tensor:
    """``theta`` maximising the objective, L-BFGS-B from ``init`` (``d + 1``, or ``d + 2`` with an
    output scale); ``x`` ``n x d``, ``y`` ``n``, ``noise`` ``n``."""
    import numpy as np
    from scipy.optimize import minimize

    d = x.shape[-1]

    def f(t: np.ndarray) -> tuple[float, np.ndarray]:
        loss, grad = neg_log_posterior(torch.from_numpy(t), x, y, noise, matern, prior)
        return float(loss), grad.numpy()

    start = init.detach().double().clone()
    start[:d] = start[:d].clamp_min(LOWER)
    bounds = [(LOWER, None)] * d + [(None, None)] + [(1e-3, None)] * (len(start) - d - 1)
    res = minimize(f, start.numpy(), jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"gtol": gtol, "ftol": ftol, "maxiter": maxiter})
    return torch.from_numpy(res.x)


def fit_model(model, x: Tensor, y: Tensor, yvar: Tensor, *, matern: bool, gtol: float,
              prior: str = "dim_scaled") -> None:
    """What ``fit_gpytorch_mll`` does to a fixed-noise ``SingleTaskGP``'s lengthscales and constant
    mean (and output scale, where its kernel is a ``ScaleKernel``), done by :func:`fit_map` from the
    model's current values (without calling GPyTorch); the result is written into ``model``."""
    base = getattr(model.covar_module, "base_kernel", model.covar_module)
    parts = [base.lengthscale.detach().reshape(-1), model.mean_module.constant.detach().reshape(1)]
    if base is not model.covar_module:
        parts.append(model.covar_module.outputscale.detach().reshape(1))
    theta = fit_map(x, y.reshape(-1), yvar.reshape(-1), torch.cat(parts), matern=matern, gtol=gtol,
                    prior=prior)
    d = x.shape[-1]
    with torch.no_grad():
        base.lengthscale = theta[:d].reshape(base.lengthscale.shape)
        model.mean_module.constant = theta[d]
        if base is not model.covar_module:
            model.covar_module.outputscale = theta[d + 1]
