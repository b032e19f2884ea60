"""A validated, frozen :class:`StudyConfig`: what to train, which meta-network, how to search.

Study files (TOML) are read by :func:`metabp.search.load_study` (``_load.py``); a config built in
code is checked here, in ``StudyConfig.__post_init__``. Every error names the key, the value and
what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metabp.exceptions import ConfigError

if TYPE_CHECKING:
    from metabp import MetaNet, PerSite

from . import _schema as schema

SAMPLER_NAMES = ("botorch", "random", "tpe", "gp", "cmaes", "es")
ACQUISITIONS = ("logei", "qlogei")
#: Largest seed accepted (training, validation and sampler seeds): numpy's and torch's range.
MAX_SEED = 2**32 - 1
#: Largest ``[metanet] hidden``: the meta-network is a scalar function, a few units suffice.
MAX_HIDDEN = 64
#: Largest learning rate accepted anywhere in a study file.
MAX_LR = 1e3
#: Largest trial budget, batch size ``q`` and ``top_k``.
MAX_TRIALS = 100_000


@dataclasses.dataclass(frozen=True)
class TargetEntry:
    """One target of a study: a preset, its overrides and the patch site.

    Attributes:
        preset: a ``metabp.targets`` preset name.
        overrides: ``(key, value)`` pairs passed to ``get_target`` (sorted by key).
        where: patch site, or ``None`` for the preset's.
    """

    preset: str
    overrides: tuple[tuple[str, Any], ...] = ()
    where: str | None = None

    @property
    def name(self) -> str:
        return self.preset

    def spec(self):
        """The validated ``metabp.targets.TargetSpec`` (imports the targets layer)."""
        from metabp.targets import get_target

        return get_target(self.preset, **dict(self.overrides))


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """One study. Frozen and validated.

    Attributes:
        name: the study's name in its storage.
        target, overrides, where: the (first) target's preset, ``get_target`` overrides and patch site.
        targets: every target (one :class:`TargetEntry` each); default ``(target, overrides, where)``.
            With more than one, a candidate's score is the mean over targets and seeds of
            ``AULC(g) / AULC(backprop)`` on the same target and seed.
        seeds: training seeds; a candidate's score is its mean over them (common random numbers:
            every candidate sees the same seeds). ``seed`` is ``seeds[0]``.
        lr_bounds: ``(lo, hi)`` when the targets' learning rate is searched with omega (log scale,
            parameter ``lr``); ``None``: each target's own lr.
        validate_seeds: held-out seeds for the top candidates after the search (``()``: none).
        validate_top_k: how many of the best candidates are validated.
        device: torch device for training. compile: ``torch.compile`` the training step.
        data_dir: dataset directory passed to ``train`` (``None``: the targets' default).
        hidden, act: the meta-network's shape (``metabp.MetaNet(hidden, act)``).
        sites: one g per site, each with its own omega (activation names or globs of the targets'
            models, e.g. ``("act1", "act2")``); ``()``: one g at ``where``. Excludes ``where``.
        bounds: one ``(lo, hi)`` per omega entry, :attr:`num_params` of them (``3*hidden+1``
            pairs are repeated for each site).
        sampler, acquisition, q, n_initial, n_trials, sampler_seed: the search. With
            ``sampler = "es"``, ``q`` is the population (a generation trains as one batch).
        population, sigma, step_size: ``sampler = "es"`` only (``search/_es.py``); ``None``: its
            defaults.
        storage: Optuna storage URL or journal path; ``None``: ``<study file stem>.journal`` beside it.
        path: the study file this came from (``None`` when built in code).
    """

    name: str
    target: str
    overrides: tuple[tuple[str, Any], ...] = ()
    where: str | None = None
    seeds: tuple[int, ...] = (0,)
    device: str = "cpu"
    data_dir: str | None = None
    hidden: int = 1
    act: str = "tanh"
    bounds: tuple[tuple[float, float], ...] = ()
    sampler: str = "botorch"
    acquisition: str = "logei"
    q: int = 1
    n_initial: int = 8
    n_trials: int = 40
    sampler_seed: int = 0
    storage: str | None = None
    path: str | None = None
    targets: tuple[TargetEntry, ...] = ()
    lr_bounds: tuple[float, float] | None = None
    validate_seeds: tuple[int, ...] = ()
    validate_top_k: int = 5
    compile: bool = False
    population: int | None = None
    sigma: float | None = None
    step_size: float | None = None
    sites: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        at = f" in {self.path}" if self.path else ""
        if not isinstance(self.name, str) or not self.name or len(self.name) > 200:
            raise ConfigError(f"name = {self.name!r}{at}: the study name must be a non-empty string")
        if not isinstance(self.target, str) or not self.target:
            raise ConfigError(f"[target] preset = {self.target!r}{at}: give a target preset name, "
                              'e.g. preset = "gaussians-mlp3"')
        if not self.targets:
            object.__setattr__(self, "targets", (TargetEntry(self.target, self.overrides, self.where),))
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ConfigError(f"[[targets]]{at}: preset {names!r} listed twice; give each target once")
        check_int("[metanet] hidden", self.hidden, 1, MAX_HIDDEN, at)
        if not isinstance(self.act, str):
            raise ConfigError(f"[metanet] act = {self.act!r}{at}: must be an activation name string")
        object.__setattr__(self, "seeds", check_seeds("seeds", self.seeds, at))
        object.__setattr__(self, "validate_seeds", check_seeds("[validate] seeds", self.validate_seeds, at,
                                                               allow_empty=True))
        both = sorted(set(self.seeds) & set(self.validate_seeds))
        if both:
            raise ConfigError(f"[validate] seeds{at}: {both} also in the search seeds {list(self.seeds)}; "
                              "held-out seeds must differ from the search's")
        check_int("[validate] top_k", self.validate_top_k, 1, MAX_TRIALS, at)
        self._check_search(at)
        if self.lr_bounds is not None:
            object.__setattr__(self, "lr_bounds", check_lr_bounds(self.lr_bounds, at))
        if not isinstance(self.compile, bool):
            raise ConfigError(f"compile = {self.compile!r}{at}: must be true or false")
        self._check_sites(at)
        object.__setattr__(self, "bounds", check_bounds(self.bounds, self.site_params, len(self.sites), at))
        for i, (lo, hi) in enumerate(self.bounds):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi and max(-lo, hi) <= 1e6):
                raise ConfigError(f"[search] bounds[{i}] = [{lo}, {hi}]{at}: need finite lo < hi "
                                  "within [-1e6, 1e6]")

    def _check_sites(self, at: str) -> None:
        """``sites``: a tuple of distinct non-empty names; no ``where`` beside it (study or target)."""
        if not self.sites:
            object.__setattr__(self, "sites", ())
            return
        object.__setattr__(self, "sites", check_sites(self.sites, at))
        wheres = [(t.preset, t.where) for t in self.targets if t.where is not None]
        if self.where is not None or wheres:
            label = "where" if self.where is not None else f"[[targets]] {wheres[0][0]} where"
            where = self.where if self.where is not None else wheres[0][1]
            raise ConfigError(f"{label} = {where!r} and sites = {list(self.sites)!r}{at}: give one of them "
                              "(where: one g shared by the sites it selects; sites: one g per site)")

    def _check_search(self, at: str) -> None:
        if self.sampler not in SAMPLER_NAMES:
            raise ConfigError(f"[search] sampler = {self.sampler!r}{at}: unknown sampler; "
                              f"choose one of {', '.join(SAMPLER_NAMES)}")
        if self.acquisition not in ACQUISITIONS:
            raise ConfigError(f"[search] acquisition = {self.acquisition!r}{at}: unknown acquisition; "
                              f"choose one of {', '.join(ACQUISITIONS)}")
        check_int("[search] q", self.q, 1, 1024, at)
        self._check_es(at)
        if self.q > 1 and self.acquisition != "qlogei" and self.sampler != "es":
            raise ConfigError(f"[search] q = {self.q}{at} needs acquisition = \"qlogei\" "
                              f"(acquisition = {self.acquisition!r} proposes one point at a time)")
        check_int("[search] n_initial", self.n_initial, 1, MAX_TRIALS, at)
        check_int("[search] n_trials", self.n_trials, 1, MAX_TRIALS, at)
        check_int("[search] seed", self.sampler_seed, 0, MAX_SEED, at)

    def _check_es(self, at: str) -> None:
        """ES settings: only with ``sampler = "es"``, validated, defaults filled; ``q`` set to the
        population (the study file may not give another ``q``: ``_load.py`` checks that)."""
        from ._es import DEFAULTS, check_es

        given = {k: getattr(self, k) for k in DEFAULTS}
        if self.sampler != "es":
            extra = [k for k, v in given.items() if v is not None]
            if extra:
                raise ConfigError(f"[search] {extra[0]} = {given[extra[0]]!r}{at}: only used by "
                                  f'sampler = "es" (sampler = {self.sampler!r})')
            return
        pick = {k: DEFAULTS[k] if v is None else v for k, v in given.items()}
        population, sigma, step_size = check_es(pick["population"], pick["sigma"], pick["step_size"], at)
        for key, value in (("population", population), ("sigma", sigma), ("step_size", step_size),
                           ("q", population)):
            object.__setattr__(self, key, value)

    @property
    def seed(self) -> int:
        """The first training seed (``seeds[0]``)."""
        return self.seeds[0]

    @property
    def multi_target(self) -> bool:
        """Whether scores are ratios to backprop averaged over several targets."""
        return len(self.targets) > 1

    @property
    def site_params(self) -> int:
        """Weights of one meta-network, ``P = 3*hidden+1``."""
        return 3 * self.hidden + 1

    @property
    def num_params(self) -> int:
        """Length of omega, ``P * max(1, len(sites))``: site ``j`` owns ``omega_{jP} .. omega_{jP+P-1}``
        (the box has one more with ``lr``)."""
        return self.site_params * max(1, len(self.sites))

    @property
    def param_names(self) -> list[str]:
        """Optuna parameter names ``omega_0 .. omega_{N-1}`` (``N`` = :attr:`num_params`), then ``lr``
        when it is searched."""
        return [schema.omega(i) for i in range(self.num_params)] + ([schema.LR] if self.lr_bounds else [])

    @property
    def search_bounds(self) -> list[tuple[float, float]]:
        """``(lo, hi)`` per name in :attr:`param_names`."""
        return list(self.bounds) + ([self.lr_bounds] if self.lr_bounds else [])

    @property
    def search_log(self) -> list[bool]:
        """Per name in :attr:`param_names`: searched on a log scale (only ``lr``)."""
        return [False] * self.num_params + ([True] if self.lr_bounds else [])

    def candidate(self, omega: Any) -> MetaNet | PerSite:
        """The b-function of ``omega`` (``num_params`` values): ``metabp.MetaNet(hidden, act, omega)``,
        or with ``sites`` a ``metabp.PerSite`` whose site ``j`` is the MetaNet of
        ``omega[j*P : (j+1)*P]`` (``P`` = :attr:`site_params`)."""
        import metabp

        if not self.sites:
            return metabp.MetaNet(self.hidden, self.act, omega=omega)
        chunks = schema.by_site(omega, self.sites, self.site_params)
        return metabp.PerSite({site: metabp.MetaNet(self.hidden, self.act, omega=chunk)
                               for site, chunk in chunks.items()})

    def target_spec(self, index: int = 0):
        """The validated ``metabp.targets.TargetSpec`` of target ``index`` (imports the targets layer)."""
        entry = self.targets[index]
        try:
            return entry.spec()
        except ConfigError as exc:
            at = f" in {self.path}" if self.path else ""
            raise ConfigError(f"[target] {entry.preset}{at}: {exc}") from exc

    def default_storage(self) -> str:
        """The storage used when none is given: a journal file beside the study file."""
        if self.storage is not None:
            return self.storage
        base = Path(self.path).with_suffix(".journal") if self.path else Path(f"{self.name}.journal")
        return str(base)

    def replace(self, **changes: Any) -> StudyConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def identity(self) -> dict[str, Any]:
        """What must agree between workers sharing one study (stored with the study, as JSON)."""
        return json.loads(json.dumps({
            "targets": [[t.preset, {k: v for k, v in t.overrides}, t.where] for t in self.targets],
            "seeds": list(self.seeds),
            "hidden": self.hidden,
            "act": self.act,
            "bounds": [list(b) for b in self.bounds],
            "lr_bounds": list(self.lr_bounds) if self.lr_bounds else None,
            **({"sites": list(self.sites)} if self.sites else {}),
            **({"es": {"population": self.population, "sigma": self.sigma, "step_size": self.step_size}}
               if self.sampler == "es" else {}),
        }))


def check_int(key: str, value: Any, lo: int, hi: int, at: str) -> int:
    """``value`` if it is an int (not a bool) in ``[lo, hi]``, else a ConfigError naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{key} = {_short(value)}{at}: must be an integer in [{lo}, {hi}]")
    return value


def check_number(key: str, value: Any, at: str, *, lo: float, hi: float, lo_open: bool = True) -> float:
    """``float(value)`` for a finite int/float (not a bool) in ``(lo, hi]`` (``[lo, hi]``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok:
        try:
            v = float(value)
        except OverflowError:
            ok = False
    if not ok or not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
        left = "(" if lo_open else "["
        raise ConfigError(f"{key} = {_short(value)}{at}: must be a number in {left}{lo:g}, {hi:g}]")
    return v


def check_seeds(key: str, value: Any, at: str, *, allow_empty: bool = False) -> tuple[int, ...]:
    """A tuple of distinct seeds in ``[0, MAX_SEED]``."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, list | tuple) or (not value and not allow_empty) or len(value) > 1000:
        raise ConfigError(f"{key} = {_short(value)}{at}: must be a list of distinct integer seeds, "
                          "e.g. [0, 1, 2]")
    for s in value:
        check_int(key, s, 0, MAX_SEED, at)
    if len(set(value)) != len(value):
        raise ConfigError(f"{key} = {_short(value)}{at}: a seed is listed twice")
    return tuple(value)


def check_sites(value: Any, at: str) -> tuple[str, ...]:
    """``value`` as a tuple of 1 to 64 distinct, non-empty activation names (or globs)."""
    ok = isinstance(value, list | tuple) and 1 <= len(value) <= 64
    if not ok or not all(isinstance(s, str) and s.strip() for s in value):
        raise ConfigError(f"sites = {_short(value)}{at}: must be a list of 1 to 64 activation names, "
                          'one g per site, e.g. ["act1", "act2"]')
    if len(set(value)) != len(value):
        raise ConfigError(f"sites = {_short(value)}{at}: a site is listed twice; give each site once")
    return tuple(value)


def check_bounds(value: Any, per_site: int, sites: int, at: str) -> tuple[tuple[float, float], ...]:
    """One ``(lo, hi)`` per omega entry: ``per_site * max(1, sites)`` pairs, or ``per_site`` pairs
    repeated for each site."""
    num = per_site * max(1, sites)
    value = tuple(value) if isinstance(value, list | tuple) else value
    if isinstance(value, tuple) and len(value) == per_site and sites > 1:
        value = value * sites
    if not isinstance(value, tuple) or len(value) != num:
        got = f"{len(value)} (lo, hi) pairs" if isinstance(value, tuple) else _short(value)
        each = f" or {per_site} (repeated for each of the {sites} sites)" if sites > 1 else ""
        raise ConfigError(f"[search] bounds{at}: {got} for {num} omega entries "
                          f"at 3*hidden+1 = {per_site} per meta-network; give one box [lo, hi], "
                          f"{num} pairs{each}")
    for i, pair in enumerate(value):
        numbers = isinstance(pair, list | tuple) and all(isinstance(v, int | float) for v in pair)
        if not numbers or len(pair) != 2 or any(isinstance(v, bool) for v in pair):
            raise ConfigError(f"[search] bounds[{i}] = {_short(pair)}{at}: must be [lo, hi] numbers")
    return tuple((lo, hi) for lo, hi in value)


def check_lr_bounds(value: Any, at: str) -> tuple[float, float]:
    """``(lo, hi)`` with ``0 < lo < hi <= MAX_LR``."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ConfigError(f"[search] lr = {_short(value)}{at}: must be [lo, hi], e.g. [1e-3, 1.0]")
    lo = check_number("[search] lr[0]", value[0], at, lo=0.0, hi=MAX_LR)
    hi = check_number("[search] lr[1]", value[1], at, lo=0.0, hi=MAX_LR)
    if not lo < hi:
        raise ConfigError(f"[search] lr = [{lo:g}, {hi:g}]{at}: need lo < hi")
    return lo, hi


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
