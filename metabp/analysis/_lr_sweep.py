r"""Is a win of ``g`` robust to the learning rate? ``g`` and backprop over a sweep of lrs.

``n`` learning rates log-spaced over :math:`[\min(\mathrm{lr}^\star)/s, \max(\mathrm{lr}^\star)\,s]`
around the tuned ones (``g``'s and "lr tuned alone"'s; ``s`` = :data:`SPREAD`), each trained with
``g`` and with plain backprop on the comparison's held-out seeds only (never the tuning seeds).
Backprop's reference is its best swept lr *on these seeds*, a baseline tuned where it is
scored, so the harder one to beat. ``g`` wins at an lr when its paired difference to that
reference is below ``-Z_WIN`` standard errors. A win is robust to the lr when ``g`` beats that
reference at :data:`BEST_POINTS` neighbouring swept lrs around its own and beats backprop trained
at the same lr at :data:`ROBUST_POINTS` neighbouring lrs; otherwise it is called narrow.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metabp.analysis._stats import mean_std, paired, pm
from metabp.exceptions import ConfigError

SPREAD = 4.0  # the sweep reaches this factor below and above the tuned lrs
Z_WIN = 2.0  # a paired z below -Z_WIN is a win
ROBUST_POINTS = 3  # neighbouring swept lrs at which g must beat backprop at the same lr ...
BEST_POINTS = 2  # ... and, around g's own lr, backprop at its best swept lr, for a win robust to the lr


@dataclass
class LrSweep:
    """``g`` and backprop at each swept lr over the held-out ``seeds`` (AULC per seed)."""

    lrs: list[float]
    seeds: list[int]
    g: list[list[float]]
    backprop: list[list[float]]
    g_lr: float
    tuned_lr: float | None = None

    @property
    def best_backprop(self) -> int:
        """Index of backprop's best swept lr (lowest mean AULC on these seeds)."""
        return int(np.nanargmin([_mean(a) for a in self.backprop]))

    def z_vs_best(self, i: int) -> float:
        """Paired z of ``g`` at lr ``i`` against backprop at its best swept lr (NaN if one diverged)."""
        return _z(self.g[i], self.backprop[self.best_backprop])

    def z_same_lr(self, i: int) -> float:
        return _z(self.g[i], self.backprop[i])

    def wins(self) -> list[int]:
        return [i for i in range(len(self.lrs)) if self.z_vs_best(i) < -Z_WIN]

    def same_lr_wins(self) -> list[int]:
        """Swept lrs at which ``g`` beats backprop trained at the same lr."""
        return [i for i in range(len(self.lrs)) if self.z_same_lr(i) < -Z_WIN]

    def _span(self, run: list[int]) -> str:
        lo, hi, n = self.lrs[run[0]], self.lrs[run[-1]], len(self.lrs)
        if len(run) == 1:
            return f"lr {lo:.4g} (1 of {n} swept lrs)"
        return (f"lr in [{lo:.4g}, {hi:.4g}] ({len(run)} neighbouring of {n} swept lrs, a factor of "
                f"{hi / lo:.3g})")

    def _diverged(self) -> str:
        """Where g diverges on some seed and backprop at the same lr on none."""
        bad = [i for i in range(len(self.lrs))
               if not np.isfinite(self.g[i]).all() and np.isfinite(self.backprop[i]).all()]
        if not bad:
            return ""
        i = bad[0]
        k = sum(not math.isfinite(v) for v in self.g[i])
        return (f" g diverges at lr {self.lrs[i]:.4g} ({k}/{len(self.seeds)} seeds) and above where backprop "
                "does not." if bad == list(range(i, len(self.lrs))) else
                f" g diverges at {len(bad)} swept lr(s) (from {self.lrs[i]:.4g}) where backprop does not.")

    def verdict(self) -> str:
        """Where ``g`` beats backprop at its best swept lr and at the same lr; robust or narrow."""
        best, n = self.lrs[self.best_backprop], len(self.lrs)
        ref = f"backprop at its best swept lr ({best:.4g}, on these {len(self.seeds)} held-out seeds)"
        wins, same = self.wins(), self.same_lr_wins()
        same_text = (f"at the same lr g beats backprop over {self._span(_longest_run(same))}" if same
                     else "at the same lr g beats backprop at none")
        if not wins:
            return (f"g beats {ref} at none of the {n} swept lrs ({same_text}): no win that survives an lr "
                    "sweep.")
        run = _longest_run(wins)
        half_step = math.sqrt(self.lrs[1] / self.lrs[0])
        own = ("" if self.lrs[run[0]] / half_step <= self.g_lr <= self.lrs[run[-1]] * half_step
               else " (not around g's own lr)")
        robust = (len(run) >= BEST_POINTS and not own and bool(same)
                  and len(_longest_run(same)) >= ROBUST_POINTS)
        end = ("robust to the lr: g's gain holds over a range of lrs" if robust
               else "a narrow lr range, fragile to the lr")
        return f"g beats {ref} at {self._span(run)}{own}; {same_text}: {end}.{self._diverged()}"


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if np.isfinite(values).all() else math.inf


