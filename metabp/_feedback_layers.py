r"""How a feedback layer backprops: its settings, and the autograd Functions of Linear and Conv2d.

:class:`FeedbackLinear` and :class:`FeedbackConv2d` compute the forward of their layer and, in
backward, send the error down through the matrix :meth:`Feedback.matrix` returns in place of
``W`` (``grad_x = grad_y B``); weight and bias gradients are autograd's own. The modes are
described in :mod:`metabp._feedback`, which patches layers with these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabp._function import FastFunction
from metabp.exceptions import PatchError


# ------------------------------------------------------------------- per-layer state
class _Slot:
    """The output error ``e`` of one forward pass, shared by the layers of a DFA group."""

    __slots__ = ("e",)

    def __init__(self) -> None:
        self.e: Tensor | None = None


@dataclass(eq=False)
class _DFAGroup:
    """Layers that share one output error; ``first`` opens a new slot at every forward pass."""

    first: nn.Module
    output: nn.Module
    output_dim: int
    current: _Slot | None = None


@dataclass(eq=False)
class Feedback:
    """How one layer backprops: its mode and the settings it was patched with."""

    mode: str
    seed: int
    scale: float | None
    sparsity: float
    bound: float = 0.0  # magnitude bound of random draws (brsf draws at every backward)
    group: _DFAGroup | None = None
    is_output: bool = False  # dfa: this layer's grad_output is the output error e
    generator: torch.Generator | None = field(default=None, repr=False)

    def matrix(self, weight: Tensor, B: Tensor | None, mask: Tensor | None) -> Tensor:
        """The matrix used in place of ``W`` in the backward pass (shape of ``W``; DFA: ``out x in``)."""
        mode = self.mode
        if mode == "bp":
            return weight
        if mode in ("fa", "dfa"):
            M = B
        elif mode == "sign":
            s = self.scale if self.scale is not None else weight.detach().square().mean().sqrt()
            M = torch.sign(weight) * s
        elif mode == "frsf":
            M = B * torch.sign(weight)
        else:  # brsf
            if self.generator is None or self.generator.device != weight.device:
                self.generator = torch.Generator(weight.device).manual_seed(self.seed)
            R = torch.empty_like(weight).uniform_(0.0, self.bound, generator=self.generator)
            M = R.mul_(torch.sign(weight))
        return M if mask is None else M * mask


# ------------------------------------------------------------------- autograd functions
def _output_error(grad: Tensor, slot: _Slot | None) -> Tensor:
    """DFA: the output error ``e`` of this forward pass, read from the shared slot."""
    e = slot.e if slot is not None else None
    if e is None:
        raise PatchError(
            "dfa: the output error has not reached this layer: the DFA output layer must be the "
            "last layer the loss depends on and must run its backward first (call the whole model, "
            "then loss.backward())"
        )
    if e.shape[:-1] != grad.shape[:-1]:
        raise PatchError(
            f"dfa: output error of shape {tuple(e.shape)} does not match this layer's batch "
            f"shape {tuple(grad.shape[:-1])}; DFA needs the network output to keep the batch dims"
        )
    return e


class FeedbackLinear(FastFunction):
    r"""``y = x W^T + b`` forward (``F.linear``); backward ``grad_x = grad_y B`` with ``B`` in place of ``W``.

    ``grad_W = grad_y^T x`` and ``grad_b = sum grad_y`` are autograd's own (bit for bit).
    Shapes: ``x`` is ``... x in``, ``W`` and ``B`` are ``out x in`` (DFA: ``B`` is
    ``output_dim x in`` and multiplies the network's output error instead of ``grad_y``).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None, B: Tensor | None, mask: Tensor | None,
                fb: Feedback, slot: _Slot | None) -> Tensor:
        return F.linear(x, weight, bias)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, weight, bias, B, mask, fb, slot = inputs
        ctx.save_for_backward(x, weight, B, mask)
        ctx.has_bias = bias is not None
        ctx.fb = fb
        ctx.slot = slot

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:
        x, weight, B, mask = ctx.saved_tensors
        fb: Feedback = ctx.fb
        if fb.is_output:
            ctx.slot.e = grad
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            M = fb.matrix(weight, B, mask)
            if fb.mode == "dfa" and not fb.is_output:
                grad_x = _output_error(grad, ctx.slot).matmul(M)
            else:
                grad_x = grad.matmul(M)
        g2 = grad.reshape(-1, grad.shape[-1])
        if ctx.needs_input_grad[1]:
            grad_w = g2.t().mm(x.reshape(-1, x.shape[-1]))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g2.sum(0)
        return grad_x, grad_w, grad_b, None, None, None, None


class FeedbackConv2d(FastFunction):
    r"""``F.conv2d`` forward; backward ``grad_x = conv2d_input(grad_y, B)`` with ``B`` in place of ``W``.

    ``grad_W`` and ``grad_b`` come from ``aten.convolution_backward`` with ``W``, as autograd's.
    Shapes: ``x`` is ``N x C_in x H x W``, ``W`` and ``B`` are ``C_out x C_in/groups x kH x kW``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None, B: Tensor | None, mask: Tensor | None,
                fb: Feedback, conv: tuple) -> Tensor:
        stride, padding, dilation, groups = conv
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, weight, bias, B, mask, fb, conv = inputs
        ctx.save_for_backward(x, weight, B, mask)
        ctx.bias_sizes = None if bias is None else list(bias.shape)
        ctx.fb = fb
        ctx.conv = conv

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:
        x, weight, B, mask = ctx.saved_tensors
        fb: Feedback = ctx.fb
        stride, padding, dilation, groups = ctx.conv
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = ctx.bias_sizes is not None and ctx.needs_input_grad[2]
        args = (list(stride), list(padding), list(dilation), False, [0, 0], groups)
        if fb.mode == "bp" and mask is None:  # one call, exactly autograd's
            grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, x, weight, ctx.bias_sizes, *args, (need_x, need_w, need_b))
        else:
            grad_x = None
            if need_x:
                grad_x = torch.ops.aten.convolution_backward(
                    grad, x, fb.matrix(weight, B, mask), None, *args, (True, False, False))[0]
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, x, weight, ctx.bias_sizes, *args, (False, need_w, need_b))
        return grad_x, grad_w, grad_b, None, None, None, None


def layers(model: nn.Module) -> dict[str, nn.Module]:
    """The Linear and Conv2d layers of ``model`` by qualified name, in module order."""
    if not isinstance(model, nn.Module):
        raise PatchError(f"model={model!r} is not a torch.nn.Module; pass the network whose "
                         "Linear/Conv2d layers get feedback")
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def feedbacks(model: nn.Module) -> dict[str, Feedback]:
    """The layers of ``model`` with a feedback mode, and their settings."""
    return {n: m._metabp_feedback for n, m in layers(model).items() if "_metabp_feedback" in m.__dict__}
