r"""A study report: ``index.md`` and its figures, saying what a b-function search found.

Sections (each a PNG beside ``index.md`` plus the numbers in the text):

1. *Search progress*: best AULC so far against trial number, for the study's sampler and for
   random/TPE baseline searches of the same target when the storage holds them, with plain
   backprop's AULC as a line.
2. *The best b-function*: ``g(z)`` beside the ``sigma'(z)`` it replaced, and its implicit
   learning rate :math:`\beta(z) = \alpha\, g(z)/\sigma'(z)` (paper eq. 4), read for the study's
   optimizer (scale-invariant or SGD-like, see :func:`metabp.implicit_lr`).
3. *Agreement among the top candidates*: the spread of the ``top`` best trials' ``g(z)``.
4. *Loss curves*: the best trials against plain backprop, same seed.
5. *Gradient alignment*: per layer, the cosine between the true backprop gradient and the one
   the best ``g`` applies, over training (see :mod:`metabp.analysis._alignment`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metabp._bfunctions import BFunction, MetaNet
from metabp._implicit_lr import SCALE_INVARIANT
from metabp.analysis._alignment import AlignmentTrace, gradient_alignment
from metabp.exceptions import ConfigError


def trial_omega(trial: Any) -> list[float]:
    """``[omega_0, ..., omega_{P-1}]`` from an Optuna trial's params, in index order."""
    keys = sorted((k for k in trial.params if k.startswith("omega_")), key=lambda k: int(k.split("_")[1]))
    if not keys:
        raise ConfigError(f"trial {trial.number} has no omega_i params ({sorted(trial.params)}); "
                          "is this a metabp study?")
    return [float(trial.params[k]) for k in keys]


def trial_bfn(trial: Any, *, hidden: int = 1, act: str = "tanh") -> MetaNet:
    """The meta-network ``g_omega`` a trial scored."""
    return MetaNet(hidden, act, omega=trial_omega(trial))


def completed(trials: Sequence[Any]) -> list[Any]:
    """Completed trials with a finite value, in trial-number order."""
    import optuna

    return sorted((t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None
                   and math.isfinite(t.value)), key=lambda t: t.number)


def alignment_run(
    spec: Any,
    bfn: BFunction,
    *,
    where: str | None = None,
    seed: int = 0,
    device: str = "cpu",
    data_dir: str | None = None,
    progress: bool = False,
) -> AlignmentTrace:
    """Train target ``spec`` with ``bfn`` patched at ``where`` and record the gradient alignment.

    The run is :func:`metabp.targets.train`'s, step for step: same initial weights, patch,
    feedback, frozen parameters, optimizer and batch order, so ``trace.losses`` equals that run's
    ``step_losses``; each step additionally computes the true gradient on the same batch. Stops
    like ``train`` when the loss diverges.
    """
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from metabp._patch import patch
    from metabp.targets import build_model, load_data, make_optimizer
    from metabp.targets._train import (
        apply_feedback,
        batches,
        is_diverged,
        steps_per_epoch,
        trainable_parameters,
    )

    data = load_data(spec, data_dir).to(device)
    model = build_model(spec, seed).to(device)
    patch(model, bfn, spec.where if where is None else where)
    if spec.feedback is not None:
        apply_feedback(model, spec.feedback, seed)
    opt = make_optimizer(spec.optimizer, trainable_parameters(model.named_parameters(), spec.trainable),
                         spec.lr)
    n = len(data.y_train)
    model.train()
    trace = AlignmentTrace()
    with tqdm(total=spec.epochs * steps_per_epoch(n, spec.batch_size), desc="alignment", unit="step",
              leave=False, disable=not progress) as bar:
        for epoch_batches in batches(n, spec.batch_size, spec.epochs, seed):
            for idx in epoch_batches:
                idx = idx.to(device)
                x, y = data.x_train[idx], data.y_train[idx]
                value, cos = gradient_alignment(model, lambda m, x=x, y=y: F.cross_entropy(m(x), y))
                trace.losses.append(value)
                if is_diverged(value, spec.max_loss):
                    return trace
                opt.step()
                for k, c in cos.items():
                    trace.cosines.setdefault(k, []).append(c)
                bar.update()
    return trace


