r"""One training run of a target network, its loss curve and its AULC.

The score of a b-function is the **area under the training-loss curve** (AULC), normalised by
its length so runs of different lengths compare:

.. math:: \mathrm{AULC} = \frac{1}{T} \sum_{t=1}^{T} L_t,

where :math:`L_t` is the mini-batch training loss at optimisation step :math:`t` (measured on the
batch before that step's update) and :math:`T` the number of steps. Lower is better: a
b-function that learns faster has a smaller area.

A run **diverges** when a step loss is NaN/inf or above ``spec.max_loss``. It stops there, is
marked ``diverged`` and scores

.. math:: \mathrm{AULC}_{\mathrm{div}} = L_{\max} (2 - t_{\mathrm{stop}} / T) \in (L_{\max}, 2 L_{\max}],

finite and worse than any finished run (whose AULC is at most :math:`L_{\max}`); a run that
lasts longer before diverging scores a little better. It never raises.

Common random numbers: the seed fixes the initial weights and the data order, the same for every
candidate; on CPU the same seed gives bit-identical loss curves.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import metabp
from metabp import BFunction, PerSite
from metabp.exceptions import ConfigError
from metabp.targets._args import (
    check_bfn,
    check_callbacks,
    check_data_dir,
    check_device,
    check_flag,
    check_seed,
    check_spec,
)
from metabp.targets._data import Data
from metabp.targets._loop import (
    Callback,
    copy_accuracies,
    copy_batches,
    fit,
    gather_batches,
    model_losses,
    steps_per_epoch,
)
from metabp.targets._optim import PerCopyLR, make_optimizer
from metabp.targets._spec import DEFAULT_MAX_LOSS, TargetSpec, build_model, load_data
from metabp.targets._threads import num_threads, resolve_threads


@dataclass
class Run:
    """The result of one training run.

    Attributes:
        step_losses: training loss at every optimisation step (length ``T``, shorter if diverged).
        epoch_losses: mean of ``step_losses`` over each completed epoch.
        aulc: :func:`aulc` of the run (the divergence penalty if ``diverged``).
        test_accuracy: fraction of the test set classified right after training; NaN if diverged.
        diverged: whether the run stopped on a NaN/inf loss or one above ``spec.max_loss``.
        seconds: wall time of the run (for ``train_many``: the batched run's time over ``K``).
    """

    step_losses: list[float]
    epoch_losses: list[float]
    aulc: float
    test_accuracy: float
    diverged: bool
    seconds: float


def aulc(step_losses: list[float] | Tensor, *, diverged: bool = False, max_loss: float = DEFAULT_MAX_LOSS,
         total_steps: int | None = None) -> float:
    r"""Area under the loss curve per step: :math:`\frac1T \sum_t L_t` (see the module docstring).

    With ``diverged=True`` returns the penalty :math:`L_{\max}(2 - t_{stop}/T)`, where
    ``t_stop = len(step_losses)`` and ``T = total_steps`` (default: ``t_stop``).

    Example:
        >>> aulc([3.0, 2.0, 1.0])
        2.0
        >>> aulc([1.0, 5.0], diverged=True, max_loss=100.0, total_steps=4)
        150.0
    """
    losses = [float(v) for v in step_losses]
    if diverged:
        total = max(total_steps or len(losses), 1)
        return float(max_loss) * (2.0 - min(len(losses), total) / total)
    if not losses:
        raise ConfigError("aulc(step_losses=[]): a loss curve needs at least one step")
    return math.fsum(losses) / len(losses)


def select_trainable(names: list[str], trainable: str | None) -> set[str]:
    """The parameter names that train: all, or those matching the glob ``trainable``."""
    if trainable is None:
        return set(names)
    chosen = {n for n in names if fnmatch.fnmatchcase(n, trainable)}
    if not chosen:
        raise ConfigError(
            f"trainable={trainable!r} matches no parameter; the parameters are: {', '.join(names)}"
        )
    return chosen


def trainable_parameters(named: Iterable[tuple[str, Tensor]], trainable: str | None) -> list[Tensor]:
    """The parameters that train (those matching the glob ``trainable``, or all if ``None``);
    the others get ``requires_grad=False``."""
    named = list(named)
    keep = select_trainable([n for n, _ in named], trainable)
    for name, p in named:
        p.requires_grad_(name in keep)
    return [p for name, p in named if name in keep]


def apply_feedback(model: nn.Module, mode: str, seed: int) -> None:
    """``metabp.feedback(model, mode, seed=seed)``: the run seed also fixes the random feedback
    matrices (common random numbers)."""
    metabp.feedback(model, mode, seed=seed)


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="epoch", leave=False)


def on_device(data: Data, device: torch.device) -> Data:
    """``data`` on ``device``, its inputs in torch's default dtype (the dtype of a model built now)."""
    data, dtype = data.to(device), torch.get_default_dtype()
    if not data.x_train.is_floating_point() or data.x_train.dtype == dtype:
        return data
    return Data(data.x_train.to(dtype), data.y_train, data.x_test.to(dtype), data.y_test, data.num_classes)


def copy_optimizer(spec: TargetSpec, params: list[Tensor],
                   lrs: Sequence[float] | None) -> torch.optim.Optimizer:
    """``spec.optimizer`` over ``params`` at ``spec.lr`` (``lrs`` ``None``) or at one lr per copy:
    torch's optimizer itself when every copy has the same lr, else a :class:`PerCopyLR`."""
    if lrs is None or len(set(lrs)) == 1:
        return make_optimizer(spec.optimizer, params, spec.lr if lrs is None else lrs[0])
    return PerCopyLR(spec.optimizer, params, lrs)


def train_copies(spec: TargetSpec, data: Data, model: nn.Module, seeds: Sequence[int], *, start: float,
                 device: torch.device, progress: bool, compile: bool,
                 callbacks: Sequence[Callback], lrs: Sequence[float] | None = None) -> list[Run]:
    """Train ``model`` (one network, or ``len(seeds)`` batched copies) with the shared loop; a
    :class:`Run` per copy, copy ``k`` on the batches of ``seeds[k]`` at learning rate ``lrs[k]``
    (default ``spec.lr``)."""
    K = len(seeds)
    opt = copy_optimizer(spec, trainable_parameters(model.named_parameters(), spec.trainable), lrs)
    if compile:
        from metabp.targets._compile import compiled_model_losses

        loss_fn = functools.partial(compiled_model_losses(), model)
    else:
        loss_fn = functools.partial(model_losses, model)
    n = len(data.y_train)
    epochs = gather_batches(data.x_train, data.y_train, copy_batches(n, spec.batch_size, spec.epochs, seeds))
    bar = _progress(spec.epochs, progress, spec.name if K == 1 else f"{spec.name} x{K}")
    try:
        curves = fit(model, opt, loss_fn, epochs, copies=K, max_loss=spec.max_loss, callbacks=callbacks,
                     bar=bar)
    finally:
        if bar is not None:
            bar.close()
    total = spec.epochs * steps_per_epoch(n, spec.batch_size)
    accs = (copy_accuracies(model, data.x_test, data.y_test) if not all(curves.diverged)
            else [float("nan")] * K)
    seconds = (time.perf_counter() - start) / K
    return [Run(curves.step_losses[k], curves.epoch_losses[k],
                aulc(curves.step_losses[k], diverged=curves.diverged[k], max_loss=spec.max_loss,
                     total_steps=total),
                float("nan") if curves.diverged[k] else accs[k], curves.diverged[k], seconds)
            for k in range(K)]


def train(spec: TargetSpec, bfn: BFunction | PerSite | None = None, where: str | None = None,
          seed: int = 0, *,
          device: str | torch.device = "cpu", progress: bool = False,
          data_dir: str | os.PathLike | None = None, threads: int | str | None = "auto",
          compile: bool = False, callbacks: Sequence[Callback] = ()) -> Run:
    """Train the target ``spec`` once with ``bfn`` in place of ``sigma'`` at ``where``.

    Args:
        spec: the target (``get_target(...)``).
        bfn: the b-function; ``None`` trains with plain backprop. A :class:`~metabp.PerSite`
            (or dict ``{site: g}``) backprops each site's own g (``where`` stays ``None``).
        where: the activation(s) to patch, as for ``metabp.patch``; ``None`` uses ``spec.where``.
        seed: an int in ``[0, 2**63 - 1]``; fixes the initial weights and the data order
            (common random numbers).
        device: where to train (``"cpu"``, ``"cuda"``); it must exist here.
        progress: show a tqdm bar over epochs.
        data_dir: directory with dataset files (else ``$METABP_DATA``); see ``load_data``.
        threads: CPU threads while training: ``"auto"`` (1 for small targets, see
            :func:`recommended_threads`), an int, or ``None`` to leave torch's setting.
        compile: run the forward and backward through ``torch.compile`` (the same losses up to
            float rounding). The first run of a target compiles (seconds to a minute on a CPU);
            later runs in the process reuse the graphs, whatever the b-function and seed.
            ``benchmarks/train_many.py --compile`` measures what it gains.
        callbacks: functions ``cb(event)`` called every step with a :class:`StepEvent`, after
            the backward pass and before the optimizer step.

    Returns:
        A :class:`Run`. A diverged run stops early and is scored, never raises.

    Example:
        >>> from metabp.targets import get_target
        >>> run = train(get_target("gaussians-mlp3", epochs=3), metabp.Scaled(0.5), seed=0)
        >>> len(run.step_losses), run.diverged
        (3, False)
    """
    spec, bfn = check_spec(spec), check_bfn(bfn)
    if isinstance(bfn, PerSite) and where is not None:
        raise ConfigError(f"train(where={where!r}) with a PerSite: its sites {list(bfn)} select the "
                          "activations; leave where at None")
    seed, dev, callbacks = check_seed(seed), check_device(device), check_callbacks(callbacks)
    progress, compile = check_flag(progress, "progress"), check_flag(compile, "compile")
    data = on_device(load_data(spec, check_data_dir(data_dir)), dev)
    with num_threads(resolve_threads(threads, spec, dev)):
        start = time.perf_counter()
        model = build_model(spec, seed).to(dev)
        if isinstance(bfn, PerSite):
            metabp.patch(model, bfn)
        elif bfn is not None:
            metabp.patch(model, bfn, spec.where if where is None else where)
        if spec.feedback is not None:
            apply_feedback(model, spec.feedback, seed)
        return train_copies(spec, data, model, [seed], start=start, device=dev, progress=progress,
                            compile=compile, callbacks=callbacks)[0]


__all__ = ["Run", "aulc", "train", "train_copies", "copy_optimizer", "on_device", "trainable_parameters",
           "apply_feedback"]
