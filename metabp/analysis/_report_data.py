r"""The numbers of a study report, computed once: :class:`ReportData`.

:func:`compute` reads the study's trials (Optuna ``FrozenTrial`` objects in the stored schema:
params ``omega_i`` and optionally ``lr``, value = score, user attrs ``step_losses``,
``diverged``, ``test_accuracy``, ``heldout_aulc``), trains plain backprop once for the loss
figure, and summarises:

* the best candidate by search score and, when trials were validated, by held-out score (the
  one ``metabp export`` picks);
* its implicit learning rate :math:`\beta(z) = \mathrm{lr}\, g(z)/\sigma'(z)`;
* the spread of the top candidates' ``g(z)`` (divided by ``max |g|`` under scale-invariant
  optimizers: :data:`metabp._implicit_lr.SCALE_NOTE`);
* optionally, the gradient alignment of the chosen ``g`` over one training run;
* for a study with one ``g`` per site (``sites``), the curves and the spread at each site;
* overfitting: held-out minus search score of each validated candidate, and their rank
  agreement (Spearman's :math:`\rho`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metabp import SCALE_INVARIANT, MetaNet, PerSite
from metabp.exceptions import ConfigError


def trial_omega(trial: Any) -> list[float]:
    """``[omega_0, ..., omega_{P-1}]`` from an Optuna trial's params, in index order."""
    from metabp.search import schema

    keys = sorted((k for k in trial.params if k.startswith(schema.OMEGA_PREFIX)),
                  key=lambda k: int(k.removeprefix(schema.OMEGA_PREFIX)))
    if not keys:
        raise ConfigError(f"trial {trial.number} has no omega_i params ({sorted(trial.params)}); "
                          "is this a metabp study?")
    return [float(trial.params[k]) for k in keys]


def trial_bfn(trial: Any, *, hidden: int = 1, act: str = "tanh",
              sites: Sequence[str] = ()) -> MetaNet | PerSite:
    """The meta-network ``g_omega`` a trial scored; with ``sites``, the ``PerSite`` whose site ``j``
    is the meta-network of ``omega[j*P : (j+1)*P]``, ``P = 3*hidden+1``."""
    omega = trial_omega(trial)
    if not sites:
        return MetaNet(hidden, act, omega=omega)
    p = 3 * hidden + 1
    if len(omega) != p * len(sites):
        raise ConfigError(f"trial {trial.number} has {len(omega)} omega_i params; {len(sites)} sites of "
                          f"3*hidden+1 = {p} need {p * len(sites)}")
    from metabp.search import schema

    chunks = schema.by_site(omega, sites, p)
    return PerSite({s: MetaNet(hidden, act, omega=chunk) for s, chunk in chunks.items()})


def trial_lr(trial: Any, default: float) -> float:
    """The trial's searched ``lr`` param, else ``default`` (the target's)."""
    from metabp.search import schema

    lr = trial.params.get(schema.LR)
    return float(lr) if lr is not None else float(default)


def trial_accuracy(trial: Any) -> float | None:
    """The trial's test accuracy: its ``test_accuracy`` user attr, else the mean over its
    ``per_seed`` entries (None when neither is stored)."""
    from metabp.search import schema

    acc = trial.user_attrs.get(schema.TEST_ACCURACY)
    if acc is not None:
        return float(acc)
    per_seed = trial.user_attrs.get(schema.PER_SEED) or []
    values = [float(r[schema.TEST_ACCURACY]) for r in per_seed
              if isinstance(r, Mapping) and r.get(schema.TEST_ACCURACY) is not None]
    return math.fsum(values) / len(values) if values else None


def completed(trials: Sequence[Any]) -> list[Any]:
    """Completed trials with a finite value, in trial-number order."""
    import optuna

    return sorted((t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None
                   and math.isfinite(t.value)), key=lambda t: t.number)


