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

import contextlib
import fnmatch
import functools
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import metabp
from metabp._bfunctions import BFunction
from metabp.exceptions import ConfigError
from metabp.targets._args import check_seed
from metabp.targets._data import Data
from metabp.targets._optim import make_optimizer
from metabp.targets._spec import DEFAULT_MAX_LOSS, TargetSpec, build_model, load_data

EVAL_CHUNK = 2048  # test examples per forward pass when measuring accuracy
SMALL_TARGET_PARAMS = 1_000_000  # below this many parameters a run is overhead-bound: 1 thread


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
    meta: dict = field(default_factory=dict)


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


def is_diverged(loss: float, max_loss: float) -> bool:
    """A step loss that ends a run: NaN, inf or above the cap."""
    return not math.isfinite(loss) or loss > max_loss


# ----------------------------------------------------------------------------- threads
def recommended_threads(spec: TargetSpec, device: str | torch.device = "cpu") -> int | None:
    """Threads for training ``spec`` on ``device``: 1 for small CPU targets, else ``None`` (torch's).

    Small networks (under ``SMALL_TARGET_PARAMS`` parameters) are bound by per-op overhead, and
    on a few cores a second thread only adds synchronisation: they train several times faster
    with one thread (``benchmarks/train_many.py`` measures it). Large ones use every core.
    """
    if torch.device(device).type != "cpu":
        return None
    return 1 if _num_params(spec) < SMALL_TARGET_PARAMS else None


@functools.lru_cache(maxsize=64)
def _num_params(spec: TargetSpec) -> int:
    return sum(p.numel() for p in build_model(spec, 0).parameters())


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (``None``: leave it), restoring it after."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_threads(threads: int | str | None, spec: TargetSpec, device: str | torch.device) -> int | None:
    if threads == "auto":
        return recommended_threads(spec, device)
    if threads is None or (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1):
        return threads
    raise ConfigError(f"threads={threads!r} must be 'auto', None or an int >= 1")


# ----------------------------------------------------------------------------- pieces of a run
def batches(n: int, batch_size: int | None, epochs: int, seed: int) -> Iterator[list[Tensor]]:
    """Per epoch, the index tensors of its mini-batches: a fresh permutation of ``range(n)`` each
    epoch, drawn from a generator seeded with ``seed`` (full batch: ``range(n)``, unshuffled)."""
    if batch_size is None or batch_size >= n:
        everything = torch.arange(n)
        for _ in range(epochs):
            yield [everything]
        return
    gen = torch.Generator().manual_seed(int(seed))
    for _ in range(epochs):
        yield list(torch.randperm(n, generator=gen).split(batch_size))


def steps_per_epoch(n: int, batch_size: int | None) -> int:
    return 1 if batch_size is None or batch_size >= n else math.ceil(n / batch_size)


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
    """The parameters that train (``select_trainable``); the others get ``requires_grad=False``."""
    named = list(named)
    keep = select_trainable([n for n, _ in named], trainable)
    for name, p in named:
        p.requires_grad_(name in keep)
    return [p for name, p in named if name in keep]


def apply_feedback(model: nn.Module, mode: str, seed: int) -> None:
    """``metabp.feedback(model, mode, seed=seed)``, looked up only when a spec asks for feedback
    (the run seed also fixes the random feedback matrices: common random numbers)."""
    feedback = getattr(metabp, "feedback", None)
    if feedback is None:
        raise ConfigError(f"feedback={mode!r} needs metabp.feedback, which this metabp does not have")
    feedback(model, mode, seed=seed)


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Fraction of ``x`` (``M x *in_shape``) that ``model`` classifies as ``y`` (``M``), in eval mode."""
    was_training = model.training
    model.eval()
    right = sum(int((model(xc).argmax(-1) == yc).sum()) for xc, yc in
                zip(x.split(EVAL_CHUNK), y.split(EVAL_CHUNK), strict=True))
    model.train(was_training)
    return right / max(len(y), 1)


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="epoch", leave=False)


# ----------------------------------------------------------------------------- train
def train(spec: TargetSpec, bfn: BFunction | None = None, where: str | None = None, seed: int = 0, *,
          device: str | torch.device = "cpu", progress: bool = False,
          data_dir: str | os.PathLike | None = None, threads: int | str | None = "auto") -> Run:
    """Train the target ``spec`` once with ``bfn`` in place of ``sigma'`` at ``where``.

    Args:
        spec: the target (``get_target(...)``).
        bfn: the b-function; ``None`` trains with plain backprop.
        where: the activation(s) to patch, as for ``metabp.patch``; ``None`` uses ``spec.where``.
        seed: fixes the initial weights and the data order (common random numbers).
        device: where to train (``"cpu"``, ``"cuda"``).
        progress: show a tqdm bar over epochs.
        data_dir: directory with dataset files (else ``$METABP_DATA``); see ``load_data``.
        threads: CPU threads while training: ``"auto"`` (1 for small targets, see
            :func:`recommended_threads`), an int, or ``None`` to leave torch's setting.

    Returns:
        A :class:`Run`. A diverged run stops early and is scored, never raises.

    Example:
        >>> run = train(get_target("gaussians-mlp3", epochs=3), metabp.Scaled(0.5), seed=0)
        >>> len(run.step_losses), run.diverged
        (3, False)
    """
    if not isinstance(spec, TargetSpec):
        raise ConfigError(f"spec={spec!r} is not a TargetSpec; build one with get_target(name)")
    if bfn is not None and not isinstance(bfn, BFunction):
        raise ConfigError(f"bfn={bfn!r} is not a b-function (MetaNet, Derivative, Scaled) or None")
    data = load_data(spec, data_dir).to(device)
    with num_threads(resolve_threads(threads, spec, device)):
        return _train(spec, data, bfn, spec.where if where is None else where, check_seed(seed),
                      torch.device(device), progress)


def _train(spec: TargetSpec, data: Data, bfn: BFunction | None, where: str, seed: int,
           device: torch.device, progress: bool) -> Run:
    start = time.perf_counter()
    model = build_model(spec, seed).to(device)
    if bfn is not None:
        metabp.patch(model, bfn, where)
    if spec.feedback is not None:
        apply_feedback(model, spec.feedback, seed)
    opt = make_optimizer(spec.optimizer, trainable_parameters(model.named_parameters(), spec.trainable),
                         spec.lr)
    n = len(data.y_train)
    total = spec.epochs * steps_per_epoch(n, spec.batch_size)
    step_losses: list[float] = []
    epoch_losses: list[float] = []
    diverged = False
    bar = _progress(spec.epochs, progress, spec.name)
    model.train()
    for epoch_batches in batches(n, spec.batch_size, spec.epochs, seed):
        first = len(step_losses)
        for idx in epoch_batches:
            idx = idx.to(device)
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            value = loss.item()
            step_losses.append(value)
            if is_diverged(value, spec.max_loss):
                diverged = True
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if diverged:
            break
        epoch_losses.append(math.fsum(step_losses[first:]) / (len(step_losses) - first))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{epoch_losses[-1]:.4g}")
    if bar is not None:
        bar.close()
    score = aulc(step_losses, diverged=diverged, max_loss=spec.max_loss, total_steps=total)
    acc = float("nan") if diverged else accuracy(model, data.x_test, data.y_test)
    return Run(step_losses, epoch_losses, score, acc, diverged, time.perf_counter() - start)


__all__ = ["Run", "aulc", "train", "recommended_threads", "num_threads", "is_diverged"]
