r"""``K`` candidates trained together: one batched model with per-copy weights and seeds.

Copy ``k`` starts from the weights of its seed and sees the batches of its seed; every copy has
its own parameters (a :class:`BatchedSequential`). The loss is :math:`\sum_k \bar L_k` (the sum
over copies of each copy's mean loss), so each copy's gradient is its own; every optimizer here
is elementwise, so one optimizer over the stacked tensors steps each copy as its own optimizer
would (at its own learning rate: ``PerCopyLR``). A copy that diverges is masked out and the
others go on (see the training loop).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Sequence

import torch

import metabp
from metabp import BFunction, Derivative, PerSite, activation_of
from metabp.exceptions import ConfigError
from metabp.targets._args import (
    check_bfn,
    check_callbacks,
    check_data_dir,
    check_device,
    check_flag,
    check_lrs,
    check_seeds,
    check_spec,
)
from metabp.targets._batched import BatchedSequential
from metabp.targets._loop import Callback
from metabp.targets._spec import TargetSpec, build_model, load_data
from metabp.targets._threads import num_threads, resolve_threads
from metabp.targets._train import Run, on_device, train, train_copies


def _distinct(bfns: Sequence[BFunction | PerSite | None]) -> list[BFunction | PerSite | None]:
    """``bfns`` with each repeat of a b-function object replaced by a copy of it (a candidate on
    several seeds, one g at two sites of a :class:`PerSite`): a compiled graph then never gets one
    table tensor as two of its inputs, which torch.compile would guard on and compile again for
    each new pattern of repeats."""
    seen: set[int] = set()

    def fresh(g: BFunction) -> BFunction:
        g = copy.deepcopy(g) if id(g) in seen else g
        seen.add(id(g))
        return g

    out: list[BFunction | PerSite | None] = []
    for g in bfns:
        if isinstance(g, PerSite):
            out.append(PerSite({site: fresh(m) for site, m in g.items()}, meta=g.meta))
        else:
            out.append(None if g is None else fresh(g))
    return out


def batched_model(spec: TargetSpec, bfns: Sequence[BFunction | PerSite | None], where: str | None,
                  seeds: Sequence[int], device: str | torch.device = "cpu") -> BatchedSequential:
    """The ``K`` copies of ``spec``'s network, copy ``k`` with the weights of ``seeds[k]`` and
    backpropagating ``bfns[k]`` (``None``: the exact derivative) at ``where``; a :class:`PerSite`
    copy backprops its own g at each of its sites and the exact derivative at the others."""
    models = {s: build_model(spec, s).to(device) for s in dict.fromkeys(seeds)}
    template = models[seeds[0]]
    names = metabp.activations(template, spec.where if where is None else where)
    per_copy = [g.resolve(template) if isinstance(g, PerSite) else dict.fromkeys(names, g)
                for g in _distinct(bfns)]
    sites = {}
    for name, module in template.named_modules():
        if any(name in chosen for chosen in per_copy):
            act = activation_of(module)
            exact = Derivative(act.name, **act.kwargs)
            sites[name] = metabp.stack([exact if chosen.get(name) is None else chosen[name]
                                        for chosen in per_copy])
    return BatchedSequential([models[s] for s in seeds], sites, len(spec.in_shape))


def train_many(spec: TargetSpec, bfns: Sequence[BFunction | PerSite | None], where: str | None = None,
               seed: int | Sequence[int] = 0, *, lr: float | Sequence[float] | None = None,
               device: str | torch.device = "cpu", progress: bool = False,
               data_dir: str | os.PathLike | None = None, threads: int | str | None = "auto",
               compile: bool = False, callbacks: Sequence[Callback] = ()) -> list[Run]:
    """Train ``K = len(bfns)`` candidates on target ``spec`` at once; one :class:`Run` each.

    Equivalent to ``[train(replace(spec, lr=a), g, where, s) for g, s, a in zip(bfns, seeds, lrs)]``
    (the same initial weights, data order, optimizer and learning rate per copy), several times
    faster: on the CPU, for a target of ``Linear`` layers, each copy's step losses are its
    ``train`` run's bit for bit; convolutional targets (grouped convolutions) and other devices
    agree up to float rounding. ``seed`` is one int for every copy or a sequence of ints, one per
    copy; ``lr`` likewise (``None``: ``spec.lr``; finite and > 0): ``train_many(spec, [g, g, h, h],
    seed=[0, 1, 0, 1], lr=[0.01, 0.01, 0.1, 0.1])`` scores two candidates, each at its own lr, on
    two seeds each (different lrs step through :class:`~metabp.targets._optim.PerCopyLR`). ``None``
    in ``bfns`` means plain backprop for that copy. Targets that cannot be batched (a ``feedback``
    mode) fall back to sequential ``train`` calls. A :class:`~metabp.PerSite` copy backprops its own
    g at each of its sites (and the exact derivative at the other sites ``where`` selects). The
    other arguments are as for :func:`train`;
    callbacks see the batched model (parameters ``K x ...``) and, when the seeds differ, per-copy
    batches.

    Each Run's ``seconds`` is the batched run's wall time divided by ``K``.
    """
    spec = check_spec(spec)
    bfns = [check_bfn(g, f"bfns[{i}]") for i, g in enumerate(bfns)]
    if not bfns:
        raise ConfigError("train_many(bfns=[]): needs at least one b-function (None for plain backprop)")
    seeds, dev, callbacks = check_seeds(seed, len(bfns)), check_device(device), check_callbacks(callbacks)
    lrs = check_lrs(lr, len(bfns), spec.lr)
    progress, compile = check_flag(progress, "progress"), check_flag(compile, "compile")
    data_dir = check_data_dir(data_dir)
    if spec.feedback is not None:
        return [train(dataclasses.replace(spec, lr=a), g, None if isinstance(g, PerSite) else where, s,
                      device=dev, progress=progress,
                      data_dir=data_dir, threads=threads, compile=compile, callbacks=callbacks)
                for g, s, a in zip(bfns, seeds, lrs, strict=True)]
    data = on_device(load_data(spec, data_dir), dev)
    with num_threads(resolve_threads(threads, spec, dev)):
        start = time.perf_counter()
        net = batched_model(spec, bfns, where, seeds, dev)
        return train_copies(spec, data, net, seeds, start=start, device=dev, progress=progress,
                            compile=compile, callbacks=callbacks, lrs=lrs)


__all__ = ["train_many", "batched_model", "BatchedSequential"]