def heldout(trial: Any) -> dict | None:
    """The trial's ``heldout_aulc`` user attr (``mean``, ``std``, ``seeds``, ``values``), if validated."""
    from metabp.search import schema

    h = trial.user_attrs.get(schema.HELDOUT_AULC)
    return h if isinstance(h, Mapping) and "mean" in h else None


def step_losses(trial: Any) -> list[float] | None:
    """The trial's per-step training losses on its first seed, if stored."""
    from metabp.search import schema

    return trial.user_attrs.get(schema.STEP_LOSSES) or None


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation of ``a`` and ``b`` (NaN for fewer than 3 pairs; no tie correction).

    Example:
        >>> spearman([1, 2, 3], [10, 30, 20])
        0.5
    """
    if len(a) < 3:
        return math.nan
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass
class Shape:
    """The chosen ``g`` at one site: its ``curves`` (``z``, ``g``, ``dsigma``, ``beta``), the top
    candidates' ``g`` there (``top_g``) and the width of their 10-90% band over ``z`` (``band``)."""

    curves: dict[str, np.ndarray]
    top_g: list[Any]
    band: np.ndarray

    @property
    def beta_range(self) -> tuple[float, float] | None:
        """Smallest and largest defined beta(z) on the plotted z (None: undefined everywhere)."""
        b = self.curves["beta"][np.isfinite(self.curves["beta"])]
        return (float(b.min()), float(b.max())) if b.size else None

    @property
    def injected(self) -> float:
        """max |g| where sigma' = 0 (0 when sigma' never vanishes on the plotted z)."""
        zero = self.curves["dsigma"] == 0
        return float(np.abs(self.curves["g"][zero]).max()) if zero.any() else 0.0

    @property
    def spread(self) -> tuple[float, float, float]:
        """Mean width of the top candidates' 10-90% band over all z, over z < 0 and over z > 0."""
        z = self.curves["z"]
        return (float(np.nanmean(self.band)), float(np.nanmean(self.band[z < 0])),
                float(np.nanmean(self.band[z > 0])))


@dataclass
class ReportData:
    """Everything the report's figures and text show, as numbers.

    Attributes:
        name, sampler, spec, where, hidden, act, seeds: what the study searched.
        trials: every trial; ``done``: completed ones by number; ``ranked``: by search score.
        best: best by search score; ``chosen``: what ``metabp export`` picks (best held-out when
            validated, else ``best``), its ``g`` and ``lr``.
        plain: plain backprop's ``Run`` on ``seeds[0]`` (the first seed's curve, as the trials'
            ``step_losses``); ``backprop``: its score on the search seeds, in the trials' units.
        multi_target: scores are ratios to backprop averaged over targets (backprop = 1).
        validated: validated trials in search-score order; ``controls``: the study's held-out
            controls (``backprop``, ``tuned_lr``).
        baselines: label -> completed trials of random/TPE searches of the same problem.
        sites: the sites of a study with one ``g`` per site (``g`` is then a ``PerSite``), else [].
        shapes: site (or ``where``) -> :class:`Shape`; ``curves``, ``top_g``, ``band`` and their
            summaries are the first one's (the only one without ``sites``).
    """

    name: str
    sampler: str
    spec: Any
    where: str
    hidden: int
    act: str
    seeds: list[int]
    trials: list[Any]
    done: list[Any]
    ranked: list[Any]
    best: Any
    chosen: Any
    g: MetaNet | PerSite
    lr: float
    plain: Any
    backprop: float
    multi_target: bool = False
    validated: list[Any] = field(default_factory=list)
    controls: dict = field(default_factory=dict)
    baselines: dict[str, list] = field(default_factory=dict)
    sites: list[str] = field(default_factory=list)
    shapes: dict[str, Shape] = field(default_factory=dict)
    alignment: Any = None

    @property
    def scale_invariant(self) -> bool:
        return self.spec.optimizer in SCALE_INVARIANT

    @property
    def shape(self) -> Shape:
        return next(iter(self.shapes.values()))

    curves = property(lambda self: self.shape.curves)
    top_g = property(lambda self: self.shape.top_g)
    band = property(lambda self: self.shape.band)
    beta_range = property(lambda self: self.shape.beta_range)
    injected = property(lambda self: self.shape.injected)
    spread = property(lambda self: self.shape.spread)

    @property
    def diverged(self) -> int:
        from metabp.search import schema

        return sum(bool(t.user_attrs.get(schema.DIVERGED)) for t in self.done)

    @property
    def gain(self) -> float:
        """(backprop - best search score) / backprop: > 0 when the best beats backprop on its seeds."""
        return (self.backprop - self.best.value) / self.backprop if self.backprop else math.nan

    @property
    def overfit(self) -> list[float]:
        """Held-out minus search score of each validated trial (> 0: worse on new seeds)."""
        return [heldout(t)["mean"] - t.value for t in self.validated]

    @property
    def rank_agreement(self) -> float:
        """Spearman's rho between search and held-out scores of the validated trials."""
        return spearman([t.value for t in self.validated], [heldout(t)["mean"] for t in self.validated])

    def control(self, name: str) -> dict | None:
        """The held-out control ``name`` (``"backprop"`` or ``"tuned_lr"``) with its ``mean``, if stored."""
        from metabp.search import schema

        key = {"backprop": schema.CONTROL_BACKPROP, "tuned_lr": schema.CONTROL_TUNED_LR}[name]
        c = self.controls.get(key)
        return c if isinstance(c, Mapping) and "mean" in c else None

    def bfn(self, trial: Any) -> MetaNet | PerSite:
        return trial_bfn(trial, hidden=self.hidden, act=self.act, sites=self.sites)


