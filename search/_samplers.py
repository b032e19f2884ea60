"""Samplers by name: metabp's BoTorch GP sampler and the baselines it must beat.

Every entry of :data:`SAMPLERS` is a factory ``f(*, bounds, names, n_initial, seed, acquisition, log)``
(``botorch`` also takes ``engine``, an :class:`EngineSettings`) returning an
``optuna.samplers.BaseSampler``, so storage, workers and optuna-dashboard work the same for all of
them. ``log`` flags the parameters searched on a log scale; the study declares them with
``FloatDistribution(lo, hi, log=True)``, which Optuna's samplers and :class:`EngineSampler` (its GP
sees ``log x``) honour, and the start designs (``_sobol.py``) spread their points in ``log x``:

========  ==================================================================================
botorch   Latin hypercube start (``n_initial`` points, :class:`LatinSampler`), then a GP + LogEI
          proposal (``_botorch.py``) by :class:`EngineSampler` (``_gp_sampler.py``); points other
          workers still run are pending points, and workers propose one at a time (no two start the
          same point).
random    ``optuna.samplers.RandomSampler``: uniform in the box.
tpe       ``optuna.samplers.TPESampler`` (multivariate, constant liar for parallel workers).
gp        ``optuna.samplers.GPSampler`` (Optuna's own GP + LogEI), deterministic objective.
cmaes     ``optuna.samplers.CmaEsSampler`` from the box's centre, sigma0 = min width / 6.
========  ==================================================================================
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import optuna
from optuna.samplers import BaseSampler

from metabp.exceptions import ConfigError

from ._config import ACQUISITIONS
from ._es import es_sampler
from ._settings import EngineSettings
from ._sobol import Bounds, LatinSampler, SobolSampler, check_space

__all__ = ["SAMPLERS", "LatinSampler", "SobolSampler", "make_sampler"]
SamplerFactory = Callable[..., BaseSampler]


def _botorch(*, bounds: Bounds, names: Sequence[str], n_initial: int, seed: int, acquisition: str = "logei",
             log: Sequence[bool] | None = None, engine: EngineSettings | None = None):
    from ._botorch import Proposer
    from ._gp_sampler import EngineSampler
    from ._settings import DEFAULT

    return EngineSampler(proposer=Proposer(q_form=acquisition == "qlogei", settings=engine or DEFAULT),
                         independent_sampler=LatinSampler(n=n_initial, bounds=bounds, names=names,
                                                          seed=seed, log=log),
                         n_startup_trials=n_initial)


def _random(*, bounds: Bounds, names: Sequence[str], n_initial: int, seed: int, acquisition: str = "logei",
            log: Sequence[bool] | None = None):
    return optuna.samplers.RandomSampler(seed=seed)


def _tpe(*, bounds: Bounds, names: Sequence[str], n_initial: int, seed: int, acquisition: str = "logei",
         log: Sequence[bool] | None = None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=n_initial, multivariate=True, constant_liar=True
        )


def _gp(*, bounds: Bounds, names: Sequence[str], n_initial: int, seed: int, acquisition: str = "logei",
        log: Sequence[bool] | None = None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.GPSampler(
            seed=seed, n_startup_trials=n_initial, deterministic_objective=True
        )


def _cmaes(*, bounds: Bounds, names: Sequence[str], n_initial: int, seed: int, acquisition: str = "logei",
           log: Sequence[bool] | None = None):
    # Optuna's defaults are the box's centre and sigma0 = min width / 6 (x0/sigma0 are deprecated).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


#: name -> factory. Add an entry to make a sampler selectable in study files and ``minimize``.
SAMPLERS: dict[str, SamplerFactory] = {
    "botorch": _botorch,
    "random": _random,
    "tpe": _tpe,
    "gp": _gp,
    "cmaes": _cmaes,
    "es": es_sampler,  # antithetic evolution strategies, state replayed from storage (_es.py)
}


def make_sampler(
    name: str,
    *,
    bounds: Bounds,
    names: Sequence[str],
    n_initial: int,
    seed: int = 0,
    acquisition: str = "logei",
    log: Sequence[bool] | None = None,
    engine: EngineSettings | None = None,
) -> BaseSampler:
    """Build the sampler ``name`` from :data:`SAMPLERS`.

    Args:
        name: a key of :data:`SAMPLERS`.
        bounds: ``(lo, hi)`` per parameter, in the order of ``names``.
        names: parameter names.
        n_initial: trials drawn before the model proposes (a Latin hypercube for ``botorch``).
        seed: the sampler's seed.
        acquisition: ``"logei"`` or ``"qlogei"`` (``botorch`` only; others accept and ignore it).
        log: one bool per name, True where the parameter is searched on a log scale (bound > 0).
        engine: the GP engine's :class:`EngineSettings` (``botorch`` only; default ``DEFAULT``).

    Raises:
        ConfigError: naming the bad argument, its value and what is allowed.
    """
    if not isinstance(name, str) or name not in SAMPLERS:
        raise ConfigError(f"sampler={name!r}: unknown sampler; choose one of {', '.join(SAMPLERS)}")
    if acquisition not in ACQUISITIONS:
        raise ConfigError(f"acquisition={acquisition!r}: choose one of {', '.join(ACQUISITIONS)}")
    if isinstance(n_initial, bool) or not isinstance(n_initial, int) or n_initial < 1:
        raise ConfigError(f"n_initial={n_initial!r}: must be an integer >= 1")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed={seed!r}: must be an integer in [0, 2**32)")
    if engine is not None and (name != "botorch" or not isinstance(engine, EngineSettings)):
        raise ConfigError(f"engine={engine!r}: an EngineSettings value, for sampler 'botorch' only "
                          f"(sampler={name!r})")
    log = check_space(bounds, names, log)
    extra = {} if engine is None else {"engine": engine}
    return SAMPLERS[name](bounds=bounds, names=names, n_initial=n_initial, seed=int(seed),
                          acquisition=acquisition, log=log, **extra)