class _Normalised(BFunction):
    """``g / max|g|`` over ``z in [-4, 4]``: the shape of ``g`` at a common scale."""

    kind = "normalised"

    def __init__(self, g: BFunction) -> None:
        self.g = g
        self.scale = float(g(torch.linspace(-4, 4, 401, dtype=torch.float64)).abs().max()) or 1.0
        self.meta = {}

    def __call__(self, z, activation=None):
        return self.g(z, activation) / self.scale

    def state(self):  # pragma: no cover - never saved
        raise NotImplementedError

    @classmethod
    def from_state(cls, tensors, config):  # pragma: no cover
        raise NotImplementedError


def _compare_summary(out: Path) -> tuple[str | None, str | None]:
    """``compare.md`` of an earlier ``metabp compare`` in ``out``, and one sentence from its CSV."""
    import csv

    md, table = out / "compare.md", out / "compare.csv"
    if not (md.is_file() and table.is_file()):
        return None, None
    with table.open() as f:
        rows = list(csv.DictReader(f))
    by_kind = {r["kind"]: r for r in rows}
    if "bfn" not in by_kind or "plain" not in by_kind:
        return md.read_text(), None
    g, plain = by_kind["bfn"], by_kind["plain"]
    rank = [r["method"] for r in rows].index(g["method"]) + 1
    best = rows[0]
    line = (f"{g['n_seeds']} other seeds (`metabp compare`), the best g scores AULC "
            f"{float(g['aulc_mean']):.4f} ± {float(g['aulc_std']):.4f} against plain backprop's "
            f"{float(plain['aulc_mean']):.4f} ± {float(plain['aulc_std']):.4f}, rank {rank} of {len(rows)}; "
            f"the best row is {best['method']} ({float(best['aulc_mean']):.4f}).")
    return md.read_text(), line


def _fmt(x: float, spec: str = ".4f") -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:{spec}}"