class Normalised:
    """``g / max|g|`` over the pre-activations ``z``: the shape of ``g`` at a common scale."""

    def __init__(self, g: Any, z: Any) -> None:
        self.g = g
        self.scale = float(g(z).abs().max()) or 1.0

    def __call__(self, z: Any, activation: Any = None) -> Any:
        return self.g(z, activation) / self.scale


def _shape(g: Any, top_g: list[Any], data: ReportData) -> Shape:
    """:class:`Shape` of ``g`` among ``top_g`` (each divided by its max |g| under Adam-like optimizers)."""
    import torch

    from metabp import get_activation
    from metabp.plots import bfunction_curves

    curves = bfunction_curves(g, data.spec.activation, lr=data.lr)
    z = torch.from_numpy(curves["z"])
    if data.scale_invariant:
        top_g = [Normalised(h, z) for h in top_g]
    act = get_activation(data.spec.activation)
    values = np.stack([h(z, act).double().numpy() for h in top_g])
    return Shape(curves, top_g, np.quantile(values, 0.9, 0) - np.quantile(values, 0.1, 0))


def shapes(data: ReportData, *, top: int = 10) -> None:
    """Fill ``data.shapes``: the chosen g's curves (z, g, sigma', beta) and the spread of the top
    candidates, at ``data.where`` or at each of ``data.sites``."""
    tops = [data.bfn(t) for t in data.ranked[: max(1, min(top, len(data.ranked)))]]
    if not data.sites:
        data.shapes = {data.where: _shape(data.g, tops, data)}
        return
    data.shapes = {s: _shape(data.g[s], [h[s] for h in tops], data) for s in data.sites}