def _z(a: Sequence[float], b: Sequence[float]) -> float:
    """Paired z of ``a - b``; NaN when either diverged on some seed."""
    return paired(a, b).z if np.isfinite(a).all() and np.isfinite(b).all() else math.nan


def _longest_run(indices: list[int]) -> list[int]:
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return max(runs, key=len)


def sweep_lrs(tuned: Sequence[float], n: int = 8) -> list[float]:
    """``n`` log-spaced lrs from ``min(tuned) / SPREAD`` to ``max(tuned) * SPREAD``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ConfigError(f"lr_sweep={n!r}: give the number of swept lrs, an int >= 2 (0: no sweep)")
    lo, hi = min(tuned) / SPREAD, max(tuned) * SPREAD
    return [float(x) for x in np.geomspace(lo, hi, n)]


def lr_sweep(spec: Any, bfn: Any, *, g_lr: float, tuned_lr: float | None, seeds: Sequence[int],
             tune_seeds: Sequence[int] = (), n: int = 8, where: str | None = None, device: str = "cpu",
             data_dir: Any = None, bar: Any = None) -> LrSweep:
    """Train ``bfn`` and plain backprop at each of ``n`` swept lrs on ``seeds`` (one batched run per lr).

    ``seeds`` must be held out: a seed also in ``tune_seeds`` raises ``ConfigError``.
    """
    from metabp.targets import train_many

    both = sorted(set(seeds) & set(tune_seeds))
    if both:
        raise ConfigError(f"lr sweep seeds {list(seeds)}: {both} are tuning seeds; sweep on held-out "
                          "seeds only")
    lrs = sweep_lrs([g_lr] + ([tuned_lr] if tuned_lr else []), n)
    k = len(seeds)
    g_runs, bp_runs = [], []
    for lr in lrs:
        if bar is not None:
            bar.set_postfix_str(f"lr sweep: lr {lr:.3g}")
        runs = train_many(dataclasses.replace(spec, lr=lr), [bfn] * k + [None] * k, where,
                          seed=list(seeds) * 2, device=device, data_dir=data_dir)
        g_runs.append([r.aulc if not r.diverged else math.inf for r in runs[:k]])
        bp_runs.append([r.aulc if not r.diverged else math.inf for r in runs[k:]])
        if bar is not None:
            bar.update(2 * k)
    return LrSweep(lrs, list(seeds), g_runs, bp_runs, float(g_lr), tuned_lr)


def read_csv(path: str | Path, *, g_lr: float, tuned_lr: float | None = None) -> LrSweep:
    """The :class:`LrSweep` a written ``lr_sweep.csv`` holds (its AULC per seed, ``inf``: diverged)."""
    import csv

    g: dict[float, list[float]] = {}
    bp: dict[float, list[float]] = {}
    seeds: list[int] = []
    with Path(path).open() as f:
        for row in csv.DictReader(f):
            values = [float(v) for v in row["aulc_per_seed"].split()]
            (g if row["method"] == "g" else bp)[float(row["lr"])] = values
            seeds = [int(x) for x in row["seeds"].split()]
    lrs = sorted(g)
    if not lrs or sorted(bp) != lrs:
        raise ConfigError(f"{path}: not an lr sweep written by compare (g and backprop rows per lr)")
    return LrSweep(lrs, seeds, [g[x] for x in lrs], [bp[x] for x in lrs], float(g_lr), tuned_lr)


def _cell(values: list[float]) -> str:
    bad = sum(not math.isfinite(v) for v in values)
    if bad:
        return f"diverged {bad}/{len(values)}"
    return pm(mean_std(values))


def to_markdown(s: LrSweep) -> str:
    """The sweep as a table with its verdict."""
    tuned = f", lr tuned alone at {s.tuned_lr!r}" if s.tuned_lr else ""
    lines = [f"### lr robustness (held-out seeds {', '.join(map(str, s.seeds))})", "",
             f"g (its lr {s.g_lr!r}{tuned}) and plain backprop at {len(s.lrs)} log-spaced lrs from a factor "
             f"{SPREAD:g} below to {SPREAD:g} above the tuned ones; z: paired difference g - backprop in "
             "standard errors.", "", f"**lr verdict.** {s.verdict()}", "",
             "| lr | AULC g | AULC backprop | z, g vs backprop at this lr "
             "| z, g vs backprop at its best lr |",
             "|---:|---:|---:|---:|---:|"]
    for i, lr in enumerate(s.lrs):
        zs = [s.z_same_lr(i), s.z_vs_best(i)]
        lines.append(f"| {lr!r} | {_cell(s.g[i])} | {_cell(s.backprop[i])} | "
                     + " | ".join("" if not math.isfinite(z) else f"{z:.1f}" for z in zs) + " |")
    return "\n".join(lines) + "\n"


def write(s: LrSweep, output: Path) -> dict[str, Path]:
    """``lr_sweep.csv`` (AULC per seed) and ``lr_sweep.png`` (mean AULC against lr) into ``output``."""
    import csv
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path_csv = output / "lr_sweep.csv"
    with path_csv.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["lr", "method", "aulc_mean", "aulc_std", "z_vs_backprop_same_lr", "z_vs_backprop_best",
                    "seeds", "aulc_per_seed"])
        for i, lr in enumerate(s.lrs):
            for name, a, zs in (("g", s.g[i], (s.z_same_lr(i), s.z_vs_best(i))),
                                ("backprop", s.backprop[i], ("", ""))):
                w.writerow([repr(lr), name, *mean_std(a), *zs, " ".join(map(str, s.seeds)),
                            " ".join(repr(v) for v in a)])
    fig = Figure(figsize=(7, 4.5))  # no pyplot: no global backend switch, no figure to close
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, runs, style in (("g", s.g, "k-o"), ("plain backprop", s.backprop, "--s")):
        stats = [mean_std(a) if np.isfinite(a).all() else (math.nan, math.nan) for a in runs]
        ax.errorbar(s.lrs, [m for m, _ in stats], yerr=[e for _, e in stats], fmt=style, capsize=3,
                    label=name)
    ax.axvline(s.g_lr, color="k", lw=0.8, ls=":", label="g's lr")
    if s.tuned_lr:
        ax.axvline(s.tuned_lr, color="0.5", lw=0.8, ls=":", label="lr tuned alone")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"AULC, mean ± std over {len(s.seeds)} held-out seeds")
    ax.set_title(textwrap.fill(s.verdict(), 95), fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = output / "lr_sweep.png"
    fig.savefig(png, dpi=120)
    return {"sweep_csv": path_csv, "sweep_png": png}
