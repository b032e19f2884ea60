r"""The acquisition step of a proposal: LogEI on a :class:`~._botorch.CachedGP`, maximised over the box.

Expected Improvement over the incumbent :math:`f^*` under the posterior
:math:`\mathcal{N}(\mu(x), \sigma(x)^2)`, with :math:`u = (\mu(x) - f^*)/\sigma(x)`:

.. math:: \mathrm{EI}(x) = \sigma(x)\,[\,u\,\Phi(u) + \varphi(u)\,], \qquad
          \mathrm{LogEI}(x) = \log \mathrm{EI}(x)

computed stably in log space (Ament et al., "Unexpected Improvements to Expected Improvement
for Bayesian Optimization", NeurIPS 2023); qLogEI is its Monte-Carlo batch form
:math:`\log \mathbb{E}[\max_j (f(x_j) - f^*)_+]` with a smoothed max and ReLU.
"""

from __future__ import annotations

import functools
import warnings
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ._settings import DEFAULT, EngineSettings

if TYPE_CHECKING:  # the posterior is built in _botorch.py, which imports this module
    from ._botorch import CachedGP

__all__ = ["EXCLUSION", "maximize_acquisition"]


#: Radius (unit cube, Euclidean) around each pending point inside which LogEI is lowered by
#: ``log(dist / EXCLUSION)``: where the GP is already confident, the believed values alone leave
#: the next point within 1e-5 of a pending one; this keeps a batch spread out. Chosen among 0.01,
#: 0.03, 0.05, 0.1 and 0.2 with ``benchmarks/parallel_workers.py`` (synchronous batches and
#: asynchronous workers, quadratic and Hartmann-6): 0.1 gave the best batches and lost nothing for
#: asynchronous workers (``benchmarks/results/parallel_workers*.md`` are at this value).
EXCLUSION = 1e-1


@functools.cache
def _cached_logei_class() -> type:
    """BoTorch's ``LogExpectedImprovement`` on a :class:`CachedGP`'s posterior (``b x 1 x d`` -> ``b``);
    built on first use, so importing this module does not import BoTorch."""
    from botorch.acquisition import LogExpectedImprovement

    class CachedLogEI(LogExpectedImprovement):
        def __init__(self, gp: CachedGP, best_f: Tensor, pending: Tensor | None = None) -> None:
            super().__init__(model=gp.model, best_f=best_f)
            self.gp, self.pending = gp, pending

        def _mean_and_sigma(self, X: Tensor, compute_sigma: bool = True, min_var: float = 1e-12):
            mean, var = self.gp.mean_var(X.squeeze(-2))
            return mean.unsqueeze(-1), var.clamp_min(min_var).sqrt().unsqueeze(-1)

        def forward(self, X: Tensor) -> Tensor:
            out = super().forward(X)
            if self.pending is None:
                return out
            dist = torch.cdist(X.squeeze(-2), self.pending)  # b x m
            return out + (dist / EXCLUSION).clamp(1e-20, 1).log().sum(-1)

    return CachedLogEI


def _search_box(gp: CachedGP, tr_length: float) -> Tensor:
    """``2 x d``: the unit cube, or the trust region around the incumbent (``tr_length > 0``)."""
    d = gp.x.shape[-1]
    if not tr_length > 0:
        return torch.stack([torch.zeros(d), torch.ones(d)]).double()
    ls = gp.ls.double()
    half = 0.5 * tr_length * ls / ls.log().mean().exp()
    best = gp.x[gp.y.reshape(-1).argmax()]
    return torch.stack([(best - half).clamp(0, 1), (best + half).clamp(0, 1)])


def maximize_acquisition(gp: CachedGP, best_f: Tensor, pending: Tensor | None, *,
                         settings: EngineSettings = DEFAULT, q_form: bool = False) -> Tensor:
    """One point (``1 x d``, unit cube) maximising LogEI on ``gp`` conditioned on ``pending``
    (``m x d``; kriging believer), or BoTorch's qLogEI with ``X_pending`` when ``q_form``.
    L-BFGS-B (``optimize_acqf``) from ``num_restarts`` of ``raw_samples`` points."""
    from botorch.acquisition import qLogExpectedImprovement
    from botorch.optim import optimize_acqf
    from botorch.sampling import SobolQMCNormalSampler

    unit = _search_box(gp, settings.tr_length)
    if q_form:
        acqf = qLogExpectedImprovement(gp.model, best_f=best_f, X_pending=pending,
                                       sampler=SobolQMCNormalSampler(torch.Size([settings.mc_samples])))
    else:  # the incumbent stays the best observed value (with the believed values counted too,
        # every pending point raises it and the next proposal is pushed to explore: on the
        # 10-D quadratic of benchmarks/parallel_workers.py, 20 seeds, best 44.9 +- 7.6 against 30.2 +- 4.0)
        if pending is not None and len(pending):
            gp = gp.with_pending(pending)
        acqf = _cached_logei_class()(gp, best_f, pending)
    starts = None if q_form or not settings.local_starts else _starts(acqf, gp, unit, settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cand, _ = optimize_acqf(acqf, bounds=unit, q=1, num_restarts=settings.num_restarts,
                                raw_samples=None if starts is not None else settings.raw_samples,
                                batch_initial_conditions=starts, options={"maxiter": settings.maxiter})
    return cand.detach()


def _starts(acqf, gp: CachedGP, box: Tensor, settings: EngineSettings) -> Tensor:
    """``num_restarts x 1 x d`` L-BFGS-B starts: Sobol points in ``box`` and ``local_starts`` points
    around the 5 best observed points, picked by acquisition value (BoTorch's ``initialize_q_batch``)."""
    from botorch.optim.initializers import initialize_q_batch

    d = box.shape[-1]
    sobol = torch.quasirandom.SobolEngine(d, scramble=True, seed=int(torch.randint(2**30, ())))
    raw = box[0] + (box[1] - box[0]) * sobol.draw(settings.raw_samples, dtype=torch.float64)
    n_obs = len(gp.model.train_inputs[0])  # observed rows come first, then pending ones
    best = gp.x[:n_obs][gp.y[:n_obs].reshape(-1).topk(min(5, n_obs)).indices]
    around = best[torch.randint(len(best), (settings.local_starts,))]
    around = (around + 0.05 * torch.randn_like(around)).clamp(box[0], box[1])
    x = torch.cat([raw, around]).unsqueeze(-2)
    with torch.no_grad():
        values = acqf(x)
    if not settings.best_start:
        return initialize_q_batch(x, values, n=settings.num_restarts)[0]
    n = settings.num_restarts - 1
    picked = initialize_q_batch(x, values, n=n)[0] if n else x[:0]
    return torch.cat([picked, best[:1].unsqueeze(-2)])
