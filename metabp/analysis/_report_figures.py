"""The figures of a study report, drawn from a :class:`~metabp.analysis._report_data.ReportData`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metabp.analysis._report_data import ReportData, heldout, step_losses


def _search_trace(data: ReportData, out: Path) -> Any:
    from metabp import plots

    traces = {data.sampler: [t.value for t in data.done]}
    numbers = {data.sampler: [t.number for t in data.done]}
    for label, ts in data.baselines.items():
        traces[label], numbers[label] = [t.value for t in ts], [t.number for t in ts]
    unit = "ratio to backprop" if data.multi_target else "AULC"
    return plots.plot_search_trace(traces, out / "search_trace.png", numbers=numbers,
                                   reference={f"plain backprop ({data.backprop:.4f})": data.backprop},
                                   ylabel=f"score (mean {unit}, lower is better)",
                                   title=f"{data.name}: best score so far; score = mean {unit} over the "
                                         f"search seeds {data.seeds}")


def _heldout_scatter(data: ReportData, out: Path) -> Any:
    from metabp import plots

    controls = {}
    bp = data.control("backprop")
    if bp is not None:
        controls["plain backprop"] = (data.backprop, float(bp["mean"]))
    tuned = data.control("tuned_lr")
    if tuned is not None:
        label = f"backprop, lr tuned alone ({tuned.get('lr', float('nan')):.3g})"
        controls[label] = (None, float(tuned["mean"]))
    held = [heldout(t) for t in data.validated]
    return plots.plot_heldout_scatter(
        [t.value for t in data.validated], [h["mean"] for h in held], out / "heldout.png",
        heldout_std=[h["std"] for h in held], labels=[f"#{t.number}" for t in data.validated],
        controls=controls, title=f"{data.name}: search-seed score against held-out score (points above "
                                 "y = x did worse on new seeds)")


def _shapes(data: ReportData, out: Path) -> dict[str, Any]:
    """The chosen g with its implicit lr (``beta``) and the top candidates' spread (``spread``); with
    one g per site, one of each per site (``beta/act1``, ``best_implicit_lr_act1.png``, ...)."""
    from metabp import plots

    spec, figs = data.spec, {}
    scale = " / max|g| (a constant factor cancels under Adam-like optimizers)" if data.scale_invariant else ""
    names = plots.site_file_names(data.sites)  # a glob site: no '*' in a file name
    for site in data.sites or [None]:
        key, file, at = ("", "", "") if site is None else (f"/{site}", f"_{names[site]}", f" at {site}")
        g = data.g if site is None else data.g[site]
        figs["beta" + key] = plots.plot_implicit_lr(
            g, spec.activation, data.lr, out / f"best_implicit_lr{file}.png", optimizer=spec.optimizer,
            title=f"chosen g{at} (trial {data.chosen.number}): {g!r}")
        top = data.shapes[site or data.where].top_g
        figs["spread" + key] = plots.plot_bfunction_spread(
            top, spec.activation, out / f"top_candidates{file}.png",
            title=f"top {len(top)} of {len(data.done)} candidates' g(z){at}{scale}")
    return figs


def draw(data: ReportData, out: Path) -> dict[str, Any]:
    """Write the report's PNGs into ``out``; name -> :class:`metabp.plots.Plotted`."""
    from metabp import plots

    spec, where = data.spec, data.where
    figs = {"trace": _search_trace(data, out), **_shapes(data, out)}
    curves: dict[str, Any] = {"plain backprop": data.plain.step_losses}
    for t in data.ranked[:3]:
        if losses := step_losses(t):
            curves[f"trial {t.number} (score {t.value:.4f})"] = losses
    figs["loss"] = plots.plot_loss_curves(curves, out / "loss_curves.png", logy=True,
                                          styles={"plain backprop": {"color": "k", "ls": "--"}},
                                          title=f"{spec.name}: training loss, seed {data.seeds[0]}")
    if data.alignment is not None:
        figs["alignment"] = plots.plot_alignment(
            data.alignment.cosines, out / "alignment.png",
            title=f"cos(true, applied gradient): chosen g at {where}, seed {data.seeds[0]}")
    if data.validated:
        figs["heldout"] = _heldout_scatter(data, out)
    return figs
