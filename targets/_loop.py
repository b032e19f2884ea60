r"""The one training loop behind ``train`` and ``train_many``, and the pieces it runs on.

A model here returns the logits of ``K`` copies: ``K x B x C`` for a batched model, or ``B x C``
for a plain ``nn.Module`` (the case ``K = 1``). Each step the loop computes every copy's mean
cross-entropy :math:`\bar L_k`, records it, backpropagates :math:`\sum_{k\ \mathrm{alive}} \bar L_k`
(so each copy's gradient is its own), calls the callbacks, and steps the optimizer.

A copy **diverges** when its step loss is NaN/inf or above ``max_loss``. It is masked out: its
loss leaves the sum, its weights and optimizer state are zeroed (so it stays finite and inert),
and the others go on; when no copy is left the loop ends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EVAL_CHUNK = 2048  # test examples per forward pass when measuring accuracy


@dataclass
class StepEvent:
    """What a callback sees at one optimisation step, after ``loss.backward()`` and before
    ``optimizer.step()``: the gradients that will be applied are in ``p.grad`` of the model's
    parameters (a callback that changes them must restore them).

    Attributes:
        step: the 0-based optimisation step.
        epoch: the 0-based epoch.
        model: the module being trained (for ``train_many``: the batched model, parameters
            ``K x ...``).
        x: the batch's inputs (``B x ...``, or ``K x B x ...`` when each copy has its own batch).
        y: the batch's labels (``B``, or ``K x B``).
        loss: the loss just backpropagated, a 0-d tensor (for one model: its cross-entropy).
        optimizer: the optimizer about to step.
        losses: every copy's mean loss at this step, ``K`` (detached).
        alive: which copies still train, ``K`` bools.
    """

    step: int
    epoch: int
    model: nn.Module
    x: Tensor
    y: Tensor
    loss: Tensor
    optimizer: torch.optim.Optimizer
    losses: Tensor
    alive: Tensor


Callback = Callable[[StepEvent], None]


@dataclass
class Curves:
    """Per copy: the step losses, the epoch means, and whether it diverged."""

    step_losses: list[list[float]]
    epoch_losses: list[list[float]]
    diverged: list[bool] = field(default_factory=list)


def is_diverged(loss: float, max_loss: float) -> bool:
    """A step loss that ends a run: NaN, inf or above the cap.

    Example:
        >>> is_diverged(float("nan"), 100.0), is_diverged(101.0, 100.0), is_diverged(2.0, 100.0)
        (True, True, False)
    """
    return not math.isfinite(loss) or loss > max_loss


def steps_per_epoch(n: int, batch_size: int | None) -> int:
    """Optimisation steps in one epoch of ``n`` examples (full batch: 1).

    Example:
        >>> steps_per_epoch(1437, 64), steps_per_epoch(200, None)
        (23, 1)
    """
    return 1 if batch_size is None or batch_size >= n else math.ceil(n / batch_size)


def batches(n: int, batch_size: int | None, epochs: int, seed: int) -> Iterator[list[Tensor]]:
    """Per epoch, the index tensors of its mini-batches: a fresh permutation of ``range(n)`` each
    epoch, drawn from a generator seeded with ``seed`` (full batch: ``range(n)``, unshuffled).

    Example:
        >>> [[i.tolist() for i in epoch] for epoch in batches(4, 2, 1, seed=0)]
        [[[0, 1], [3, 2]]]
    """
    if batch_size is None or batch_size >= n:
        everything = torch.arange(n)
        for _ in range(epochs):
            yield [everything]
        return
    gen = torch.Generator().manual_seed(int(seed))
    for _ in range(epochs):
        yield list(torch.randperm(n, generator=gen).split(batch_size))


def copy_batches(n: int, batch_size: int | None, epochs: int, seeds: Sequence[int]) -> Iterator[list[Tensor]]:
    """Per epoch, its mini-batches' indices for copies with ``seeds``: ``B`` when every copy sees
    the same batch (one seed, or full batch), else ``K x B`` (row ``k``: the batches of ``seeds[k]``)."""
    if len(set(seeds)) == 1 or steps_per_epoch(n, batch_size) == 1:
        yield from batches(n, batch_size, epochs, seeds[0])
        return
    distinct = list(dict.fromkeys(seeds))
    rows = [distinct.index(s) for s in seeds]
    for epoch in zip(*(batches(n, batch_size, epochs, s) for s in distinct), strict=True):
        yield [torch.stack(step)[rows] for step in zip(*epoch, strict=True)]


def copy_losses(logits: Tensor, y: Tensor) -> Tensor:
    """Each copy's mean cross-entropy, ``K``: ``logits`` ``K x B x C`` with labels ``B`` (shared)
    or ``K x B`` (per copy), or ``B x C`` with ``B`` (one model: ``K = 1``)."""
    if logits.dim() == 2:
        return F.cross_entropy(logits, y).unsqueeze(0)
    K, B, _ = logits.shape
    # classes on dim 1 (K x C x B): on CPU, log-softmax over a short last dim is several times slower
    return F.cross_entropy(logits.transpose(1, 2), y.expand(K, B), reduction="none").mean(1)


def model_losses(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """:func:`copy_losses` of ``model(x)``: the function the loop calls each step (or its compiled form)."""
    return copy_losses(model(x), y)


@torch.no_grad()
def copy_accuracies(model: nn.Module, x: Tensor, y: Tensor) -> list[float]:
    """Per copy, the fraction of ``x`` (``M x *in_shape``) classified as ``y``, in eval mode."""
    was_training = model.training
    model.eval()
    right = None
    for xc, yc in zip(x.split(EVAL_CHUNK), y.split(EVAL_CHUNK), strict=True):
        hits = (model(xc).argmax(-1) == yc).sum(-1)
        right = hits if right is None else right + hits
    model.train(was_training)
    return (right.reshape(-1).double() / max(len(y), 1)).tolist()


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Fraction of ``x`` (``M x *in_shape``) that ``model`` classifies as ``y`` (``M``), in eval mode.

    Example:
        >>> accuracy(nn.Linear(2, 2), torch.zeros(3, 2), torch.tensor([0, 0, 0])) in (0.0, 1.0)
        True
    """
    return copy_accuracies(model, x, y)[0]


