r"""Is a learned b-function just a learning rate? The best ``g`` against tuned baselines.

On one target, over several seeds, side by side (issue 6):

1. plain backprop with the target's optimizer and learning rate;
2. the b-function under test (a study's best ``g``), patched at ``where``;
3. each baseline optimizer (``sgd`` ... ``amsgrad``) with its learning rate tuned by Optuna
   (TPE over a log-uniform range) with ``budget`` training runs, the number the study spent;
4. the control "plain backprop, learning rate times one scalar ``c``", with ``c`` tuned the
   same way over :math:`c \in [10^{-2}, 10^2]` (log-uniform).

The tuning runs use the tuning seed (the study's own, common random numbers); the comparison
runs use ``seeds`` other seeds, so every method is scored on initialisations it was not tuned on.

How to read it depends on the target's optimizer. With SGD-like optimizers (``sgd``,
``momentum``, ``nesterov``) ``g = c * sigma'`` is *exactly* a learning rate ``lr * c`` on the
layers below the patch site, so a ``g`` that beats the tuned control does something a constant
cannot. Scale-invariant optimizers (``adam``, ``rmsprop``, ... in
:data:`metabp._implicit_lr.SCALE_INVARIANT`) divide a constant factor of ``g`` back out: only the
shape of :math:`\beta(z) = \alpha g(z) / \sigma'(z)` over ``z`` acts.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metabp._bfunctions import BFunction
from metabp._implicit_lr import SCALE_INVARIANT
from metabp.exceptions import ConfigError

BASELINES = ("sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "adamax",
             "nadam", "amsgrad")
# Log-uniform tuning ranges. Four decades around the usual learning rates of each family;
# Adadelta's lr multiplies an already unit-scaled step (torch default 1.0), so its range sits higher.
LR_RANGES: dict[str, tuple[float, float]] = {name: (1e-4, 1.0) for name in BASELINES}
LR_RANGES["adadelta"] = (1e-2, 1e2)
MULTIPLIER_RANGE = (1e-2, 1e2)  # the control's c in lr * c


@dataclass
class MethodResult:
    """One row of the comparison: a method, its settings and its runs over the seeds.

    Attributes:
        label: row name, e.g. ``"best g"``, ``"adam (tuned)"``.
        kind: ``plain``, ``bfn``, ``baseline`` or ``control``.
        optimizer, lr: what it trained with (after tuning).
        runs: one ``metabp.targets.Run`` per evaluation seed.
        tuning_runs: training runs spent tuning it (0 when nothing was tuned).
        note: e.g. the tuned multiplier.
    """

    label: str
    kind: str
    optimizer: str
    lr: float
    runs: list[Any] = field(default_factory=list)
    tuning_runs: int = 0
    note: str = ""

    def _stat(self, values: Sequence[float]) -> tuple[float, float]:
        arr = np.asarray(values, dtype=float)
        return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0

    @property
    def aulc(self) -> tuple[float, float]:
        """(mean, std) of the AULC over seeds."""
        return self._stat([r.aulc for r in self.runs])

    @property
    def final_loss(self) -> tuple[float, float]:
        """(mean, std) of the last training-step loss over seeds (NaN for a diverged run)."""
        return self._stat([r.step_losses[-1] if r.step_losses and not r.diverged else math.nan
                           for r in self.runs])

    @property
    def test_accuracy(self) -> tuple[float, float]:
        return self._stat([r.test_accuracy for r in self.runs])

    @property
    def diverged(self) -> int:
        return sum(bool(r.diverged) for r in self.runs)


@dataclass
class Comparison:
    """The result of :func:`compare`: rows sorted by mean AULC, and the files written."""

    rows: list[MethodResult]
    optimizer: str
    seeds: list[int]
    budget: int
    markdown: str = ""
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def scale_invariant(self) -> bool:
        return self.optimizer in SCALE_INVARIANT

    def row(self, label: str) -> MethodResult:
        for r in self.rows:
            if r.label == label:
                return r
        raise KeyError(f"no row {label!r}; rows: {', '.join(r.label for r in self.rows)}")


def optimizer_case(optimizer: str) -> str:
    """The sentence saying how a constant factor in ``g`` acts under ``optimizer``."""
    if optimizer in SCALE_INVARIANT:
        return (f"`{optimizer}` is scale-invariant (Adam-like): it divides by a running gradient scale, so a "
                "constant factor in g cancels and only the shape of g/sigma' over z acts.")
    return (f"`{optimizer}` is SGD-like: g = c*sigma' is exactly lr*c on the layers below the patch site, "
            "so beta(z) = lr*g/sigma' is the step size itself.")


def tune_lr(
    objective: Callable[[float], float],
    *,
    low: float,
    high: float,
    budget: int,
    seed: int = 0,
    name: str = "lr",
    progress: Callable[[], None] | None = None,
) -> tuple[float, float, list[tuple[float, float]]]:
    """Minimise ``objective(x)`` over ``x`` log-uniform in ``[low, high]`` with Optuna's TPE.

    Args:
        objective: one training run at ``x``, returning its AULC.
        low, high: the range, ``0 < low < high``.
        budget: number of evaluations (training runs).
        seed: the sampler's seed.
        name: the parameter's name in the Optuna study.
        progress: called after each evaluation (e.g. a tqdm bar's ``update``).

    Returns:
        ``(best_x, best_value, [(x, value), ...])`` in evaluation order.
    """
    import optuna

    if not 0 < low < high:
        raise ConfigError(f"tuning range [{low}, {high}] for {name}: need 0 < low < high")
    if budget < 1:
        raise ConfigError(f"budget={budget!r}: tuning needs at least 1 training run")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    history: list[tuple[float, float]] = []

    def _f(trial: optuna.Trial) -> float:
        x = trial.suggest_float(name, low, high, log=True)
        value = float(objective(x))
        history.append((x, value))
        if progress is not None:
            progress()
        return value if math.isfinite(value) else 1e300

    study.optimize(_f, n_trials=budget)
    return float(study.best_params[name]), float(study.best_value), history


def compare(
    spec: Any,
    bfn: BFunction | None,
    *,
    where: str | None = None,
    budget: int,
    seeds: Sequence[int] = (1, 2, 3, 4, 5),
    tune_seed: int = 0,
    optimizers: Sequence[str] | None = None,
    output: str | os.PathLike | None = None,
    label: str = "best g",
    device: str = "cpu",
    data_dir: str | None = None,
    progress: bool = False,
) -> Comparison:
    """Run the comparison on target ``spec`` and (if ``output``) write its table and plot.

    Args:
        spec: a ``metabp.targets.TargetSpec`` (its optimizer and lr are "plain backprop").
        bfn: the b-function under test, or None to compare baselines only.
        where: patch site; None for the spec's own.
        budget: training runs to tune each baseline's lr and the control's multiplier.
        seeds: evaluation seeds (each method trains once per seed).
        tune_seed: seed of the tuning runs (the study's training seed).
        optimizers: baselines to tune; default all ten of :data:`BASELINES`.
        output: folder for ``compare.md``, ``compare.csv``, ``compare_loss.png``.
        label: the row name of ``bfn``.
        device, data_dir: passed to ``metabp.targets.train``.
        progress: a tqdm bar over every training run.

    Returns:
        :class:`Comparison`.
    """
    from tqdm.auto import tqdm

    from metabp.targets import train

    optimizers = list(BASELINES if optimizers is None else optimizers)
    unknown = [o for o in optimizers if o not in BASELINES]
    if unknown:
        raise ConfigError(f"optimizers={unknown!r} unknown; choose from {', '.join(BASELINES)}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("seeds is empty; give at least one evaluation seed")
    n_eval = len(seeds) * (1 + (bfn is not None) + len(optimizers) + 1)
    bar = tqdm(total=budget * (len(optimizers) + 1) + n_eval, desc="compare", unit="run",
               disable=not progress)

    def run(s: Any, seed: int, g: BFunction | None = None) -> Any:
        r = train(s, g, where if g is not None else None, seed, device=device, data_dir=data_dir)
        bar.update()
        return r

    def evaluate(res: MethodResult, s: Any, g: BFunction | None = None) -> MethodResult:
        bar.set_postfix_str(f"{res.label}: seeds")
        res.runs = [run(s, seed, g) for seed in seeds]
        return res

    rows = [evaluate(MethodResult("plain backprop", "plain", spec.optimizer, spec.lr), spec)]
    if bfn is not None:
        rows.append(evaluate(MethodResult(label, "bfn", spec.optimizer, spec.lr), spec, bfn))
    for name in optimizers:
        bar.set_postfix_str(f"tuning {name}")
        lo, hi = LR_RANGES[name]
        best, _, _ = tune_lr(lambda lr, name=name: run(dataclasses.replace(spec, optimizer=name, lr=lr),
                                                       tune_seed).aulc,
                             low=lo, high=hi, budget=budget, seed=tune_seed)
        tuned = dataclasses.replace(spec, optimizer=name, lr=best)
        rows.append(evaluate(MethodResult(f"{name} (tuned lr)", "baseline", name, best, tuning_runs=budget),
                             tuned))
    bar.set_postfix_str("tuning lr multiplier")
    c, _, _ = tune_lr(lambda c: run(dataclasses.replace(spec, lr=spec.lr * c), tune_seed).aulc,
                      low=MULTIPLIER_RANGE[0], high=MULTIPLIER_RANGE[1], budget=budget, seed=tune_seed,
                      name="c")
    control = MethodResult("plain, lr x c (tuned)", "control", spec.optimizer, spec.lr * c,
                           tuning_runs=budget, note=f"c = {c:.4g}")
    rows.append(evaluate(control, dataclasses.replace(spec, lr=spec.lr * c)))
    bar.close()
    rows.sort(key=lambda r: (r.aulc[0], r.label))
    result = Comparison(rows, spec.optimizer, seeds, budget)
    result.markdown = to_markdown(result, target=getattr(spec, "name", "target"), where=where)
    if output is not None:
        result.files = write(result, output)
    return result


def _pm(stat: tuple[float, float], fmt: str = ".4f") -> str:
    mean, std = stat
    return "nan" if math.isnan(mean) else f"{mean:{fmt}} ± {std:{fmt}}"


def to_markdown(result: Comparison, *, target: str = "target", where: str | None = None) -> str:
    """The comparison table in Markdown, with a header that says which optimizer case applies."""
    lines = [
        f"## Comparison on `{target}`" + (f" (b-function at `{where}`)" if where else ""),
        "",
        optimizer_case(result.optimizer),
        "",
        f"Baselines tuned with {result.budget} training runs each (the study's budget), TPE over a "
        f"log-uniform lr range; every row trained on seeds {', '.join(map(str, result.seeds))} "
        "(not the tuning seed). AULC = mean training loss per step, lower is better.",
        "",
        "| rank | method | optimizer | lr | scale-invariant | AULC (mean ± std) | final loss | test acc "
        "| diverged |",
        "|---:|---|---|---:|:---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(result.rows, 1):
        note = f" ({r.note})" if r.note else ""
        inv = "yes" if r.optimizer in SCALE_INVARIANT else "no"
        lines.append(f"| {i} | {r.label}{note} | {r.optimizer} | {r.lr:.3g} | {inv} | {_pm(r.aulc)} | "
                     f"{_pm(r.final_loss)} | {_pm(r.test_accuracy, '.3f')} | {r.diverged}/{len(r.runs)} |")
    return "\n".join(lines) + "\n"


def write(result: Comparison, output: str | os.PathLike) -> dict[str, Path]:
    """Write ``compare.md``, ``compare.csv`` and ``compare_loss.png`` into ``output``."""
    from metabp.plots import plot_loss_curves

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "compare.md"
    md.write_text(result.markdown + "\n![loss curves](compare_loss.png)\n")
    path_csv = out / "compare.csv"
    with path_csv.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "kind", "optimizer", "lr", "scale_invariant", "aulc_mean", "aulc_std",
                    "final_loss_mean", "final_loss_std", "test_accuracy_mean", "test_accuracy_std",
                    "diverged", "n_seeds", "tuning_runs", "note"])
        for r in result.rows:
            w.writerow([r.label, r.kind, r.optimizer, repr(r.lr), r.optimizer in SCALE_INVARIANT,
                        *r.aulc, *r.final_loss, *r.test_accuracy, r.diverged, len(r.runs), r.tuning_runs,
                        r.note])
    curves = {r.label: [run.step_losses for run in r.runs] for r in result.rows}
    styles = {r.label: {"lw": 2.5, "color": "k"} for r in result.rows if r.kind == "bfn"}
    styles.update({r.label: {"lw": 2.0, "ls": "--", "color": "0.4"}
                   for r in result.rows if r.kind == "plain"})
    inv = ("scale-invariant: constants in g cancel" if result.scale_invariant
           else "SGD-like: g = c*sigma' is lr*c")
    png = plot_loss_curves(curves, out / "compare_loss.png", logy=True, styles=styles,
                           title=f"study optimizer {result.optimizer} ({inv})\n"
                                 f"mean and min-max over {len(result.seeds)} seeds").path
    return {"markdown": md, "csv": path_csv, "png": png}
