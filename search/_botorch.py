r"""The BoTorch model and acquisition choices of metabp's GP sampler, in one place.

Paper section 3.2.1: a Gaussian-process prior over ``omega -> AULC`` and Expected Improvement.
Here, per proposal:

1. inputs normalised to the unit cube (``log x`` for log-scale parameters); outputs (``AULC``,
   minimised) outlier-capped (:func:`cap_outliers`), power-warped (:func:`warp_power`, exponent by
   maximum likelihood: a heavy upper tail of bad candidates is compressed, near-Gaussian values
   are left alone) and standardised (``_warps.py``);
2. ``SingleTaskGP`` with a Matern-5/2 ARD kernel times a fitted output scale, the lengthscale and
   scale priors of Optuna's GPSampler, and a **fixed tiny noise** (:attr:`EngineSettings.noise_var`,
   1e-6 as GPSampler's floor): under common random numbers a candidate's AULC is deterministic, so
   the function is modelled as noiseless;
3. hyperparameters by maximum a posteriori (``_mll.py``: ``fit_gpytorch_mll``'s objective in plain
   torch; ``fit_gpytorch_mll`` itself for an inferred noise), one intra-op thread, warm-started from
   the previous fit of the same study when the dimension is unchanged;
4. LogEI (``_acquisition.py``) maximised over the box with ``optimize_acqf`` (multi-start
   L-BFGS-B) on a posterior whose Cholesky factor is computed once (:class:`CachedGP`). Points
   other workers still run (or earlier members of a batch) are *pending*: the GP is conditioned on
   them at its own posterior mean ("kriging believer", sequential greedy with fantasies), so the
   next point moves away from them at the price of one more Cholesky factor, and LogEI is lowered
   within ``_acquisition.EXCLUSION`` of each pending point (a local penalty).
   ``acquisition = "qlogei"`` uses BoTorch's Monte-Carlo qLogEI with ``X_pending`` instead.

The choices are an :class:`EngineSettings` value passed to the engine; they were picked with
``benchmarks/search_efficiency.py``'s A/B mode (samplers ``botorch:NAME=VALUE``) on its functions.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from metabp.exceptions import ConfigError

from ._acquisition import maximize_acquisition
from ._mll import cholesky, fit_model, kernel
from ._settings import DEFAULT, EngineSettings
from ._warps import standardize

__all__ = ["fit_gp", "CachedGP", "Proposer"]


def fit_gp(train_x: Tensor, train_y: Tensor, bounds: Tensor, *, settings: EngineSettings = DEFAULT,
           init: dict[str, Tensor] | None = None):
    """Fit the GP to ``train_x`` (``n x d``, raw units) and ``train_y`` (``n x 1``, to maximise).

    ``init``: hyperparameters (``named_parameters`` of an earlier fit) to start from; ignored where
    a shape differs. Returns ``(model, y_std)``: the model on the unit cube and the standardised,
    warped outputs it was fitted to.
    """
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
    from botorch.utils.transforms import normalize
    from gpytorch.kernels import ScaleKernel
    from gpytorch.mlls import ExactMarginalLogLikelihood
    from gpytorch.priors import GammaPrior

    x = normalize(train_x, bounds=bounds)
    y_std = -standardize(-train_y, settings.outlier_iqr, settings.warp)  # minimisation view, then back
    yvar = None if settings.noise_var is None else torch.full_like(y_std, settings.noise_var)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covar = get_covar_module_with_dim_scaled_prior(x.shape[-1], use_rbf_kernel=settings.kernel == "rbf")
        covar = ScaleKernel(covar, outputscale_prior=GammaPrior(2.0, 1.0)) if settings.outputscale else covar
        model = SingleTaskGP(x, y_std, train_Yvar=yvar, covar_module=covar, outcome_transform=None)
        if init:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name in init and init[name].shape == p.shape:
                        p.copy_(init[name])
        if yvar is None or not settings.fast_fit:
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model),
                             optimizer_kwargs={"options": {"gtol": settings.fit_gtol, "ftol": 1e-7}})
        else:
            fit_model(model, x, y_std, yvar, matern=settings.kernel == "matern", gtol=settings.fit_gtol,
                      prior=settings.ls_prior)
    model.eval().requires_grad_(False)
    return model, y_std


class CachedGP:
    r"""The fitted GP's posterior with its Cholesky factor computed once.

    With :math:`K = k(X, X) + \sigma_n^2 I = L L^\top` and constant mean :math:`c`:

    .. math:: \mu(x) = c + k(x, X)\,K^{-1}(y - c), \qquad
              \sigma^2(x) = k(x, x) - \lVert L^{-1} k(X, x) \rVert^2

    Args:
        model: a fitted ``SingleTaskGP`` (no outcome transform) whose inputs are ``x``.
        x: ``n x d`` inputs on the unit cube. y: ``n x 1`` standardised outputs.
        noise: ``n`` noise variances.
    """

    def __init__(self, model, x: Tensor, y: Tensor, noise: Tensor) -> None:
        self.model, self.x, self.y, self.noise = model, x, y, noise
        base = getattr(model.covar_module, "base_kernel", model.covar_module)
        self.s = model.covar_module.outputscale.detach() if base is not model.covar_module else 1.0
        self.ls = base.lengthscale.detach().reshape(-1)  # k(x, x) = s: no other scale
        self.matern = type(base).__name__ == "MaternKernel"
        self.c = model.mean_module.constant.detach()
        with torch.no_grad():
            self.L = cholesky(self.s * kernel(x, x, self.ls, self.matern) + torch.diag_embed(noise))
            self.alpha = torch.cholesky_solve(y - self.c, self.L)

    @classmethod
    def of(cls, model) -> CachedGP:
        x, y = model.train_inputs[0], model.train_targets.unsqueeze(-1)
        return cls(model, x, y, model.likelihood.noise.detach().expand(len(x)).clone())

    def mean_var(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and variance at ``x`` (``b x d``), each ``b``."""
        kx = self.s * kernel(x, self.x, self.ls, self.matern)  # b x n
        mean = self.c + (kx @ self.alpha).squeeze(-1)
        v = torch.linalg.solve_triangular(self.L, kx.transpose(-1, -2), upper=False)  # n x b
        return mean, (self.s - (v * v).sum(-2)).clamp_min(1e-12)

    def with_pending(self, pending: Tensor) -> CachedGP:
        """The GP also conditioned on ``pending`` (``m x d``) at its posterior mean (same hyperparameters)."""
        with torch.no_grad():
            mean, _ = self.mean_var(pending)
        noise = self.noise.min().clamp_min(1e-6).expand(len(pending))
        return CachedGP(self.model, torch.cat([self.x, pending]), torch.cat([self.y, mean.unsqueeze(-1)]),
                        torch.cat([self.noise, noise]))


