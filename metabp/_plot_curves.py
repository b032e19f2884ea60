"""Plots of numbers from training runs: loss curves, search traces, alignment, held-out scores,
scores across targets."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from metabp._plot_base import TAB20, Plotted, as_runs, figure, quiet, save, set_title, suptitle
from metabp.exceptions import ConfigError

LEGEND_INSIDE_MAX = 6  # more curves than this: the legend goes below the axes, off the curves


def _legend(ax, n: int) -> None:
    if n > LEGEND_INSIDE_MAX:
        ax.legend(fontsize=7, ncols=2, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    else:
        ax.legend(fontsize=7)


def plot_loss_curves(
    curves: Mapping[str, Sequence[float] | Sequence[Sequence[float]]],
    path: str | os.PathLike = "loss.png",
    *,
    xlabel: str = "step",
    ylabel: str = "training loss",
    title: str | None = None,
    logy: bool = False,
    styles: Mapping[str, dict] | None = None,
) -> Plotted:
    """Loss curves by label: the mean over seeds as a line, min to max over seeds as a band.

    With more than ``LEGEND_INSIDE_MAX`` curves the legend sits below the axes.

    Args:
        curves: label -> one curve (``steps`` values) or several (``seeds x steps``).
            Non-finite values (a diverged run) are drawn as gaps.
        path: PNG to write.
        xlabel, ylabel, title: axis text.
        logy: log scale on the loss axis.
        styles: label -> extra ``Axes.plot`` keywords (e.g. ``{"ls": "--"}``).

    Returns:
        :class:`Plotted` with data ``{label}/mean``, ``{label}/min``, ``{label}/max``
        (``steps`` values each).
    """
    if not curves:
        raise ConfigError("curves is empty; give at least one {label: loss curve}")
    extra = 0.2 * math.ceil(len(curves) / 2) + 0.3 if len(curves) > LEGEND_INSIDE_MAX else 0.0  # legend rows
    fig, (ax,) = figure(width=6.4, height=4.2 + extra)
    data: dict[str, np.ndarray] = {}
    palette = [f"C{i}" for i in range(10)] if len(curves) <= 10 else list(TAB20)
    for i, (label, c) in enumerate(curves.items()):
        runs = as_runs(c)
        runs[~np.isfinite(runs)] = np.nan
        with np.errstate(all="ignore"), quiet():
            mean, lo, hi = np.nanmean(runs, 0), np.nanmin(runs, 0), np.nanmax(runs, 0)
        data[f"{label}/mean"], data[f"{label}/min"], data[f"{label}/max"] = mean, lo, hi
        x = np.arange(1, runs.shape[1] + 1)
        kw = {"color": palette[i % len(palette)], "lw": 1.5, **(styles or {}).get(label, {})}
        ax.plot(x, mean, label=label if runs.shape[0] == 1 else f"{label} (n={runs.shape[0]})", **kw)
        if runs.shape[0] > 1:
            ax.fill_between(x, lo, hi, color=kw["color"], alpha=0.15, lw=0)
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    set_title(ax, title or "training loss")
    _legend(ax, len(curves))
    return Plotted(save(fig, path), data)


def best_so_far(values: Sequence[float]) -> np.ndarray:
    """Running minimum of ``values`` in order, ignoring NaN (``n`` values in, ``n`` out).

    Example:
        >>> best_so_far([3.0, float("nan"), 1.0, 2.0]).tolist()
        [3.0, 3.0, 1.0, 1.0]
    """
    arr = np.asarray(values, dtype=float)
    arr = np.where(np.isfinite(arr), arr, np.inf)
    out = np.minimum.accumulate(arr) if arr.size else arr
    return np.where(np.isinf(out), np.nan, out)


def _clip_top(ax, values: np.ndarray, refs: list[float]) -> None:
    """Clip the y range so divergence penalties do not squash the interesting range; the reference
    lines stay in view."""
    best, mid = float(np.min(values)), float(np.median(values))
    top = max([mid + 2 * (mid - best), *refs]) if mid > best else max([best * 1.5, *refs])
    low = min([best, *refs])
    pad = 0.05 * (top - low + 1e-12)
    ax.set_ylim(low - pad, top + pad)
    if (values > top).any():
        ax.text(0.99, 0.01, f"{int((values > top).sum())} trial(s) above the top edge",
                transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="0.4")


def plot_search_trace(
    traces: Mapping[str, Sequence[float]],
    path: str | os.PathLike = "trace.png",
    *,
    numbers: Mapping[str, Sequence[int]] | None = None,
    reference: Mapping[str, float] | None = None,
    ylabel: str = "score (lower is better)",
    title: str | None = None,
) -> Plotted:
    """Best value so far against trial number, one line per search (e.g. GP-EI, random, TPE).

    Args:
        traces: label -> the objective of each trial, in trial order.
        path: PNG to write.
        numbers: label -> the trials' numbers (as ``metabp show`` prints them); default
            ``0, 1, 2, ...``.
        reference: label -> a constant drawn as a horizontal line (e.g. plain backprop's score).

    Returns:
        :class:`Plotted` with data ``{label}`` (the running minimum), ``{label}/values`` and
        ``{label}/numbers``.
    """
    if not traces:
        raise ConfigError("traces is empty; give at least one {label: trial values}")
    fig, (ax,) = figure(width=6.0, height=4.0)
    data: dict[str, np.ndarray] = {}
    for i, (label, vals) in enumerate(traces.items()):
        vals = np.asarray(vals, dtype=float)
        x = np.asarray((numbers or {}).get(label, np.arange(len(vals))), dtype=int)
        if x.shape != vals.shape:
            raise ConfigError(f"numbers[{label!r}] has {x.size} entries for {vals.size} trial values")
        data[f"{label}/values"], data[label], data[f"{label}/numbers"] = vals, best_so_far(vals), x
        ax.scatter(x, vals, s=8, color=f"C{i}", alpha=0.35)
        ax.step(x, data[label], where="post", color=f"C{i}", lw=2, label=f"{label}: best so far")
    for j, (label, v) in enumerate((reference or {}).items()):
        ax.axhline(v, color="k", ls=(":", "--", "-.")[j % 3], lw=1, label=label)
    values = [v[np.isfinite(v)] for k, v in data.items() if k.endswith("/values")]
    finite = np.concatenate(values) if values else np.array([])
    if finite.size:
        _clip_top(ax, finite, [float(v) for v in (reference or {}).values() if math.isfinite(v)])
    ax.set(xlabel="trial number (as in metabp show)", ylabel=ylabel)
    set_title(ax, title or "search progress")
    ax.legend(fontsize=8)
    return Plotted(save(fig, path), data)


def plot_alignment(
    cosines: Mapping[str, Sequence[float]],
    path: str | os.PathLike = "alignment.png",
    *,
    title: str | None = None,
) -> Plotted:
    """Cosine between the true backprop gradient and the applied one, per layer, over steps.

    Returns:
        :class:`Plotted` with data ``{layer}`` (``steps`` cosines).
    """
    if not cosines:
        raise ConfigError("cosines is empty; give at least one {layer: cosines over steps}")
    fig, (ax,) = figure(width=6.0, height=4.0)
    data = {k: np.asarray(v, dtype=float) for k, v in cosines.items()}
    for k, v in data.items():
        ax.plot(np.arange(1, len(v) + 1), v, lw=1.5, label=k)
    ax.axhline(1, color="0.7", lw=0.8)
    ax.axhline(0, color="0.7", lw=0.8)
    ax.set_ylim(-1.05, 1.05)
    ax.set(xlabel="step", ylabel="cos(true grad, applied grad)")
    set_title(ax, title or "gradient alignment with backprop")
    _legend(ax, len(data))
    return Plotted(save(fig, path), data)


def plot_heldout_scatter(
    search: Sequence[float],
    heldout: Sequence[float],
    path: str | os.PathLike = "heldout.png",
    *,
    heldout_std: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    controls: Mapping[str, tuple[float | None, float]] | None = None,
    xlabel: str = "score on the search seeds",
    ylabel: str = "score on held-out seeds",
    title: str | None = None,
) -> Plotted:
    """Each candidate's score on the seeds it was searched on (x) against held-out seeds (y).

    Points above the diagonal ``y = x`` did worse on new seeds than on the search's: the
    search fitted its seeds' noise. Error bars are ``heldout_std``; ``controls`` (label ->
    ``(search score or None, held-out score)``) are drawn as horizontal lines at their held-out
    score and, when the search score is known, as a cross.

    Returns:
        :class:`Plotted` with data ``search``, ``heldout``.
    """
    x, y = np.asarray(search, dtype=float), np.asarray(heldout, dtype=float)
    if x.size == 0 or x.shape != y.shape:
        raise ConfigError(f"search ({x.size} values) and heldout ({y.size}): need equal, non-zero lengths")
    fig, (ax,) = figure(width=5.5, height=5.4)  # room for the legend below the axes
    yerr = None if heldout_std is None else np.asarray(heldout_std, dtype=float)
    ax.errorbar(x, y, yerr=yerr, fmt="o", color="C0", ms=5, capsize=2, label="validated candidates")
    for i, text in enumerate(labels or []):
        ax.annotate(text, (x[i], y[i]), xytext=(4, 3), textcoords="offset points", fontsize=7)
    spread = [y] if yerr is None else [y - yerr, y + yerr]
    known = [v for v in np.concatenate([x, y, *spread]) if math.isfinite(v)]
    for j, (label, (cx, cy)) in enumerate((controls or {}).items()):
        color = f"C{j + 1}"
        ax.axhline(cy, color=color, ls="--", lw=1, label=f"{label}: held-out {cy:.4g}")
        if cx is not None and math.isfinite(cx):
            ax.plot([cx], [cy], "x", color=color, ms=8, mew=2)
            known.append(cx)
        known.append(cy)
    lo, hi = min(known), max(known)
    pad = 0.05 * (hi - lo or abs(hi) or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.6", lw=1, label="y = x (no overfitting)")
    ax.set(xlim=(lo - pad, hi + pad), ylim=(lo - pad, hi + pad), xlabel=xlabel, ylabel=ylabel)
    set_title(ax, title or "search-seed score against held-out score")
    ax.legend(fontsize=7, ncols=2, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    return Plotted(save(fig, path), {"search": x, "heldout": y})


def plot_transfer(
    scores: Mapping[str, Mapping[str, tuple[float, float]]],
    ratio: Mapping[str, tuple[float, float]],
    path: str | os.PathLike = "transfer.png",
    *,
    ylabel: str = "AULC (mean ± std over seeds)",
    title: str | None = None,
) -> Plotted:
    """Two panels over targets: each method's score as bars (mean ± std), and the ratio of the
    first method to the second with a line at 1 (below 1: the first method is better).

    Args:
        scores: target -> method -> ``(mean, std)``, the same methods for every target.
        ratio: target -> ``(mean, std)`` of the per-seed ratio.

    Returns:
        :class:`Plotted` with data ``ratio`` and ``{method}`` (means, in target order).
    """
    if not scores:
        raise ConfigError("scores is empty; give at least one {target: {method: (mean, std)}}")
    targets = list(scores)
    methods = list(next(iter(scores.values())))
    fig, (ax_s, ax_r) = figure(2, width=max(4.0, 1.2 * len(targets) + 2.0), height=4.0)
    x = np.arange(len(targets))
    width = 0.8 / len(methods)
    data: dict[str, np.ndarray] = {}
    for i, m in enumerate(methods):
        mean = np.array([scores[t][m][0] for t in targets])
        std = np.array([scores[t][m][1] for t in targets])
        data[m] = mean
        ax_s.bar(x + (i - (len(methods) - 1) / 2) * width, mean, width, yerr=std, capsize=3, label=m,
                 color=f"C{i}")
    ax_s.set_xticks(x, targets, rotation=20, ha="right", fontsize=8)
    ax_s.set(ylabel=ylabel)
    set_title(ax_s, "score per target")
    ax_s.legend(fontsize=8)
    data["ratio"] = r = np.array([ratio[t][0] for t in targets])
    ax_r.errorbar(x, r, yerr=[ratio[t][1] for t in targets], fmt="o", color="C2", capsize=3)
    ax_r.axhline(1.0, color="k", ls=":", lw=1, label="1 = no change")
    ax_r.set_xticks(x, targets, rotation=20, ha="right", fontsize=8)
    ax_r.set_xlim(-0.5, len(targets) - 0.5)
    ax_r.set(ylabel=f"{methods[0]} / {methods[-1]} per seed (mean ± std)")
    set_title(ax_r, "ratio (below 1: better than " + methods[-1] + ")")
    ax_r.legend(fontsize=8)
    if title:
        suptitle(fig, title)
    return Plotted(save(fig, path), data)
