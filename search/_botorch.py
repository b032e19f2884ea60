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
4. LogEI maximised over the box with ``optimize_acqf`` (multi-start L-BFGS-B) on a posterior whose
   Cholesky factor is computed once (:class:`CachedGP`). Points other workers still run (or
   earlier members of a batch) are *pending*: the GP is conditioned on them at its own posterior
   mean ("kriging believer", sequential greedy with fantasies), so the next point moves away from
   them at the price of one more Cholesky factor, and LogEI is lowered within :data:`EXCLUSION`
   of each pending point (a local penalty). ``acquisition = "qlogei"`` uses BoTorch's
   Monte-Carlo qLogEI with ``X_pending`` instead.

The choices are an :class:`EngineSettings` value passed to the engine; they were picked with
``benchmarks/search_efficiency.py``'s A/B mode (samplers ``botorch:NAME=VALUE``) on its functions.

Expected Improvement over the incumbent :math:`f^*` under the posterior
:math:`\mathcal{N}(\mu(x), \sigma(x)^2)`, with :math:`u = (\mu(x) - f^*)/\sigma(x)`:

.. math:: \mathrm{EI}(x) = \sigma(x)\,[\,u\,\Phi(u) + \varphi(u)\,], \qquad
          \mathrm{LogEI}(x) = \log \mathrm{EI}(x)