class Proposer:
    """One candidate from the data: ``f(train_x, train_obj, bounds, pending_x) -> 1 x d`` (maximisation).

    ``train_x`` ``n x d`` (raw units; ``log x`` for log-scale parameters), ``train_obj`` ``n x 1``,
    ``bounds`` ``2 x d``, ``pending_x`` ``m x d`` or ``None``. The GP is refitted only when the data
    change (a batch or a worker's pending points reuse it), warm-started from the previous fit.
    Seeded by the data and the pending points: the same history gives the same proposal.
    Rows with a non-finite parameter are dropped; fewer than two finite values, a failed fit, or a
    proposal at an existing or pending point (``max |dx| < 1e-6`` on the unit cube) give a uniform
    random point instead.

    Args:
        q_form: ``False``: LogEI, pending points by kriging believer (acquisition ``"logei"``);
            ``True``: BoTorch's qLogEI with ``X_pending`` (acquisition ``"qlogei"``).
        settings: the :class:`EngineSettings`.
    """

    def __init__(self, *, q_form: bool = False, settings: EngineSettings = DEFAULT) -> None:
        if not isinstance(settings, EngineSettings):
            raise ConfigError(f"engine={settings!r}: need an EngineSettings value")
        self.q_form, self.settings = bool(q_form), settings
        self._key: tuple | None = None
        self._fit: tuple | None = None  # (model, y_std, CachedGP)
        self._init: dict[str, Tensor] | None = None
        self.seconds = 0.0  # proposing time spent here (fit + acquisition)

    def __call__(self, train_x: Tensor, train_obj: Tensor, bounds: Tensor,
                 pending_x: Tensor | None = None) -> Tensor:
        import time
        import zlib

        from metabp.targets import num_threads

        t0 = time.perf_counter()
        x, obj, b = train_x.double(), train_obj.double(), bounds.double()
        pend = None if pending_x is None or not len(pending_x) else pending_x.double()
        seed = zlib.crc32(obj.numpy().tobytes() + (b"" if pend is None else pend.numpy().tobytes()))
        try:  # seeded by the data: whatever the caller's RNG
            with num_threads(1), torch.random.fork_rng():
                torch.manual_seed(seed)
                return self._propose(x, obj, b, pend)
        finally:
            self.seconds += time.perf_counter() - t0

    def _model(self, x: Tensor, obj: Tensor, bounds: Tensor) -> tuple:
        key = (x.shape, hash(x.numpy().tobytes()), hash(obj.numpy().tobytes()))
        if key != self._key:
            init = self._init if self.settings.warm_start else None
            model, y_std = fit_gp(x, obj, bounds, settings=self.settings, init=init)
            self._fit = (model, y_std, CachedGP.of(model))
            self._init = {k: p.detach().clone() for k, p in model.named_parameters()}
            self._key = key
        return self._fit

    def _propose(self, x: Tensor, obj: Tensor, bounds: Tensor, pending: Tensor | None) -> Tensor:
        from botorch.utils.transforms import normalize, unnormalize

        d = bounds.shape[-1]
        keep = torch.isfinite(x).all(-1)
        x, obj = x[keep], obj[keep]
        if int(torch.isfinite(obj).sum()) < 2:
            return unnormalize(torch.rand(1, d, dtype=torch.float64), bounds)
        try:
            _, y_std, gp = self._model(x, obj, bounds)
        except Exception as exc:  # never let a bad fit stop the study: fall back to a random point
            import logging

            logging.getLogger(__name__).warning("GP fit failed (%s); proposing a random point", exc)
            return unnormalize(torch.rand(1, d, dtype=torch.float64), bounds)
        if pending is not None:
            pending = normalize(pending[torch.isfinite(pending).all(-1)], bounds=bounds).clamp(0, 1)
        cand = maximize_acquisition(gp, y_std.max(), pending, settings=self.settings, q_form=self.q_form)
        taken = gp.x if pending is None else torch.cat([gp.x, pending])
        if (cand - taken).abs().amax(-1).min() < 1e-6:  # e.g. a box corner already run
            cand = torch.rand(1, d, dtype=torch.float64)
        return unnormalize(cand, bounds)
