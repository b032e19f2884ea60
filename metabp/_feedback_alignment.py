"""Angles between what backprop sends down a feedback layer and what its feedback mode sends."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabp._feedback_layers import Feedback, feedbacks, layers
from metabp.exceptions import PatchError


@dataclass(frozen=True)
class LayerAlignment:
    """Angles in degrees (0 = aligned, 90 = orthogonal) for one layer.

    ``weight``: between ``W`` and the feedback matrix ``B`` used in its backward, i.e. between
    ``W^T`` and ``B^T`` (``None`` for ``dfa``, whose ``B`` has another shape; ``brsf``: one draw).
    ``delta``: between the backprop delta ``dC/dz`` at the layer's output and the delta the
    feedback mode delivers there, over the whole batch (``None`` without a batch).
    """

    mode: str
    weight: float | None
    delta: float | None


def _angle(a: Tensor, b: Tensor) -> float:
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return float("nan")
    return math.degrees(math.acos(max(-1.0, min(1.0, float(a @ b / (na * nb))))))


def alignment(model: nn.Module, batch: tuple[Tensor, Tensor] | None = None, *,
              loss_fn: Any = F.cross_entropy) -> dict[str, LayerAlignment]:
    r"""Angles between backprop and feedback for every layer that has a feedback mode.

    Args:
        model: a model patched with :func:`feedback`.
        batch: ``(x, y)``; when given, the delta angle compares
            :math:`\partial C/\partial z^l` from plain backprop with the delta the feedback
            mode applies, both at the current weights (parameter ``.grad`` is left untouched).
        loss_fn: ``loss_fn(model(x), y) -> scalar``.

    Returns:
        ``{layer name: LayerAlignment(mode, weight, delta)}``, angles in degrees.
    """
    found = feedbacks(model)
    if not found:
        raise PatchError("alignment(model): no layer of the model has a feedback mode; call "
                         "metabp.feedback(model, mode) first")
    mods = layers(model)
    weight_angles: dict[str, float | None] = {}
    for name, fb in found.items():
        m = mods[name]
        if fb.mode == "dfa" and not fb.is_output:
            weight_angles[name] = None
            continue
        if fb.mode == "brsf":  # one independent draw; training's own generator is not advanced
            fb = Feedback(fb.mode, fb.seed + 1, fb.scale, fb.sparsity, fb.bound)
        with torch.no_grad():
            M = fb.matrix(m.weight, m._buffers.get("feedback_B"), m._buffers.get("feedback_mask"))
        weight_angles[name] = _angle(m.weight, M)
    deltas: dict[str, float | None] = dict.fromkeys(found)
    if batch is not None:
        x, y = batch
        applied = _output_grads(model, {n: mods[n] for n in found}, x, y, loss_fn)
        saved = {n: mods[n].__dict__.pop("forward") for n in found}
        try:
            exact = _output_grads(model, {n: mods[n] for n in found}, x, y, loss_fn)
        finally:
            for n, f in saved.items():
                mods[n].forward = f
        deltas = {n: _angle(applied[n], exact[n]) for n in found}
    return {n: LayerAlignment(found[n].mode, weight_angles[n], deltas[n]) for n in found}


def _output_grads(model: nn.Module, mods: dict[str, nn.Module], x: Tensor, y: Tensor,
                  loss_fn: Any) -> dict[str, Tensor]:
    outs: dict[str, Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: outs.__setitem__(n, out))
             for n, m in mods.items()]
    try:
        with torch.enable_grad():
            loss = loss_fn(model(x), y)
            names = [n for n in mods if n in outs and outs[n].requires_grad]
            grads = torch.autograd.grad(loss, [outs[n] for n in names], allow_unused=True)
    finally:
        for h in hooks:
            h.remove()
    return {n: (g if g is not None else torch.zeros_like(outs[n])) for n, g in zip(names, grads, strict=True)}


__all__ = ["alignment", "LayerAlignment"]