def report(
    trials: Sequence[Any],
    *,
    spec: Any,
    output: str | os.PathLike,
    where: str | None = None,
    hidden: int = 1,
    act: str = "tanh",
    name: str = "study",
    sampler: str = "study",
    baselines: Mapping[str, Sequence[Any]] | None = None,
    seed: int = 0,
    top: int = 10,
    alignment: bool = True,
    device: str = "cpu",
    data_dir: str | None = None,
    progress: bool = False,
) -> Path:
    """Write ``output/index.md`` and its figures for a finished (or running) study.

    Args:
        trials: the study's Optuna trials (params ``omega_i``, value = AULC, user attrs
            ``step_losses``, ``diverged``, ``test_accuracy``).
        spec: the target (``metabp.targets.TargetSpec``) the trials trained.
        output: folder to write into (created).
        where: the patch site; None for ``spec.where``.
        hidden, act: the meta-network's shape.
        name, sampler: the study's name and sampler, for the text.
        baselines: label -> trials of baseline searches (random, TPE) on the same target.
        seed: the training seed the study used (plain backprop is trained with it).
        top: how many of the best candidates to draw in the spread figure.
        alignment: train the best ``g`` once more to record gradient alignment.
        device, data_dir: for the training runs the report makes (plain backprop, alignment).
        progress: tqdm bars.

    Returns:
        The path of ``index.md``.
    """
    from metabp import plots
    from metabp.targets import train

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    where = where or spec.where
    done = completed(trials)
    if not done:
        raise ConfigError(f"study {name!r} has no completed trials yet; run `metabp search` first")
    ranked = sorted(done, key=lambda t: t.value)
    best = ranked[0]
    g = trial_bfn(best, hidden=hidden, act=act)
    inv = spec.optimizer in SCALE_INVARIANT
    diverged = sum(bool(t.user_attrs.get("diverged")) for t in done)

    plain = train(spec, None, None, seed, device=device, data_dir=data_dir, progress=progress)
    gain = (plain.aulc - best.value) / plain.aulc if plain.aulc else math.nan

    # 1. search progress
    traces = {sampler: [t.value for t in done]}
    for label, ts in (baselines or {}).items():
        vals = [t.value for t in completed(ts)]
        if vals:
            traces[label] = vals
    trace = plots.plot_search_trace(traces, out / "search_trace.png",
                                    reference={f"plain backprop ({plain.aulc:.4f})": plain.aulc},
                                    title=f"{name}: best AULC so far")
    # 2. the best g and its implicit lr
    beta_plot = plots.plot_implicit_lr(g, spec.activation, spec.lr, out / "best_implicit_lr.png",
                                       optimizer=spec.optimizer, title=f"best g (trial {best.number}): "
                                       f"{g!r}\n{plots.optimizer_note(spec.optimizer)}")
    d = beta_plot.data
    pos = d["dsigma"] != 0
    beta_ok = d["beta"][pos & np.isfinite(d["beta"])]
    zero_region = ~pos
    injected = float(np.abs(d["g"][zero_region]).max()) if zero_region.any() else 0.0
    # 3. the top candidates
    k = min(top, len(ranked))
    top_g = [trial_bfn(t, hidden=hidden, act=act) for t in ranked[:k]]
    if inv:  # Adam-like: g and c*g (c > 0) train alike, so compare shapes at a common scale
        top_g = [_Normalised(h) for h in top_g]
    spread = plots.plot_bfunction_spread(top_g, spec.activation, out / "top_candidates.png",
                                         title=f"top {k} of {len(done)} candidates' g(z)"
                                         + (" / max|g| (scale cancels under Adam-like)" if inv else ""))
    band = spread.data["q90"] - spread.data["q10"]
    rel_spread = float(np.nanmean(band))
    zs = spread.data["z"]
    spread_neg, spread_pos = float(np.nanmean(band[zs < 0])), float(np.nanmean(band[zs > 0]))
    # 4. loss curves
    curves: dict[str, Any] = {"plain backprop": plain.step_losses}
    for t in ranked[:3]:
        if t.user_attrs.get("step_losses"):
            curves[f"trial {t.number} (AULC {t.value:.4f})"] = t.user_attrs["step_losses"]
    loss = plots.plot_loss_curves(curves, out / "loss_curves.png", logy=True,
                                  styles={"plain backprop": {"color": "k", "ls": "--"}},
                                  title=f"{spec.name}: training loss, seed {seed}")
    # 5. gradient alignment
    align_md = "(skipped)"
    if alignment:
        tr = alignment_run(spec, g, where=where, seed=seed, device=device, data_dir=data_dir,
                           progress=progress)
        al = plots.plot_alignment(tr.cosines, out / "alignment.png",
                                  title=f"cos(true gradient, applied gradient), best g at {where}")
        rows = ["| layer | mean cos | min cos | last cos |", "|---|---:|---:|---:|"]
        for layer, (mean, lo, last) in tr.summary().items():
            rows.append(f"| {layer} | {_fmt(mean, '.3f')} | {_fmt(lo, '.3f')} | {_fmt(last, '.3f')} |")
        all_mean = tr.summary().get("all", (math.nan,) * 3)[0]
        verdict = ("the applied step stayed a descent direction (positive cosine) throughout: "
                   "true gradient information reaches the weights, as in the paper's Fig. 1b"
                   if all(v[1] > 0 for v in tr.summary().values() if math.isfinite(v[1]))
                   else "the applied step was at times not a descent direction (cosine <= 0)")
        align_md = (f"![alignment]({al.path.name})\n\nOver {len(tr.losses)} steps the mean cosine over all "
                    f"trained parameters was {_fmt(all_mean, '.3f')}; {verdict}. Layers above the patch site "
                    f"get the true gradient (cosine 1); layers below it see g.\n\n" + "\n".join(rows))

    # ------------------------------------------------------------------ compare, if it was run
    compare_md, compare_line = _compare_summary(out)

    # ------------------------------------------------------------------ the text
    better = best.value < plain.aulc
    lines = [
        f"# Study `{name}`: what the search found",
        "",
        f"Target `{spec.name}` ({spec.dataset}, {spec.network}, optimizer `{spec.optimizer}`, "
        f"lr {spec.lr:g}, "
        f"{spec.epochs} epochs, trainable `{spec.trainable or 'all'}`); the meta-network "
        f"g(z) = sum_k w2_k {act}(w1_k z + b1_k) + b2 with {hidden} hidden unit(s) replaces "
        f"`{spec.activation}'` at `{where}`. Sampler `{sampler}`; {len(done)} completed trials"
        f" ({diverged} diverged, scored with the penalty), {len(trials)} in all.",
        "",
        "## Summary",
        "",
        f"- **Best AULC {best.value:.4f}** (trial {best.number}) against plain backprop's "
        f"{plain.aulc:.4f} on the same seed: "
        + (f"{100 * gain:.1f}% lower." if better else f"{-100 * gain:.1f}% higher (no improvement)."),
        f"- Best g: `{g!r}`.",
        "- Implicit learning rate beta(z) = lr*g/sigma' where sigma' != 0: "
        + (f"from {beta_ok.min():.4g} to {beta_ok.max():.4g} (lr = {spec.lr:g}) for z in [-4, 4]."
           if beta_ok.size else "undefined on the plotted range."),
        f"- Where sigma' = 0 the best g reaches |g| = {injected:.3g}: "
        + ("it injects credit plain backprop would not give (paper section 2 calls this potentially "
           "harmful)." if injected > 1e-6 else "it leaves those units without credit, like backprop."),
        "- " + ("The optimizer is **scale-invariant** (Adam-like): a constant factor in g cancels, so "
                "only the *shape* of beta(z) over z matters, not its level."
                if inv else "The optimizer is **SGD-like**: g = c*sigma' would be exactly lr*c, and "
                "beta(z) is the step size itself."),
        f"- The top {k} candidates' g(z){' / max|g|' if inv else ''} spread by {rel_spread:.3g} on average "
        "(width of the 10-90% band over z):"
        + (" they agree on a shape" if rel_spread < 0.25 else " several different shapes score alike")
        + f" (band {spread_neg:.3g} for z < 0, {spread_pos:.3g} for z > 0).",
        f"- These AULCs are on the seed the search used ({seed}). "
        + (f"On {compare_line}" if compare_line else
           "Whether the best g also wins on other initialisations, and against baseline optimizers "
           "with tuned learning rates, is what `metabp compare` measures (its table appears here "
           "when compare.md is in the same folder)."),
        "",
        "## Search progress",
        "",
        f"![search trace]({trace.path.name})",
        "",
        "Best AULC so far against trial number; dots are single trials."
        + (" Baseline searches: " + ", ".join(f"{k2} best {min(v):.4f}" for k2, v in traces.items()
                                             if k2 != sampler) + "."
           if len(traces) > 1 else " (No random/TPE baseline searches of this target in the storage.)"),
        "",
        "## The best b-function and its implicit learning rate",
        "",
        f"![best g and beta]({beta_plot.path.name})",
        "",
        "## Agreement among the top candidates",
        "",
        f"![top candidates]({spread.path.name})",
        "",
        "| rank | trial | AULC | test acc | omega |",
        "|---:|---:|---:|---:|---|",
    ]
    for i, t in enumerate(ranked[:k], 1):
        acc = t.user_attrs.get("test_accuracy")
        lines.append(f"| {i} | {t.number} | {t.value:.4f} | {_fmt(acc, '.3f') if acc is not None else '-'} | "
                     f"{', '.join(f'{w:.3g}' for w in trial_omega(t))} |")
    lines += [
        "",
        "## Loss curves",
        "",
        f"![loss curves]({loss.path.name})",
        "",
        f"Plain backprop: AULC {plain.aulc:.4f}, final loss {_fmt(plain.step_losses[-1])}, test accuracy "
        f"{_fmt(plain.test_accuracy, '.3f')}. Best trial: test accuracy "
        f"{_fmt(best.user_attrs.get('test_accuracy', math.nan), '.3f')}.",
        "",
        "## Gradient alignment over training",
        "",
        align_md,
        "",
    ]
    if compare_md is not None:
        lines += ["## Against tuned baseline optimizers (`metabp compare`)", "",
                  compare_md.replace("## Comparison", "Comparison", 1), ""]
    else:
        lines += ["To compare the best g with baseline optimizers whose learning rates were tuned on the "
                  "same budget, run `metabp compare STUDY.toml -o DIR` with the same DIR, then this "
                  "report again.", ""]
    index = out / "index.md"
    index.write_text("\n".join(lines))
    return index
