r"""The GP's hyperparameters by maximum a posteriori, in plain torch (no GPyTorch module calls).

The model is BoTorch's ``SingleTaskGP`` with a fixed noise: constant mean :math:`c`, an ARD kernel
(RBF or Matern-5/2) of lengthscales :math:`\ell \ge 0.025` with BoTorch's dimension-scaled
prior :math:`\log \ell_i \sim \mathcal{N}(\sqrt 2 + \tfrac12 \log d,\ 3)` (Hvarfner et al. 2024),
no output scale. Its objective, as ``ExactMarginalLogLikelihood`` with priors, per data point:

.. math:: \frac1n\Big[-\tfrac12 r^\top K^{-1} r - \log|L| - \tfrac n2 \log 2\pi
          + \sum_i \log p(\ell_i)\Big], \qquad r = y - c, \quad
          K = k_\ell(X, X) + \mathrm{diag}(\sigma^2) = L L^\top

GPyTorch computes the same value through kernel, prior and linear-operator modules, about 7 ms a
call at 25 dimensions and 40 points; here it is a few tensor operations, the same optimum found
by the same L-BFGS-B (``scipy.optimize.minimize``, bounds from the constraint).
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


def neg_log_posterior(theta: Tensor, x: Tensor, y: Tensor, noise: Tensor,
                      matern: bool) -> tuple[Tensor, Tensor]:
    r"""Minus the objective above at ``theta = (lengthscales..., c)`` and its gradient (``y``: ``n``).

    With :math:`W = \alpha\alpha^\top - K^{-1}`, :math:`\alpha = K^{-1} r`, and
    :math:`\partial K / \partial \ell_i = G \circ D_i / \ell_i^3` (:math:`D_i` the squared
    differences in coordinate ``i``; :math:`G = K` for RBF, :math:`\tfrac53 (1 + \sqrt5 r) e^{-\sqrt5 r}`
    for Matern-5/2): :math:`\partial/\partial\ell_i = \tfrac12 \sum W \circ \partial K/\partial\ell_i`,
    :math:`\partial/\partial c = \mathbf 1^\top \alpha`, plus the prior's terms; no autograd.
    """
    n, d = x.shape
    ls, c = theta[:d], theta[d]
    k = kernel(x, x, ls, matern)
    chol, info = torch.linalg.cholesky_ex(k + torch.diag(noise))
    if int(info):
        raise torch.linalg.LinAlgError("kernel matrix not positive definite")
    r = (y - c).unsqueeze(-1)
    alpha = torch.cholesky_solve(r, chol)
    fit = -0.5 * (r * alpha).sum() - chol.diagonal().log().sum() - 0.5 * n * math.log(2 * math.pi)
    loc, scale = math.sqrt(2) + 0.5 * math.log(d), math.sqrt(3)
    z = (ls.log() - loc) / scale
    prior = (-0.5 * z * z - ls.log() - math.log(scale * math.sqrt(2 * math.pi))).sum()
    w = alpha @ alpha.T - torch.cholesky_inverse(chol)
    if matern:
        rr = math.sqrt(5) * kernel_distance(x, ls)
        g = 5 / 3 * (1 + rr) * torch.exp(-rr)
    else:
        g = k
    m = w * g  # sum_jk m_jk (x_ji - x_ki)^2 = 2 sum_j x_ji^2 rowsum_j - 2 x_i' m x_i
    quad = 2 * (x * x * m.sum(-1, keepdim=True)).sum(0) - 2 * ((m @ x) * x).sum(0)
    grad_ls = 0.5 * quad / ls**3 - (z / scale + 1) / ls
    grad = torch.cat([grad_ls, alpha.sum().reshape(1)])
    return -(fit + prior) / n, -grad / n


def kernel_distance(x: Tensor, lengthscale: Tensor) -> Tensor:
    """``n x n`` Euclidean distances of the rows of ``x / lengthscale``."""
    a = (x - x.mean(-2, keepdim=True)) / lengthscale
    sq = (a * a).sum(-1, keepdim=True) - 2 * a @ a.T + (a * a).sum(-1)
    return sq.clamp_min(0).sqrt()


def fit_map(x: Tensor, y: Tensor, noise: Tensor, init: Tensor, *, matern: bool, gtol: float,
            ftol: float = 1e-7, maxiter: int = 200) -> Tensor:
    """``theta = (lengthscales..., c)`` maximising the objective, L-BFGS-B from ``init``
    (``d + 1``); ``x`` ``n x d``, ``y`` ``n``, ``noise`` ``n``."""
    import numpy as np
    from scipy.optimize import minimize

    d = x.shape[-1]

    def f(t: np.ndarray) -> tuple[float, np.ndarray]:
        loss, grad = neg_log_posterior(torch.from_numpy(t), x, y, noise, matern)
        return float(loss), grad.numpy()

    start = init.detach().double().clone()
    start[:d] = start[:d].clamp_min(LOWER)
    res = minimize(f, start.numpy(), jac=True, method="L-BFGS-B", bounds=[(LOWER, None)] * d + [(None, None)],
                   options={"gtol": gtol, "ftol": ftol, "maxiter": maxiter})
    return torch.from_numpy(res.x)


def fit_model(model, x: Tensor, y: Tensor, yvar: Tensor, *, matern: bool, gtol: float) -> None:
    """``fit_gpytorch_mll`` on a fixed-noise ``SingleTaskGP``'s lengthscales and constant mean, by
    :func:`fit_map` from the model's current values; the result is written into ``model``."""
    ls = model.covar_module.lengthscale.detach().reshape(-1)
    init = torch.cat([ls, model.mean_module.constant.detach().reshape(1)])
    theta = fit_map(x, y.reshape(-1), yvar.reshape(-1), init, matern=matern, gtol=gtol)
    with torch.no_grad():
        model.covar_module.lengthscale = theta[:-1].reshape(model.covar_module.lengthscale.shape)
        model.mean_module.constant = theta[-1]