def _zero_copies(dead: list[int], opt: torch.optim.Optimizer) -> None:
    """Make the copies ``dead`` inert: zero their weights, gradients and optimizer state."""
    with torch.no_grad():
        for group in opt.param_groups:
            for p in group["params"]:
                p[dead] = 0.0
                if p.grad is not None:
                    p.grad[dead] = 0.0
                for value in opt.state.get(p, {}).values():
                    if torch.is_tensor(value) and value.shape[:1] == p.shape[:1] and value.dim() == p.dim():
                        value[dead] = 0.0


def _record(values: list[float], alive: Tensor, curves: Curves, max_loss: float) -> list[int]:
    """Append each alive copy's loss to its curve; the copies that diverge at this step."""
    newly = []
    for k in alive.nonzero().flatten().tolist():
        curves.step_losses[k].append(values[k])
        if is_diverged(values[k], max_loss):
            newly.append(k)
    return newly


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable[[Tensor, Tensor], Tensor],
        epochs: Iterable[Iterable[tuple[Tensor, Tensor]]], *, copies: int, max_loss: float,
        callbacks: Sequence[Callback] = (), bar=None) -> Curves:
    """Train ``model``: each epoch of ``epochs`` yields its batches ``(x, y)``; ``loss_fn(x, y)``
    gives the ``copies`` per-copy losses. Returns every copy's curves (see the module docstring)."""
    curves = Curves([[] for _ in range(copies)], [[] for _ in range(copies)])
    alive = torch.ones(copies, dtype=torch.bool)
    step = 0
    model.train()
    for epoch, epoch_batches in enumerate(epochs):
        first = [len(c) for c in curves.step_losses]
        for x, y in epoch_batches:
            losses = loss_fn(x, y)
            newly = _record(losses.tolist(), alive, curves, max_loss)
            if newly:
                alive[newly] = False
                if not alive.any():
                    break
                _zero_copies((~alive).nonzero().flatten().tolist(), optimizer)
                losses = loss_fn(x, y)  # again, so no NaN reaches the backward of the dead
            optimizer.zero_grad(set_to_none=True)
            loss = losses.sum() if alive.all() else losses[alive.to(losses.device)].sum()
            loss.backward()
            for cb in callbacks:
                cb(StepEvent(step, epoch, model, x, y, loss.detach(), optimizer, losses.detach(),
                             alive.clone()))
            optimizer.step()
            if not alive.all():
                _zero_copies((~alive).nonzero().flatten().tolist(), optimizer)
            step += 1
        if not alive.any():
            break
        for k in alive.nonzero().flatten().tolist():
            curve = curves.step_losses[k]
            curves.epoch_losses[k].append(math.fsum(curve[first[k]:]) / (len(curve) - first[k]))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{curves.epoch_losses[int(alive.nonzero()[0])][-1]:.4g}",
                            alive=int(alive.sum()))
    curves.diverged = (~alive).tolist()
    return curves


__all__ = ["StepEvent", "Callback", "Curves", "fit", "batches", "copy_batches", "steps_per_epoch",
           "is_diverged", "copy_losses", "model_losses", "copy_accuracies", "accuracy", "EVAL_CHUNK"]
