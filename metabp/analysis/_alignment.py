r"""Gradient alignment: how close the gradient a patched model applies is to the true gradient.

For a model whose backward uses b-functions ``g`` in place of :math:`\sigma'`, and one batch,
let :math:`\tilde\nabla_l` be the gradient of layer ``l``'s parameters that backward actually
produces (patched) and :math:`\nabla_l` the true gradient of the same loss at the same weights
(unpatched). Their alignment is

.. math:: \cos_l = \frac{\langle \tilde\nabla_l, \nabla_l \rangle}{\|\tilde\nabla_l\|\,\|\nabla_l\|},

1 when ``g`` only rescales the gradient (e.g. ``Scaled(c)``, ``c > 0``), 0 when the applied step
is orthogonal to descent. Positive cosines over training are the paper's "evidence of true
gradient information" (Fig. 1b): the applied step stays a descent direction.

:func:`gradient_alignment` computes both gradients on one batch by running forward and backward
twice: once as patched, once with the patches removed (the RNG state is replayed, so dropout masks
agree), then the patches are put back and the *applied* gradient is left in ``.grad`` for the
optimizer. :func:`alignment_run` observes a ``metabp.targets.train`` run through its step callback:
at each step the applied gradient is already in ``.grad`` and the true one is computed on the same
batch with the patches lifted (buffers and RNG state restored afterwards, ``.grad`` untouched), so
the run is exactly ``train``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from metabp import BFunction, PerSite, is_per_site, patch, patched, unpatch
from metabp.exceptions import ConfigError


def _layer(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def _grads(model: nn.Module, loss_fn: Callable[[nn.Module], Tensor], rng: torch.Tensor) -> tuple[float, dict]:
    torch.random.set_rng_state(rng)
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def cosine_by_layer(applied: Mapping[str, Tensor], true: Mapping[str, Tensor]) -> dict[str, float]:
    """Cosine between two gradients, per layer (parameters grouped by module) and ``"all"``.

    Args:
        applied, true: parameter name -> gradient tensor (same names, same shapes).

    Returns:
        layer name (``"fc2"`` for ``fc2.weight`` and ``fc2.bias``) -> cosine, and ``"all"`` over
        every parameter; NaN where either gradient is zero.
    """
    groups: dict[str, list[str]] = {}
    for name in true:
        groups.setdefault(_layer(name), []).append(name)
    groups["all"] = list(true)
    out = {}
    for layer, names in groups.items():
        a = torch.cat([applied[n].flatten().double() for n in names])
        b = torch.cat([true[n].flatten().double() for n in names])
        den = a.norm() * b.norm()
        out[layer] = float(a.dot(b) / den) if den > 0 else float("nan")
    return out


def gradient_alignment(
    model: nn.Module, loss_fn: Callable[[nn.Module], Tensor]
) -> tuple[float, dict[str, float]]:
    """One batch: the cosine per layer between the applied (patched) and the true gradient.

    Args:
        model: a model, patched with :func:`metabp.patch` (unpatched gives cosines of 1).
        loss_fn: ``loss_fn(model) -> scalar loss`` on a fixed batch; called twice.

    Returns:
        ``(loss, cosines)``: the loss and ``cosine_by_layer(applied, true)``. Afterwards the
        model is patched as before and ``.grad`` holds the applied gradient, ready for a step.

    Example:
        >>> import metabp
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
        >>> _ = metabp.patch(net, metabp.Scaled(2.0))
        >>> x = torch.randn(8, 3)
        >>> loss, cos = gradient_alignment(net, lambda m: m(x).pow(2).mean())
        >>> round(cos["0"], 6), round(cos["2"], 6)
        (1.0, 1.0)
    """
    rng = torch.random.get_rng_state()
    with _unpatched(model):
        _, true = _grads(model, loss_fn, rng)
    loss, applied = _grads(model, loss_fn, rng)  # patched again: .grad is the applied gradient
    return loss, cosine_by_layer(applied, true)


@contextmanager
def _unpatched(model: nn.Module) -> Iterator[None]:
    """Inside the block ``model`` runs with its patches lifted; they are put back on exit."""
    patches = patched(model)
    for name in patches:
        unpatch(model, where=name)
    try:
        yield
    finally:
        for name, bfn in patches.items():
            patch(model, bfn, where=name)


@dataclass
class AlignmentTrace:
    """Per-step training loss and per-layer cosines (``steps`` values each) of one run."""

    losses: list[float] = field(default_factory=list)
    cosines: dict[str, list[float]] = field(default_factory=dict)

    def summary(self) -> dict[str, tuple[float, float, float]]:
        """layer -> (mean, min, last) cosine over the run, ignoring NaN steps."""
        out = {}
        for k, v in self.cosines.items():
            t = torch.tensor(v, dtype=torch.float64)
            t = t[~torch.isnan(t)]
            out[k] = (float(t.mean()), float(t.min()), float(t[-1])) if t.numel() else (float("nan"),) * 3
        return out


def true_gradients(model: nn.Module, loss_fn: Callable[[nn.Module], Tensor],
                   names: Iterable[str]) -> dict[str, Tensor]:
    """The unpatched gradient of ``loss_fn(model)`` for the parameters ``names``, leaving the model
    as it was: patches put back, ``.grad``, buffers (e.g. batch-norm statistics) and the RNG state
    unchanged."""
    params = dict(model.named_parameters())
    names = [n for n in names if n in params]
    buffers = [b.detach().clone() for b in model.buffers()]
    rng = torch.random.get_rng_state()
    try:
        with _unpatched(model):
            grads = torch.autograd.grad(loss_fn(model), [params[n] for n in names], allow_unused=True)
    finally:
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers, strict=True):
                b.copy_(saved)
        torch.random.set_rng_state(rng)
    return {n: torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, grads, strict=True)}


def alignment_run(
    spec: Any,
    bfn: BFunction | PerSite,
    *,
    where: str | None = None,
    seed: int = 0,
    device: str = "cpu",
    data_dir: str | None = None,
    progress: bool = False,
) -> AlignmentTrace:
    """Train target ``spec`` with ``bfn`` patched at ``where`` (a ``PerSite``: at its own sites,
    ``where`` None) and record the gradient alignment.

    The run is ``metabp.targets.train(spec, bfn, where, seed)`` itself, observed through a step
    callback, so ``trace.losses`` is that run's ``step_losses``; at each step the callback
    compares the applied gradient (in ``.grad``) with the true one on the same batch
    (:func:`true_gradients`). A diverged step records a loss but no cosines.
    """
    import torch.nn.functional as F

    from metabp.targets import train

    if not (isinstance(bfn, BFunction) or is_per_site(bfn)):
        raise ConfigError(f"bfn={bfn!r} is not a b-function (MetaNet, Derivative, Scaled) or a PerSite")
    trace = AlignmentTrace()

    def record(event: Any) -> None:
        applied = {n: p.grad for n, p in event.model.named_parameters() if p.grad is not None}
        true = true_gradients(event.model, lambda m: F.cross_entropy(m(event.x), event.y), applied)
        for k, c in cosine_by_layer(applied, true).items():
            trace.cosines.setdefault(k, []).append(c)

    run = train(spec, bfn, where, seed, device=device, data_dir=data_dir, progress=progress,
                callbacks=[record])
    trace.losses = list(run.step_losses)
    return trace