computed stably in log space (Ament et al., "Unexpected Improvements to Expected Improvement
for Bayesian Optimization", NeurIPS 2023); qLogEI is its Monte-Carlo batch form
:math:`\log \mathbb{E}[\max_j (f(x_j) - f^*)_+]` with a smoothed max and ReLU.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from metabp.exceptions import ConfigError

from ._mll import cholesky, fit_model, kernel
from ._warps import WARPS, cap_outliers, standardize, warp_log1p, warp_power

__all__ = ["EngineSettings", "DEFAULT", "fit_gp", "CachedGP", "maximize_acquisition", "WARPS",
           "cap_outliers", "warp_log1p", "warp_power"]


#: Radius (unit cube, Euclidean) around each pending point inside which LogEI is lowered by
#: ``log(dist / EXCLUSION)``: where the GP is already confident, the believed values alone leave
#: the next point within 1e-5 of a pending one; this keeps a batch spread out.
EXCLUSION = 1e-2


@dataclass(frozen=True)
class EngineSettings:
    """The engine's fixed choices, passed by value (``make_sampler(..., engine=...)``,
    ``minimize(..., engine=...)``). ``replace(**changes)`` gives a changed copy.

    Attributes:
        noise_var: observation noise on the standardised scale; small enough to interpolate
            deterministic values, large enough to keep the Cholesky factor of near-duplicate points
            stable (a jitter is added only where the factorisation fails). ``None``: inferred by the
            marginal likelihood (BoTorch's fit; ``ls_prior`` then does not apply).
        outlier_iqr: outputs beyond ``Q3 + outlier_iqr * IQR`` are capped before standardising.
        warp: ``"power"``, ``"log1p"`` or ``"cap"`` (see ``_warps.py``).
        num_restarts, raw_samples: L-BFGS-B starts of ``optimize_acqf`` and the Sobol points
            they are picked from.
        maxiter: L-BFGS-B iterations per acquisition optimisation.
        mc_samples: Monte-Carlo samples of qLogEI.
        warm_start: start each GP fit from the previous fit's hyperparameters.
        fit_gtol: L-BFGS-B gradient tolerance of the hyperparameter fit (scipy's default 1e-5;
            1e-3 reaches the same marginal likelihood to 4 digits on Hartmann-6 in 6 and 25
            dimensions at 100 points, in a quarter to 40% of the time), ``ftol`` 1e-7.
        local_starts: acquisition starts drawn around the best observed points (Gaussian, sd 0.05
            of the box) beside the ``raw_samples`` Sobol points; the ``num_restarts`` starts are
            picked from both by acquisition value (late in a search the LogEI peak is narrow and
            near the incumbent, where few Sobol points fall).
        kernel: ``"rbf"`` or ``"matern"`` (Matern-5/2), both ARD (lengthscale prior: ``ls_prior``).
        ls_prior: lengthscale prior of the plain-torch fit (``_mll.log_prior``): ``"dim_scaled"``
            (BoTorch's) or ``"optuna"`` (GPSampler's); BoTorch's fit always uses ``"dim_scaled"``.
        outputscale: the kernel times a fitted output scale (``ScaleKernel``; prior Gamma(2, 1) as
            GPSampler's), else 1 (BoTorch's default model).
        fast_fit: with a fixed noise, the marginal likelihood is maximised in plain torch
            (``_mll.py``: BoTorch's objective and optimiser, without GPyTorch's per-call overhead);
            ``False``: by ``fit_gpytorch_mll``, the same objective where ``ls_prior="dim_scaled"``.
        best_start: one L-BFGS-B start is the best observed point itself (as GPSampler's local search).
        tr_length: 0 (off), or a trust region: LogEI is maximised inside a box around the
            incumbent of side ``tr_length * l_i / geomean(l)`` on the unit cube (``l``: the GP's
            lengthscales), as TuRBO's (Eriksson et al. 2019) without its adaptation.
    """

    noise_var: float | None = 1e-6
    outlier_iqr: float = 3.0
    warp: str = "power"
    num_restarts: int = 4
    raw_samples: int = 512
    maxiter: int = 100
    mc_samples: int = 128
    warm_start: bool = True
    fit_gtol: float = 1e-3
    local_starts: int = 64
    tr_length: float = 0.0
    kernel: str = "matern"
    best_start: bool = False
    fast_fit: bool = True
    ls_prior: str = "optuna"
    outputscale: bool = True

    def __post_init__(self) -> None:
        if self.noise_var is not None and not (isinstance(self.noise_var, (int, float))
                                               and 0 < self.noise_var < 1):
            raise ConfigError(f"EngineSettings(noise_var={self.noise_var!r}): need None or 0 < noise_var < 1")
        if self.warp not in WARPS:
            raise ConfigError(f"EngineSettings(warp={self.warp!r}): choose one of {', '.join(WARPS)}")
        flags = [(b, (True, False)) for b in ("warm_start", "best_start", "fast_fit", "outputscale")]
        for name, allowed in (("kernel", ("rbf", "matern")), ("ls_prior", ("dim_scaled", "optuna")), *flags):
            if (v := getattr(self, name)) not in allowed:
                raise ConfigError(f"EngineSettings({name}={v!r}): choose {' or '.join(map(str, allowed))}")
        if not (isinstance(self.fit_gtol, (int, float)) and self.fit_gtol > 0):
            raise ConfigError(f"EngineSettings(fit_gtol={self.fit_gtol!r}): need a number > 0")
        if not (isinstance(self.tr_length, (int, float)) and 0 <= self.tr_length):
            raise ConfigError(f"EngineSettings(tr_length={self.tr_length!r}): need a number >= 0 (0: off)")
        if not (isinstance(self.outlier_iqr, (int, float)) and self.outlier_iqr > 0):
            raise ConfigError(f"EngineSettings(outlier_iqr={self.outlier_iqr!r}): need a number > 0")
        for name in ("num_restarts", "raw_samples", "maxiter", "mc_samples", "local_starts"):
            v, least = getattr(self, name), int(name != "local_starts")
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                raise ConfigError(f"EngineSettings({name}={v!r}): need an integer >= {least}")

    def replace(self, **changes: Any) -> EngineSettings:
        """A copy with ``changes``; an unknown name is a ``ConfigError`` listing the known ones."""
        known = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ConfigError(f"EngineSettings({', '.join(unknown)}=...): unknown; the settings are "
                              f"{', '.join(known)}")
        return dataclasses.replace(self, **changes)


DEFAULT = EngineSettings()


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
