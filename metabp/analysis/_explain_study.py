""":func:`explain` for a saved ``.bfn``: its target, lr, held-out seeds, box and baseline found from
its study (``--study``) or from the provenance its ``meta`` records."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from metabp.analysis._explain import explain
from metabp.analysis._explain_result import Explanation
from metabp.analysis._study import _target, heldout_seeds, open_study
from metabp.analysis._tuning import BASELINES
from metabp.exceptions import ConfigError


@dataclasses.dataclass
class Context:
    """What :func:`explain` needs besides ``g``."""

    spec: Any
    where: str | None
    seeds: list[int]
    box: tuple[float, float] | None
    baseline: tuple[str, Any]
    device: str = "cpu"
    data_dir: Any = None


def _box(bounds: Any) -> tuple[float, float] | None:
    """The one box every weight shares, else None (per-weight boxes are not checked)."""
    pairs = {tuple(map(float, b)) for b in bounds or ()}
    return pairs.pop() if len(pairs) == 1 else None


def from_study(study: Any, storage: str | None, n_seeds: int) -> Context:
    """The study's first target, held-out seeds above its search and validation seeds, its box, and
    backprop at the lr validation tuned (else at the target's own lr). The study must be validated."""
    st = open_study(study, storage)
    if st.best_heldout_trial() is None:
        raise ConfigError(f"study {st.name!r} has no held-out validation: run `metabp validate {study}` "
                          "first (explain compares on seeds neither the search nor validation used)")
    cfg = st.config
    spec, where = _target(cfg, None)
    from metabp.search import schema

    tuned = (st.heldout_controls.get(schema.CONTROL_TUNED_LR) or {}).get("lr")
    baseline = ((f"backprop, lr tuned alone ({tuned!r})", dataclasses.replace(spec, lr=float(tuned)))
                if tuned else (f"plain backprop (lr {spec.lr!r})", spec))
    return Context(spec, where, heldout_seeds(cfg, n_seeds), _box(cfg.bounds), baseline, cfg.device,
                   cfg.data_dir)


def from_meta(meta: dict[str, Any], path: Path, n_seeds: int) -> Context:
    """The target, site and seeds a ``.bfn``'s ``meta`` records (``metabp export`` writes them)."""
    from metabp.targets import get_target

    target = meta.get("target")
    if not isinstance(target, str):
        raise ConfigError(f"{path} names no target in its meta; give --study STUDY.toml")
    overrides = meta.get("overrides") if isinstance(meta.get("overrides"), dict) else {}
    spec = get_target(target, **overrides)
    used = [s for key in ("search_seeds", "seeds") for s in (meta.get(key) or []) if isinstance(s, int)]
    start = max(used, default=-1) + 1
    box = None
    study_file = meta.get("study_file")
    if isinstance(study_file, str) and Path(study_file).is_file():
        from metabp.search import load_study

        box = _box(load_study(study_file, check_target=False, check_device=False).bounds)
    return Context(spec, meta.get("where") or spec.where, list(range(start, start + n_seeds)), box,
                   (f"plain backprop (lr {spec.lr!r})", spec))


def _check_metanets(g: Any, path: Path) -> None:
    """A found meta-network, or one per site (``metabp export`` of a study with ``sites``)."""
    import metabp
    from metabp import MetaNet

    found = "explain reads a found meta-network (kind metanet), e.g. from `metabp export`"
    if not metabp.is_per_site(g):
        if not isinstance(g, MetaNet):
            raise ConfigError(f"{path} holds a {g.kind} b-function; {found}")
        return
    other = [(site, h.kind) for site, h in g.items() if not isinstance(h, MetaNet)]
    if other:
        raise ConfigError(f"{path} holds one b-function per site and site {other[0][0]!r} holds a "
                          f"{other[0][1]} b-function; {found}, or one per site")


def explain_file(
    bfn: str | os.PathLike,
    *,
    study: Any = None,
    storage: str | None = None,
    seeds: int = 10,
    baseline_lr: float | None = None,
    baseline_optimizer: str | None = None,
    zmax: float = 4.0,
    output: str | os.PathLike | None = "explain",
    device: str | None = None,
) -> Explanation:
    """:func:`explain` the meta-network saved in ``bfn`` (``metabp explain BFN``).

    Args:
        bfn: a ``.bfn`` file holding a ``MetaNet``, or a ``PerSite`` of them (``metabp export``).
        study: its study (file path or ``metabp.search.Study``), validated; default: what the file's
            ``meta`` records (target, site, seeds).
        storage: the study's storage URL.
        seeds: how many held-out seeds, right above every search and validation seed.
        baseline_lr, baseline_optimizer: the baseline's lr and optimizer (e.g. the best tuned row of
            ``metabp compare``); default backprop at the lr validation tuned, else the target's.
        zmax, output, device: as for :func:`explain`.
    """
    import metabp

    path = Path(bfn)
    g = metabp.load(path)
    _check_metanets(g, path)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
        raise ConfigError(f"seeds={seeds!r}: give at least 2 held-out seeds (a paired z needs 2)")
    ctx = from_study(study, storage, seeds) if study is not None else from_meta(g.meta, path, seeds)
    if baseline_lr is not None or baseline_optimizer is not None:
        opt = baseline_optimizer or ctx.spec.optimizer
        if opt not in BASELINES:
            raise ConfigError(f"baseline_optimizer={opt!r} unknown; choose from {', '.join(BASELINES)}")
        lr = float(baseline_lr) if baseline_lr is not None else ctx.baseline[1].lr
        ctx.baseline = (f"{opt} at lr {lr!r}", dataclasses.replace(ctx.spec, optimizer=opt, lr=lr))
    lr = g.meta.get("lr") if isinstance(g.meta.get("lr"), (int, float)) else ctx.spec.lr
    where = None if metabp.is_per_site(g) else ctx.where
    return explain(g, ctx.spec, lr=float(lr), seeds=ctx.seeds, baseline=ctx.baseline, where=where,
                   box=ctx.box, zmax=zmax, output=output, device=device or ctx.device, data_dir=ctx.data_dir)
