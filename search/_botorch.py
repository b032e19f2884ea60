r"""The BoTorch model and acquisition choices of metabp's GP sampler, in one place.

Paper section 3.2.1: a Gaussian-process prior over ``omega -> AULC`` and Expected Improvement.
Here, per proposal:

1. inputs normalised to the unit cube (``log x`` for log-scale parameters); outputs (``AULC``,
   minimised) outlier-capped (:func:`cap_outliers`), power-warped (:func:`warp_power`, exponent by
   maximum likelihood: a heavy upper tail of bad candidates is compressed, near-Gaussian values
   are left alone) and standardised;
2. ``SingleTaskGP`` (Matern-5/2 ARD kernel, BoTorch's dimension-scaled priors) with a **fixed tiny
   noise** (``NOISE_VAR``): under common random numbers a candidate's AULC is deterministic, so
   the function is modelled as noiseless;
3. hyperparameters by ``fit_gpytorch_mll`` (one intra-op thread: several times faster on 2 cores);
4. LogEI (``q = 1``, no pending points) or qLogEI (batches, or points other workers still run),
   maximised over the box with ``optimize_acqf`` (multi-start L-BFGS-B).

The fixed choices (``WARP``, ``NOISE_VAR``, ``NUM_RESTARTS``, ``RAW_SAMPLES``) were picked with
``benchmarks/search_efficiency.py``'s A/B mode (samplers ``botorch:NAME=VALUE``, :func:`engine_settings`)
on its synthetic functions.

Expected Improvement over the incumbent :math:`f^*` under the posterior
:math:`\mathcal{N}(\mu(x), \sigma(x)^2)`, with :math:`u = (\mu(x) - f^*)/\sigma(x)`:

.. math:: \mathrm{EI}(x) = \sigma(x)\,[\,u\,\Phi(u) + \varphi(u)\,], \qquad
          \mathrm{LogEI}(x) = \log \mathrm{EI}(x)

computed stably in log space (Ament et al., "Unexpected Improvements to Expected Improvement
for Bayesian Optimization", NeurIPS 2023); qLogEI is its Monte-Carlo batch form
:math:`\log \mathbb{E}[\max_j (f(x_j) - f^*)_+]` with a smoothed max and ReLU.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
import zlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from metabp.exceptions import ConfigError
from metabp.targets import num_threads

from ._config import ACQUISITIONS

_log = logging.getLogger(__name__)

WARPS = ("log1p", "power", "cap")
#: Fixed observation noise on the standardised scale. Small enough to interpolate deterministic
#: AULCs, large enough to keep the Cholesky factorisation stable with near-duplicate points.
#: ``None``: inferred by the marginal likelihood (BoTorch's default).
NOISE_VAR: float | None = 1e-4
#: Outputs beyond ``Q3 + OUTLIER_IQR * IQR`` are capped there before standardising, so one
#: diverged candidate's penalty AULC does not flatten every other difference.
OUTLIER_IQR = 3.0
#: Output warp before standardising: "power" (:func:`warp_power`), "log1p" (:func:`warp_log1p`) or
#: "cap" (outlier cap only).
WARP = "power"
#: optimize_acqf settings: L-BFGS-B restarts and the raw samples they are picked from.
NUM_RESTARTS = 5
RAW_SAMPLES = 256
#: Monte-Carlo samples of qLogEI.
MC_SAMPLES = 256
#: The fixed choices above that :func:`engine_settings` may change (for A/B benchmarks).
SETTINGS = ("NOISE_VAR", "OUTLIER_IQR", "WARP", "NUM_RESTARTS", "RAW_SAMPLES", "MC_SAMPLES")


@contextlib.contextmanager
def engine_settings(**changes: Any) -> Iterator[dict[str, Any]]:
    """Run the block with some of the engine's fixed choices changed; yields all of them.

    Example::

        with engine_settings(WARP="log1p", NUM_RESTARTS=10):
            minimize(f, bounds, 30)
    """
    unknown = sorted(set(changes) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"engine_settings({', '.join(unknown)}=...): unknown; the settings are "
                          f"{', '.join(SETTINGS)}")
    here = globals()
    saved = {k: here[k] for k in SETTINGS}
    here.update(changes)
    try:
        yield {k: here[k] for k in SETTINGS}
    finally:
        here.update(saved)


def cap_outliers(y: Tensor) -> Tensor:
    """Cap values above the upper Tukey fence ``Q3 + OUTLIER_IQR * IQR`` (``y``: ``n x 1``, to minimise).

    Non-finite values become the largest finite one. Order is preserved (monotone map).
    """
    y = y.clone()
    finite = torch.isfinite(y)
    if not finite.any():
        return torch.zeros_like(y)
    y[~finite] = y[finite].max()
    if y.numel() >= 4:
        q1, q3 = torch.quantile(y.flatten(), torch.tensor([0.25, 0.75], dtype=y.dtype))
        iqr = q3 - q1
        if iqr > 0:
            y = y.clamp(max=float(q3 + OUTLIER_IQR * iqr))
    return y


def warp_log1p(y: Tensor) -> Tensor:
    r"""Monotone output warp for minimisation (``y``: ``n x 1``):

    .. math:: y' = \log\!\left(1 + \frac{y - \min y}{s}\right), \qquad s = \operatorname{median}(y - \min y)

    Near the incumbent differences stay almost linear; a diverged candidate's penalty, orders of
    magnitude above, is compressed to a few units instead of flattening everything else.
    """
    gap = y - y.min()
    s = gap.median()
    if not s > 0:
        s = gap.max() if gap.max() > 0 else torch.ones((), dtype=y.dtype)
    return torch.log1p(gap / s)


def warp_power(y: Tensor) -> Tensor:
    r"""Yeo-Johnson power warp (``y``: ``n x 1``), its exponent :math:`\lambda` by maximum likelihood
    (``scipy.stats.yeojohnson``) on the standardised values, as in HEBO (Cowen-Rivers et al. 2022):

    .. math:: \psi_\lambda(z) = ((z + 1)^\lambda - 1)/\lambda \;(z \ge 0), \qquad
              -((1 - z)^{2 - \lambda} - 1)/(2 - \lambda) \;(z < 0)

    Monotone for every :math:`\lambda`; a heavy upper tail gets :math:`\lambda < 1` (log-like),
    near-Gaussian values :math:`\lambda \approx 1` (left as they are).
    """
    from scipy.stats import yeojohnson

    std = y.std() if y.numel() > 1 else torch.zeros((), dtype=y.dtype)
    if not std > 0:
        return torch.zeros_like(y)
    z = ((y - y.mean()) / std).flatten().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, _ = yeojohnson(z)
    out = torch.as_tensor(out, dtype=y.dtype).reshape(y.shape)
    return out if torch.isfinite(out).all() else torch.as_tensor(z, dtype=y.dtype).reshape(y.shape)


def fit_gp(train_x: Tensor, train_y: Tensor, bounds: Tensor, *, warp: str = WARP):
    """Fit the GP to ``train_x`` (``n x d``, raw units) and ``train_y`` (``n x 1``, to maximise).

    ``warp``: ``"log1p"`` (:func:`warp_log1p` on ``-train_y``), ``"power"`` (:func:`warp_power`) or
    ``"cap"`` (:func:`cap_outliers` only).
    Returns ``(model, y_std)``: the model on the unit cube and the standardised outputs.
    """
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.utils.transforms import normalize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    if warp not in WARPS:
        raise ConfigError(f"warp={warp!r}: choose one of {', '.join(WARPS)}")
    x = normalize(train_x, bounds=bounds)
    y = -cap_outliers(-train_y)  # cap the bad tail (minimisation view), keep maximisation sign
    if warp == "log1p":
        y = -warp_log1p(-y)
    elif warp == "power":
        y = -warp_power(-y)
    std = y.std() if y.numel() > 1 else torch.ones((), dtype=y.dtype)
    y_std = (y - y.mean()) / (std if std > 0 else 1.0)
    yvar = None if NOISE_VAR is None else torch.full_like(y_std, NOISE_VAR)
    model = SingleTaskGP(x, y_std, train_Yvar=yvar)
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_gpytorch_mll(mll)
    return model, y_std


class GPCandidates:
    """A ``candidates_func`` for optuna-integration's ``BoTorchSampler`` (maximisation).

    Called as ``f(train_x, train_obj, train_con, bounds, pending_x)`` with ``train_x`` ``n x d``
    (raw units; ``log x`` for log-scale parameters), ``train_obj`` ``n x 1``, ``bounds`` ``2 x d``,
    ``pending_x`` ``m x d`` or ``None``; returns one candidate ``1 x d``. Fewer than two finite
    values, or a failed fit, give a uniform random point. The GP is reused while the data are
    unchanged (a greedy batch: each proposal sees the earlier ones as pending points).

    Args:
        acquisition: ``"logei"`` (qLogEI when points are pending) or ``"qlogei"``.
        warp: output warp, one of :data:`WARPS` (default :data:`WARP`).
    """

    def __init__(self, *, acquisition: str = "logei", warp: str | None = None) -> None:
        if acquisition not in ACQUISITIONS:
            raise ConfigError(f"acquisition={acquisition!r}: choose one of {', '.join(ACQUISITIONS)}")
        warp = warp or WARP
        if warp not in WARPS:
            raise ConfigError(f"warp={warp!r}: choose one of {', '.join(WARPS)}")
        self.acquisition = acquisition
        self.warp = warp
        self._cache_key: tuple | None = None
        self._cache_model = None
        self.seconds = 0.0  # proposing time spent here (fit + acquisition)

    def __call__(
        self,
        train_x: Tensor,
        train_obj: Tensor,
        train_con: Tensor | None,
        bounds: Tensor,
        pending_x: Tensor | None,
    ) -> Tensor:
        t0 = time.perf_counter()
        try:  # seeded by the data: the same history gives the same proposal, whatever the caller's RNG
            with num_threads(1), torch.random.fork_rng():
                torch.manual_seed(zlib.crc32(train_obj.double().numpy().tobytes()))
                return self._propose(train_x.double(), train_obj.double(), bounds.double(), pending_x)
        finally:
            self.seconds += time.perf_counter() - t0

    def _model(self, train_x: Tensor, train_obj: Tensor, bounds: Tensor):
        key = (train_x.shape, hash(train_x.numpy().tobytes()), hash(train_obj.numpy().tobytes()))
        if key != self._cache_key:
            self._cache_model = fit_gp(train_x, train_obj, bounds, warp=self.warp)
            self._cache_key = key
        return self._cache_model

    def _propose(self, train_x: Tensor, train_obj: Tensor, bounds: Tensor, pending_x: Tensor | None):
        from botorch.utils.transforms import normalize, unnormalize

        d = train_x.shape[-1]
        if int(torch.isfinite(train_obj).sum()) < 2:
            return unnormalize(torch.rand(1, d, dtype=torch.float64), bounds)
        try:
            model, y_std = self._model(train_x, train_obj, bounds)
        except Exception as exc:  # never let a bad fit stop the study: fall back to a random point
            _log.warning("GP fit failed (%s); proposing a random point", exc)
            return unnormalize(torch.rand(1, d, dtype=torch.float64), bounds)
        pending = None
        if pending_x is not None and len(pending_x):
            pending = normalize(pending_x.double(), bounds=bounds)
        cand = maximize_acquisition(model, y_std.max(), pending, q_form=self.acquisition == "qlogei")
        return unnormalize(cand, bounds)


def maximize_acquisition(model, best_f: Tensor, pending: Tensor | None, *, q_form: bool = False) -> Tensor:
    """One point (``1 x d``, unit cube) maximising LogEI (qLogEI with ``pending`` or ``q_form``):
    L-BFGS-B (``optimize_acqf``) from ``NUM_RESTARTS`` of ``RAW_SAMPLES`` points."""
    from botorch.acquisition import LogExpectedImprovement, qLogExpectedImprovement
    from botorch.optim import optimize_acqf
    from botorch.sampling import SobolQMCNormalSampler

    if pending is None and not q_form:
        acqf = LogExpectedImprovement(model, best_f=best_f)
    else:
        acqf = qLogExpectedImprovement(model, best_f=best_f, X_pending=pending,
                                       sampler=SobolQMCNormalSampler(torch.Size([MC_SAMPLES])))
    d = model.train_inputs[0].shape[-1]
    unit = torch.stack([torch.zeros(d), torch.ones(d)]).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cand, _ = optimize_acqf(acqf, bounds=unit, q=1, num_restarts=NUM_RESTARTS, raw_samples=RAW_SAMPLES)
    return cand.detach()