@dataclass(frozen=True)
class ReportRequest:
    """What a report is about and how to make it: the arguments of :func:`compute` besides the trials.

    Attributes:
        spec: the (first) target (``metabp.targets.TargetSpec``) the trials trained.
        where: the patch site; None for ``spec.where``.
        hidden, act: the meta-network's shape.
        sites: one ``g`` per site (a study's ``sites``): trial ``omega`` is split site by site; ``()``:
            one ``g`` at ``where``.
        name, sampler: the study's name and sampler, for the text.
        seeds: the search seeds (a trial's score is its mean over them).
        backprop: the study's ``backprop`` user attr (``mean`` on the search seeds), if stored.
        controls: the study's ``heldout_controls`` (``backprop``, ``tuned_lr``), if validated.
        multi_target: scores are ratios to backprop over several targets (backprop scores 1).
        baselines: label -> trials of baseline searches (random, TPE) on the same problem.
        top: how many of the best candidates to draw in the spread figure.
        alignment: train the chosen ``g`` once more to record gradient alignment.
        device, data_dir: for the training runs the report makes (plain backprop, alignment).
        progress: tqdm bars.
    """

    spec: Any
    where: str | None = None
    hidden: int = 1
    act: str = "tanh"
    name: str = "study"
    sampler: str = "study"
    seeds: Sequence[int] = (0,)
    backprop: Mapping | None = None
    controls: Mapping | None = None
    multi_target: bool = False
    baselines: Mapping[str, Sequence[Any]] | None = None
    top: int = 10
    alignment: bool = True
    device: str = "cpu"
    data_dir: str | None = None
    progress: bool = False
    sites: Sequence[str] = ()

    def __post_init__(self) -> None:
        if isinstance(self.sites, str):
            raise ConfigError(f"sites={self.sites!r}: give a list of sites, e.g. [{self.sites!r}]")
        if self.sites and self.where is not None:
            raise ConfigError(f"where={self.where!r} with sites {list(self.sites)}: each site's g goes at "
                              "its site; leave where at None")


def _backprop_score(r: ReportRequest, seeds: list[int], plain: Any) -> float:
    """Backprop's score on the search seeds, in the trials' units: 1 for ratios, else the stored
    mean, else plain's AULC (one seed) or a fresh mean over the seeds."""
    from metabp.analysis._tuning import mean_aulc

    if r.multi_target:
        return 1.0
    if r.backprop is not None and "mean" in r.backprop:
        return float(r.backprop["mean"])
    if len(seeds) == 1:
        return plain.aulc
    return mean_aulc(r.spec, None, None, seeds, device=r.device, data_dir=r.data_dir)


def compute(trials: Sequence[Any], request: ReportRequest) -> ReportData:
    """The numbers of the report (module docstring); trains plain backprop once on ``seeds[0]``,
    and on every search seed when ``request.backprop`` (the study's stored score) is missing; with
    ``request.alignment``, trains the chosen ``g`` once more on ``seeds[0]`` recording the alignment."""
    from metabp.targets import train

    r = request
    done = completed(trials)
    if not done:
        raise ConfigError(f"study {r.name!r} has no completed trials yet; run `metabp search` first")
    seeds = [int(s) for s in r.seeds]
    ranked = sorted(done, key=lambda t: (t.value, t.number))
    validated = [t for t in ranked if heldout(t) is not None]
    chosen = min(validated, key=lambda t: (heldout(t)["mean"], t.number)) if validated else ranked[0]
    plain = train(r.spec, None, None, seeds[0], device=r.device, data_dir=r.data_dir, progress=r.progress)
    sites = list(r.sites)
    data = ReportData(
        name=r.name, sampler=r.sampler, spec=r.spec, where=", ".join(sites) or r.where or r.spec.where,
        hidden=r.hidden, act=r.act, seeds=seeds, trials=list(trials), done=done, ranked=ranked,
        best=ranked[0], chosen=chosen, g=trial_bfn(chosen, hidden=r.hidden, act=r.act, sites=sites),
        lr=trial_lr(chosen, r.spec.lr),
        plain=plain, backprop=_backprop_score(r, seeds, plain), multi_target=r.multi_target,
        validated=validated, controls=dict(r.controls or {}),
        baselines={k: completed(v) for k, v in (r.baselines or {}).items() if completed(v)}, sites=sites,
    )
    shapes(data, top=r.top)
    if r.alignment:
        import dataclasses

        from metabp.analysis._alignment import alignment_run

        data.alignment = alignment_run(dataclasses.replace(r.spec, lr=data.lr), data.g,
                                       where=None if sites else data.where,
                                       seed=seeds[0], device=r.device, data_dir=r.data_dir,
                                       progress=r.progress)
    return data
