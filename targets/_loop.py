r"""The one training loop behind ``train`` and ``train_many``, and the pieces it runs on.

A model here returns the logits of ``K`` copies: ``K x B x C`` for a batched model, or ``B x C``
for a plain ``nn.Module`` (the case ``K = 1``). Each step the loop computes every copy's mean
cross-entropy :math:`\bar L_k`, records it, backpropagates :math:`\sum_{k\ \mathrm{alive}} \bar L_k`
(so each copy's gradient is its own), calls the callbacks, and steps the optimizer.

A copy **diverges** when its step loss is NaN/inf or above ``max_loss``. It is masked out: its
loss leaves the sum, its weights and optimizer state are zeroed (so it stays finite and inert),
and the others go on; when no copy is left the loop ends.

On the CPU the loop reads each step's losses back at once. On an accelerator reading them back
would make every step wait for the device, so the losses stay there and are read back every
:data:`CHECK_EVERY` steps and at each epoch's end; a diverged copy is found then, at the step
where it diverged, and its curve, flag and score are what a per-step check gives. The batches
are gathered on the device from the data held there (:func:`gather_batches`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabp.targets._optim import zero_copies

EVAL_CHUNK = 2048  # test examples per forward pass when measuring accuracy
CHECK_EVERY = 50  # on an accelerator: steps between reading the losses back (one sync each)


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
        alive: which copies still train, ``K`` bools (on an accelerator: as of the last check,
            so a copy that diverged since reads True until then).
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


def gather_batches(x: Tensor, y: Tensor, order: Iterable[list[Tensor]]) -> Iterator[Iterator]:
    """Per epoch of ``order`` (index tensors ``B`` or ``K x B``, as from :func:`copy_batches`),
    its batches ``(x[i], y[i])``. An epoch's indices go to ``x``'s device in one copy (pinned and
    asynchronous on CUDA) and each batch is gathered there, so no step waits on the host."""
    for epoch in order:
        sizes = [i.shape[-1] for i in epoch]
        flat = torch.cat(epoch, dim=-1)
        if x.device.type == "cuda":
            flat = flat.pin_memory().to(x.device, non_blocking=True)
        else:
            flat = flat.to(x.device)
        yield ((_take(x, i), _take(y, i)) for i in flat.split(sizes, dim=-1))


def _take(t: Tensor, index: Tensor) -> Tensor:
    """``t[index]`` for an index ``B`` or ``K x B``, by ``index_select`` (lighter than ``t[index]``)."""
    return t.index_select(0, index.reshape(-1)).view(*index.shape, *t.shape[1:])


def copy_losses(logits: Tensor, y: Tensor) -> Tensor:
    r"""Each copy's mean cross-entropy :math:`\bar L_k = -\frac1B \sum_i \log
    \mathrm{softmax}(z_{k,i})_{y_{k,i}}`, ``K``: ``logits`` ``K x B x C`` with labels ``B`` (shared)
    or ``K x B`` (per copy), or ``B x C`` with ``B`` (one model: ``K = 1``).

    One model's is ``F.cross_entropy``. On the CPU copy ``k``'s loss and its gradient are that of
    ``F.cross_entropy(logits[k], y_k)`` bit for bit: the log-softmax runs over the last dim row
    by row, as for one model, and the mean is ``nll_loss``'s own per copy (:class:`_CopyNLL`)."""
    if logits.dim() == 2:
        return F.cross_entropy(logits, y).unsqueeze(0)
    K, B, _ = logits.shape
    return _CopyNLL.apply(F.log_softmax(logits, -1), y.expand(K, B))


class _CopyNLL(torch.autograd.Function):
    r"""Per-copy mean negative log-likelihood of ``logp`` ``K x B x C`` at labels ``y`` ``K x B``.

    Forward: on the CPU ``nll_loss(logp[k], y[k])`` per copy (its summation order, so the losses
    are those of ``K`` separate models); elsewhere one gather and mean. Backward, as ``nll_loss``'s:
    :math:`\partial \bar L_k / \partial \log p_{k,i,y_{k,i}} = -(g_k / B)`, zero elsewhere."""

    @staticmethod
    def forward(ctx, logp: Tensor, y: Tensor) -> Tensor:
        ctx.save_for_backward(y)
        ctx.shape = logp.shape
        if logp.device.type == "cpu":
            return torch.stack([F.nll_loss(a, b) for a, b in zip(logp.unbind(0), y.unbind(0), strict=True)])
        return -logp.gather(2, y.unsqueeze(2)).squeeze(2).mean(1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (y,) = ctx.saved_tensors
        K, B, C = ctx.shape
        out = grad.new_zeros(K, B, C)
        return out.scatter_(2, y.unsqueeze(2), (-(grad / B)).view(K, 1, 1).expand(K, B, 1)), None


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


def _record(values: list[float], alive: Tensor, curves: Curves, max_loss: float) -> list[int]:
    """Append each alive copy's loss to its curve; the copies that diverge at this step."""
    newly = []
    for k in alive.nonzero().flatten().tolist():
        curves.step_losses[k].append(values[k])
        if is_diverged(values[k], max_loss):
            newly.append(k)
    return newly


class _Watch:
    """Each copy's curve and whether it is alive; on an accelerator, the step losses wait on the
    device (``pending``) and :meth:`flush` reads them back in one copy every ``every`` steps.

    A flush replays the steps in order exactly as a per-step check would: a copy's curve ends at
    its first diverged loss, and it is zeroed then, once: masked out of the loss, it gets a zero
    gradient, and every optimizer here leaves zero weights at zero. Until the flush a diverged
    copy goes on computing NaN; every layer and optimizer here is per copy, so the others are
    untouched.
    """

    def __init__(self, copies: int, max_loss: float, every: int | None) -> None:
        self.curves = Curves([[] for _ in range(copies)], [[] for _ in range(copies)])
        self.alive = torch.ones(copies, dtype=torch.bool)
        self.max_loss, self.every = max_loss, every
        self.pending: list[Tensor] = []
        self.mask: Tensor | None = None  # ``alive`` on the losses' device, once a copy has died

    def deferred(self, losses: Tensor) -> bool:
        """Whether to keep this step's losses on the device (decided at the first step)."""
        if self.every is None:
            self.every = 1 if losses.device.type == "cpu" else CHECK_EVERY
        return self.every > 1

    def flush(self, optimizer: torch.optim.Optimizer) -> bool:
        """Record the pending steps (one device-to-host copy); zero the copies that died in them.
        Whether any did."""
        if not self.pending:
            return False
        device = self.pending[0].device
        rows = torch.stack(self.pending).tolist()
        self.pending.clear()
        before = self.alive.clone()
        for values in rows:
            self.alive[_record(values, self.alive, self.curves, self.max_loss)] = False
        died = not torch.equal(before, self.alive)
        if died:
            if self.alive.any():
                zero_copies(optimizer, (~self.alive).nonzero().flatten().tolist())
            self.mask = self.alive.to(device)
        return died

    def total(self, losses: Tensor) -> Tensor:
        """The loss to backpropagate: the sum over the copies alive (as far as the host knows;
        when checks wait, masked on the device so that no step waits for the host)."""
        if self.every == 1:
            return losses.sum() if self.alive.all() else losses[self.alive.to(losses.device)].sum()
        if self.mask is None:
            return losses.sum()
        return torch.where(self.mask, losses, torch.zeros_like(losses)).sum()

    def end_epoch(self, first: list[int], bar) -> None:
        """Append each alive copy's epoch mean (its steps since ``first``); advance ``bar``."""
        curves, alive = self.curves, self.alive
        for k in alive.nonzero().flatten().tolist():
            curve = curves.step_losses[k]
            curves.epoch_losses[k].append(math.fsum(curve[first[k]:]) / (len(curve) - first[k]))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{curves.epoch_losses[int(alive.nonzero()[0])][-1]:.4g}",
                            alive=int(alive.sum()))


def _check_now(watch: _Watch, losses: Tensor, optimizer: torch.optim.Optimizer, loss_fn: Callable,
               x: Tensor, y: Tensor) -> Tensor | None:
    """The per-step check: record ``losses`` (one sync, a flush of this step alone); if a copy
    diverged, it is zeroed and the losses are computed again (so no NaN reaches the backward of
    the dead); ``None`` when no copy is left."""
    watch.pending.append(losses.detach())
    if not watch.flush(optimizer):
        return losses
    return loss_fn(x, y) if watch.alive.any() else None


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable[[Tensor, Tensor], Tensor],
        epochs: Iterable[Iterable[tuple[Tensor, Tensor]]], *, copies: int, max_loss: float,
        callbacks: Sequence[Callback] = (), bar=None, check_every: int | None = None) -> Curves:
    """Train ``model``: each epoch of ``epochs`` yields its batches ``(x, y)``; ``loss_fn(x, y)``
    gives the ``copies`` per-copy losses. Returns every copy's curves (see the module docstring).

    ``check_every``: steps between divergence checks. ``None``: every step on the CPU, every
    :data:`CHECK_EVERY` steps (and at each epoch's end) elsewhere, so no step waits for the host.
    The curves and scores are the same either way."""
    watch = _Watch(copies, max_loss, check_every)
    step = 0
    model.train()
    for epoch, epoch_batches in enumerate(epochs):
        first = [len(c) for c in watch.curves.step_losses]
        for x, y in epoch_batches:
            losses = loss_fn(x, y)
            if watch.deferred(losses):
                watch.pending.append(losses.detach().clone())  # clone: a CUDA graph reuses its output
            else:
                losses = _check_now(watch, losses, optimizer, loss_fn, x, y)
                if losses is None:
                    break
            optimizer.zero_grad(set_to_none=True)
            loss = watch.total(losses)
            loss.backward()
            for cb in callbacks:
                cb(StepEvent(step, epoch, model, x, y, loss.detach(), optimizer, losses.detach(),
                             watch.alive.clone()))
            optimizer.step()
            step += 1
            if len(watch.pending) >= watch.every:
                watch.flush(optimizer)
                if not watch.alive.any():
                    break
        watch.flush(optimizer)
        if not watch.alive.any():
            break
        watch.end_epoch(first, bar)
    watch.curves.diverged = (~watch.alive).tolist()
    return watch.curves


__all__ = ["StepEvent", "Callback", "Curves", "fit", "batches", "copy_batches", "gather_batches",
           "steps_per_epoch", "CHECK_EVERY",
           "is_diverged", "copy_losses", "model_losses", "copy_accuracies", "accuracy", "EVAL_CHUNK"]
