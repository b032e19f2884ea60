"""The engine's fixed choices (:class:`EngineSettings`), passed by value to every proposal.

They were picked with ``benchmarks/search_efficiency.py``'s A/B mode (samplers ``botorch:NAME=VALUE``)
on its functions; ``_botorch.py`` says what each step of a proposal does with them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from metabp.exceptions import ConfigError

from ._warps import WARPS

__all__ = ["EngineSettings", "DEFAULT"]


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
