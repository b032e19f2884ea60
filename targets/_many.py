r"""``K`` candidates trained together: one batched model with per-copy weights.

Copy ``k`` of every parameter sits at index ``k`` of a ``K x ...`` tensor; copy ``k`` starts from
the weights of its seed and sees the batches of its seed. When every copy has the same seed (or
the target trains full batch) the input is shared (``B x ...``); otherwise it is per copy
(``K x B x ...``). Layers run batched:

- ``Linear``: ``Z = A W^T + b`` per copy, one ``baddbmm`` over ``K x B x in`` and ``K x in x out``
  (a shared input: one ``matmul`` against every copy's weights).
- ``Conv``: the copies' channels side by side (``B x K*C x ...``), one grouped convolution
  (``groups=K``); ``BatchNorm`` over ``K*C`` channels is per copy as it is.
- patched activations: ``metabp.replace_derivative(z, metabp.stack(bfns), activation)`` on
  ``z`` of shape ``K x B x ...``, so copy ``k`` backprops through ``bfns[k]`` (one gather for
  ``K`` MetaNets).

The loss is :math:`\sum_k \bar L_k` (the sum over copies of each copy's mean loss), so each copy's
gradient is its own; every optimizer here is elementwise, so one optimizer over the stacked
tensors steps each copy as its own optimizer would. A copy that diverges is masked out: its loss
leaves the sum, its weights and optimizer state are zeroed (so it stays finite and inert), and
the others go on.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import metabp
from metabp._activations import activation_of
from metabp._bfunctions import BFunction, Derivative
from metabp.exceptions import ConfigError
from metabp.targets._args import check_seeds
from metabp.targets._data import Data
from metabp.targets._optim import make_optimizer
from metabp.targets._spec import TargetSpec, build_model, load_data
from metabp.targets._train import (
    EVAL_CHUNK,
    Run,
    _progress,
    aulc,
    batches,
    is_diverged,
    num_threads,
    resolve_threads,
    steps_per_epoch,
    train,
    trainable_parameters,
)

POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveMaxPool1d,
         nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)

# Layouts of the activations flowing through the batched model:
SHARED = "shared"  # B x ...        the input, the same for every copy
COPIES = "copies"  # K x B x ...    copy on dim 0 (linear layers, b-functions)
GROUPED = "grouped"  # B x K*C x ...  copies' channels side by side (convolutions, batch norm)


class BatchedSequential:
    """``K`` copies of an ``nn.Sequential`` target, with stacked parameters ``K x ...``.

    Args:
        models: one network per copy, all of the same architecture (copy ``k`` starts from the
            weights of ``models[k]``; the same object may appear several times).
        sites: module name -> the stacked b-function its activation backprops.
    """

    def __init__(self, models: Sequence[nn.Sequential], sites: dict[str, BFunction]) -> None:
        model = models[0]
        self.model, self.K, self.sites = model, len(models), sites
        self.in_dim: int | None = None  # dims of one example; set by the caller for per-copy inputs
        self.params: dict[str, Tensor] = {}
        self.buffers: dict[str, Tensor] = {}
        named = [dict(m.named_parameters()) for m in models]
        for name in named[0]:
            self.params[name] = torch.stack([p[name].detach() for p in named]).contiguous()
        named = [dict(m.named_buffers()) for m in models]
        for name, b in named[0].items():
            if b.is_floating_point():  # BatchNorm running stats, flattened to K*C
                self.buffers[name] = torch.cat([bs[name].detach() for bs in named]).contiguous()
        for name, module in model.named_children():
            ok = isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d,
                                     nn.Flatten, nn.Identity) + POOLS) or activation_of(module)
            if not ok:
                raise ConfigError(f"train_many cannot batch module {name!r} ({type(module).__name__}); "
                                  "use train() for this target")

    def __call__(self, x: Tensor, training: bool = True) -> Tensor:
        """Logits ``K x B x C`` of every copy for the input ``x``: shared (``B x *in_shape``) or, when
        ``x.dim() == in_dim + 2``, one batch per copy (``K x B x *in_shape``)."""
        K, h = self.K, x
        layout = COPIES if self.in_dim is not None and x.dim() == self.in_dim + 2 else SHARED
        for name, m in self.model.named_children():
            p = self.params
            if isinstance(m, nn.Linear):
                w, b = p[f"{name}.weight"], p.get(f"{name}.bias")
                if layout == GROUPED:
                    raise ConfigError(f"{name}: a Linear layer right after a convolution needs a Flatten")
                if layout == SHARED:
                    h = torch.matmul(h, w.transpose(1, 2))  # (B, in) @ (K, in, out) -> (K, B, out)
                    h = h if b is None else h + b.unsqueeze(1)
                elif b is None:
                    h = torch.bmm(h, w.transpose(1, 2))
                else:
                    h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
                layout = COPIES
            elif isinstance(m, (nn.Conv1d, nn.Conv2d)):
                conv = F.conv1d if isinstance(m, nn.Conv1d) else F.conv2d
                w, b = p[f"{name}.weight"], p.get(f"{name}.bias")
                h, layout = self._grouped(h, layout)
                groups = 1 if layout == SHARED else K  # shared input: every copy's filters at once
                h = conv(h, w.reshape(-1, *w.shape[2:]), None if b is None else b.reshape(-1),
                         m.stride, m.padding, m.dilation, groups)
                layout = GROUPED
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                h, layout = self._grouped(h, layout)
                h = F.batch_norm(h, self.buffers[f"{name}.running_mean"], self.buffers[f"{name}.running_var"],
                                 p[f"{name}.weight"].reshape(-1), p[f"{name}.bias"].reshape(-1),
                                 training, m.momentum, m.eps)
            elif isinstance(m, nn.Flatten):
                if layout == SHARED:
                    h = h.flatten(1)
                elif layout == COPIES:
                    h = h.reshape(K, h.shape[1], -1)
                else:
                    h, layout = h.reshape(h.shape[0], K, -1).transpose(0, 1), COPIES
            elif isinstance(m, POOLS):
                if layout == COPIES:
                    h = m(h.reshape(K * h.shape[1], *h.shape[2:])).reshape(K, h.shape[1], *m(h[0]).shape[1:])
                else:
                    h = m(h)
            elif isinstance(m, nn.Identity):
                pass
            else:  # activation
                act = activation_of(m)
                if name in self.sites:
                    h, layout = self._copies(h, layout)
                    h = metabp.replace_derivative(h, self.sites[name], act)
                else:
                    h = act.forward(h)
        if layout != COPIES:
            h, layout = self._copies(h, layout)
        return h

    def _grouped(self, h: Tensor, layout: str) -> tuple[Tensor, str]:
        if layout == COPIES:  # (K, B, C, ...) -> (B, K*C, ...)
            return h.transpose(0, 1).reshape(h.shape[1], -1, *h.shape[3:]), GROUPED
        return h, layout

    def _copies(self, h: Tensor, layout: str) -> tuple[Tensor, str]:
        if layout == GROUPED:  # (B, K*C, ...) -> (K, B, C, ...), a view
            return h.reshape(h.shape[0], self.K, -1, *h.shape[2:]).transpose(0, 1), COPIES
        if layout == SHARED:
            return h.expand(self.K, *h.shape), COPIES
        return h, layout


def train_many(spec: TargetSpec, bfns: Sequence[BFunction | None], where: str | None = None,
               seed: int | Sequence[int] = 0, *, device: str | torch.device = "cpu", progress: bool = False,
               data_dir: str | os.PathLike | None = None, threads: int | str | None = "auto") -> list[Run]:
    """Train ``K = len(bfns)`` candidates on target ``spec`` at once; one :class:`Run` each.

    Equivalent to ``[train(spec, g, where, s) for g, s in zip(bfns, seeds)]`` up to float rounding
    (the same initial weights, data order and optimizer per copy), several times faster. ``seed``
    is one int for every copy or a sequence of ints, one per copy: ``train_many(spec, [g, g, h, h],
    seed=[0, 1, 0, 1])`` scores two candidates on two seeds each. ``None`` in ``bfns`` means plain
    backprop for that copy. Targets that cannot be batched (a ``feedback`` mode) fall back to
    sequential ``train`` calls. The other arguments are as for :func:`train`.

    Each Run's ``seconds`` is the batched run's wall time divided by ``K``.
    """
    if not isinstance(spec, TargetSpec):
        raise ConfigError(f"spec={spec!r} is not a TargetSpec; build one with get_target(name)")
    bfns = list(bfns)
    if not bfns:
        raise ConfigError("train_many(bfns=[]): needs at least one b-function (None for plain backprop)")
    for i, g in enumerate(bfns):
        if g is not None and not isinstance(g, BFunction):
            raise ConfigError(f"bfns[{i}]={g!r} is not a b-function (MetaNet, Derivative, Scaled) or None")
    seeds = check_seeds(seed, len(bfns))
    where = spec.where if where is None else where
    if spec.feedback is not None:
        return [train(spec, g, where, s, device=device, progress=progress, data_dir=data_dir,
                      threads=threads) for g, s in zip(bfns, seeds, strict=True)]
    data = load_data(spec, data_dir).to(device)
    with num_threads(resolve_threads(threads, spec, device)):
        return _train_many(spec, data, bfns, where, seeds, torch.device(device), progress)


def copy_batches(n: int, batch_size: int | None, epochs: int, seeds: list[int]) -> Iterator[list[Tensor]]:
    """Per epoch, its mini-batches' indices: ``B`` when every copy sees the same batch (one seed, or
    full batch), else ``K x B`` (row ``k``: :func:`batches` of ``seeds[k]``)."""
    if len(set(seeds)) == 1 or steps_per_epoch(n, batch_size) == 1:
        yield from batches(n, batch_size, epochs, seeds[0])
        return
    distinct = list(dict.fromkeys(seeds))
    rows = [distinct.index(s) for s in seeds]
    for epoch in zip(*(batches(n, batch_size, epochs, s) for s in distinct), strict=True):
        yield [torch.stack(step)[rows] for step in zip(*epoch, strict=True)]


def _zero_copies(dead: list[int], params: list[Tensor], opt: torch.optim.Optimizer) -> None:
    """Make the copies ``dead`` inert: zero their weights and their optimizer state."""
    with torch.no_grad():
        for p in params:
            p[dead] = 0.0
            if p.grad is not None:
                p.grad[dead] = 0.0
            for value in opt.state.get(p, {}).values():
                if torch.is_tensor(value) and value.shape[:1] == p.shape[:1] and value.dim() == p.dim():
                    value[dead] = 0.0


def _train_many(spec: TargetSpec, data: Data, bfns: list[BFunction | None], where: str, seeds: list[int],
                device: torch.device, progress: bool) -> list[Run]:
    start = time.perf_counter()
    K = len(bfns)
    models = {s: build_model(spec, s).to(device) for s in dict.fromkeys(seeds)}
    model = models[seeds[0]]
    act_names = metabp.patch(model, Derivative(spec.activation), where)  # resolves `where` once
    metabp.unpatch(model)
    batch_act = {n: activation_of(m) for n, m in model.named_modules() if n in act_names}
    sites = {}
    for name, act in batch_act.items():
        own = [g if g is not None else Derivative(act.name, **act.kwargs) for g in bfns]
        sites[name] = metabp.stack(own)
    net = BatchedSequential([models[s] for s in seeds], sites)
    net.in_dim = len(spec.in_shape)
    params = trainable_parameters(net.params.items(), spec.trainable)
    opt = make_optimizer(spec.optimizer, params, spec.lr)

    n = len(data.y_train)
    total = spec.epochs * steps_per_epoch(n, spec.batch_size)
    alive = torch.ones(K, dtype=torch.bool)
    curves: list[list[float]] = [[] for _ in range(K)]
    epochs: list[list[float]] = [[] for _ in range(K)]
    bar = _progress(spec.epochs, progress, f"{spec.name} x{K}")
    for epoch_batches in copy_batches(n, spec.batch_size, spec.epochs, seeds):
        first = [len(c) for c in curves]
        for idx in epoch_batches:
            idx = idx.to(device)
            x, y = data.x_train[idx], data.y_train[idx]
            losses = _losses(net, x, y)
            values = losses.tolist()
            newly = []
            for k in alive.nonzero().flatten().tolist():
                curves[k].append(values[k])
                if is_diverged(values[k], spec.max_loss):
                    newly.append(k)
            if newly:
                alive[newly] = False
                _zero_copies((~alive).nonzero().flatten().tolist(), params, opt)
                if not alive.any():
                    break
                losses = _losses(net, x, y)  # again, so no NaN reaches the backward of the dead
            opt.zero_grad(set_to_none=True)
            losses[alive.to(device)].sum().backward()
            opt.step()
            if not alive.all():
                _zero_copies((~alive).nonzero().flatten().tolist(), params, opt)
        if not alive.any():
            break
        for k in alive.nonzero().flatten().tolist():
            epochs[k].append(math.fsum(curves[k][first[k]:]) / (len(curves[k]) - first[k]))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(alive=int(alive.sum()))
    if bar is not None:
        bar.close()
    accs = _accuracies(net, data.x_test, data.y_test) if alive.any() else [float("nan")] * K
    seconds = (time.perf_counter() - start) / K
    runs = []
    for k in range(K):
        diverged = not bool(alive[k])
        score = aulc(curves[k], diverged=diverged, max_loss=spec.max_loss, total_steps=total)
        runs.append(Run(curves[k], epochs[k], score, float("nan") if diverged else accs[k], diverged,
                        seconds))
    return runs


def _losses(net: BatchedSequential, x: Tensor, y: Tensor) -> Tensor:
    """Each copy's mean cross-entropy, ``K``."""
    logits = net(x)  # (K, B, C)
    K, B, C = logits.shape
    y = y.reshape(K * B) if y.dim() == 2 else y.repeat(K)  # per-copy labels, or shared
    return F.cross_entropy(logits.reshape(K * B, C), y, reduction="none").view(K, B).mean(1)


@torch.no_grad()
def _accuracies(net: BatchedSequential, x: Tensor, y: Tensor) -> list[float]:
    right = torch.zeros(net.K, dtype=torch.long, device=x.device)
    for xc, yc in zip(x.split(EVAL_CHUNK), y.split(EVAL_CHUNK), strict=True):
        right += (net(xc, training=False).argmax(-1) == yc).sum(1)
    return (right.double() / max(len(y), 1)).tolist()


__all__ = ["train_many", "BatchedSequential"]
