r"""Feedback b-functions: replace the weight transpose in the backward pass of Linear and Conv2d.

Backprop sends the error of layer ``l+1`` down through the transpose of its forward weights,

.. math:: \delta^l = \left((W^{l+1})^T \delta^{l+1}\right) \odot \sigma'(z^l),

and the feedback b-functions swap :math:`W^{l+1}` for a feedback matrix :math:`B^{l+1}` of the
same shape (paper eq. 5: FA is a b-function change, an implicit per-unit learning rate
:math:`B\delta / W^T\delta`). The weight and bias gradients
:math:`\partial C/\partial W^l = \delta^l (a^{l-1})^T` are computed exactly as autograd does.

Modes (Lillicrap et al. 2016; Liao, Leibo & Poggio 2016; Moskovitz et al. 2018; Nøkland 2016):

========  ==========================================================================
``bp``    :math:`B = W` live: plain backprop through the custom backward, bit for bit
``fa``    feedback alignment, :math:`B` fixed random, drawn once (seeded)
``sign``  sign symmetry (uSF), :math:`B = s\,\mathrm{sign}(W)` live, ``s = rms(W)`` unless ``scale``
``frsf``  :math:`B = |R| \odot \mathrm{sign}(W)`, ``R`` fixed random
``brsf``  :math:`B = |R_t| \odot \mathrm{sign}(W)`, ``R_t`` redrawn at every backward pass
``dfa``   direct feedback alignment: every selected layer gets the *output* error ``e``
          through its own fixed ``B^l`` (``output_dim x in_features``): grad_input = ``e B^l``
========  ==========================================================================

Random magnitudes are drawn ``U(-a, a)`` with ``a = sqrt(3) * std(W)`` at patch time (so ``B``
has the scale of the forward weights, whatever their init), times ``scale``; ``dfa`` uses
``a = scale / sqrt(output_dim)``. ``sparsity=p`` removes exactly ``round(p * B.numel())``
feedback connections (a fixed random mask).

A patched layer gets an instance ``forward`` and these buffers (in ``state_dict``, never
trained): ``feedback_B`` (``fa``, ``frsf`` magnitudes, ``dfa``), ``feedback_mask`` (when
``sparsity > 0``) and ``feedback_seed`` (the layer's seed). Activation b-functions
(``metabp.patch``) act on activation modules and combine freely with these.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabp._function import FastFunction
from metabp._select import Selector, select
from metabp.exceptions import ConfigError, PatchError

MODES = ("bp", "fa", "sign", "frsf", "brsf", "dfa")
ALIASES = {"usf": "sign", "backprop": "bp"}
_BUFFERS = ("feedback_B", "feedback_mask", "feedback_seed")
_SEED_STRIDE = 1_000_003  # layer k of a model gets seed + k * stride: seeds of distinct layers never meet


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


# ------------------------------------------------------------------- patched forwards
def _linear_forward(self: nn.Linear, x: Tensor) -> Tensor:
    fb: Feedback = self._metabp_feedback
    slot = None
    if fb.group is not None:
        if self is fb.group.first or fb.group.current is None:
            fb.group.current = _Slot()
        slot = fb.group.current
    if not torch.is_grad_enabled():
        return F.linear(x, self.weight, self.bias)
    return FeedbackLinear.apply(x, self.weight, self.bias, self._buffers.get("feedback_B"),
                                self._buffers.get("feedback_mask"), fb, slot)


def _conv_padding(m: nn.Conv2d) -> tuple[int, int]:
    if m.padding == "valid":
        return (0, 0)
    if m.padding == "same":
        total = [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size, strict=True)]
        if any(t % 2 for t in total):
            raise PatchError(
                f"Conv2d(padding='same') with kernel_size={m.kernel_size}, dilation={m.dilation} pads "
                "unevenly, which feedback does not support; use an odd kernel or explicit padding"
            )
        return (total[0] // 2, total[1] // 2)
    return tuple(m.padding)


def _conv_forward(self: nn.Conv2d, x: Tensor) -> Tensor:
    fb: Feedback = self._metabp_feedback
    padding = _conv_padding(self)
    if self.padding_mode != "zeros":  # as nn.Conv2d._conv_forward: pad first, convolve unpadded
        x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
        padding = (0, 0)
    conv = (tuple(self.stride), padding, tuple(self.dilation), self.groups)
    if not torch.is_grad_enabled():
        return F.conv2d(x, self.weight, self.bias, conv[0], conv[1], conv[2], conv[3])
    return FeedbackConv2d.apply(x, self.weight, self.bias, self._buffers.get("feedback_B"),
                                self._buffers.get("feedback_mask"), fb, conv)


def _extra_repr(self: nn.Module) -> str:
    fb: Feedback = self._metabp_feedback
    base = type(self).extra_repr(self)
    extra = f"feedback={fb.mode!r}, seed={fb.seed}"
    if fb.sparsity:
        extra += f", sparsity={fb.sparsity}"
    return f"{base}, {extra}" if base else extra


# ------------------------------------------------------------------- selection
def layers(model: nn.Module) -> dict[str, nn.Module]:
    """The Linear and Conv2d layers of ``model`` by qualified name, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def _select(model: nn.Module, where: Selector) -> dict[str, nn.Module]:
    found = layers(model)
    if not found:
        raise PatchError(
            f"{type(model).__name__} has no nn.Linear or nn.Conv2d layers; feedback modes replace "
            "the weight transpose of those modules (functional F.linear calls cannot be patched)"
        )
    return select(found, where, noun="Linear/Conv2d layer", plural="Linear/Conv2d layers")


def _fan_in(weight: Tensor) -> int:
    return int(weight[0].numel())


def _uniform(shape: tuple, bound: float, gen: torch.Generator) -> Tensor:
    return torch.empty(shape, dtype=torch.float64).uniform_(-bound, bound, generator=gen)


# ------------------------------------------------------------------- public API
def feedback(model: nn.Module, mode: str, where: Selector = "*", *, seed: int = 0,
             scale: float | None = None, sparsity: float = 0.0, output_dim: int | None = None,
             output: str | None = None) -> list[str]:
    r"""Make the selected Linear/Conv2d layers backprop through a feedback matrix ``B`` instead of ``W^T``.

    :math:`\delta^l = \left(B^{l+1}\delta^{l+1}\right) \odot \sigma'(z^l)` (``dfa``:
    :math:`\delta^l = (B^l e) \odot \sigma'(z^l)` with ``e`` the output error). Forward is
    unchanged and weight/bias gradients are autograd's, given the delta each layer receives.

    Args:
        model: any ``nn.Module`` with ``nn.Linear`` / ``nn.Conv2d`` layers.
        mode: ``"bp"``, ``"fa"``, ``"sign"`` (alias ``"usf"``), ``"frsf"``, ``"brsf"`` or ``"dfa"``.
        where: a layer name, a glob (``"fc*"``), an index among the Linear/Conv2d layers (``-1``
            is the last), or a list of these. Default: every Linear/Conv2d layer.
        seed: base seed; layer ``k`` (its index among all Linear/Conv2d layers) draws with
            ``seed + k * 1000003`` from its own generator (the global RNG is untouched), and
            records it in the buffer ``feedback_seed``.
        scale: multiplies the random magnitudes (default 1); for ``sign`` the fixed magnitude
            ``s`` of ``B = s sign(W)`` (default: ``rms(W)``, recomputed every step).
        sparsity: fraction in ``[0, 1)`` of each ``B``'s connections removed (fixed mask).
        output_dim: ``dfa`` only: size of the output error, default the output layer's
            ``out_features``.
        output: ``dfa`` only: name of the output layer (default: the last selected layer).

    Returns:
        The names of the patched layers.

    DFA constraints: selected layers must be ``nn.Linear`` and run once each per forward pass,
    in module order; the output layer's output must be the network output the loss is taken on
    (softmax inside the loss), and the loss must depend on the hidden layers only through it.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> feedback(net, "fa")
        ['0', '2']
    """
    if not isinstance(mode, str) or ALIASES.get(mode, mode) not in MODES:
        raise ConfigError(f"mode={mode!r} is not a feedback mode; choose one of: {', '.join(MODES)}")
    mode = ALIASES.get(mode, mode)
    if not (isinstance(sparsity, (int, float)) and 0.0 <= sparsity < 1.0):
        raise ConfigError(f"sparsity={sparsity!r} must be a fraction in [0, 1) of feedback connections "
                          "to remove")
    if mode == "bp" and sparsity:
        raise ConfigError(f"sparsity={sparsity!r} with mode='bp': bp uses W itself; use mode='fa' or "
                          "'sign' for sparse feedback")
    if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ConfigError(f"scale={scale!r} must be a positive finite number (or None for the default)")
    if mode != "dfa" and (output_dim is not None or output is not None):
        raise ConfigError(f"output_dim={output_dim!r}, output={output!r} are for mode='dfa' only, "
                          f"not mode={mode!r}")
    index = {n: k for k, n in enumerate(layers(model))}
    selected = _select(model, where)
    group = None
    if mode == "dfa":
        group = _dfa_group(selected, output_dim, output)
    unfeedback(model, list(selected))
    for name, m in selected.items():
        w = m.weight
        layer_seed = seed + index[name] * _SEED_STRIDE
        gen = torch.Generator().manual_seed(layer_seed)
        std = float(w.detach().double().std()) if w.numel() > 1 else 0.0
        a = (math.sqrt(3.0) * std if std > 0 else 1.0 / math.sqrt(_fan_in(w))) * (scale or 1.0)
        fb = Feedback(mode, layer_seed, scale, float(sparsity), bound=a, group=group)
        B = None
        shape = tuple(w.shape)
        if mode == "fa":
            B = _uniform(shape, a, gen)
        elif mode == "frsf":
            B = _uniform(shape, a, gen).abs_()
        elif mode == "dfa":
            if m is group.output:
                B = _uniform(shape, a, gen)
                fb.is_output = True
            else:
                shape = (group.output_dim, m.in_features)
                B = _uniform(shape, (scale or 1.0) / math.sqrt(group.output_dim), gen)
        if B is not None:
            m.register_buffer("feedback_B", B.to(w.device, w.dtype))
        if sparsity:
            mask = torch.ones(math.prod(shape), dtype=torch.float64)
            mask[torch.randperm(mask.numel(), generator=gen)[: round(sparsity * mask.numel())]] = 0
            m.register_buffer("feedback_mask", mask.view(shape).to(w.device, w.dtype))
        m.register_buffer("feedback_seed", torch.tensor(layer_seed, dtype=torch.int64, device=w.device))
        m._metabp_feedback = fb
        fwd = _linear_forward if isinstance(m, nn.Linear) else _conv_forward
        if isinstance(m, nn.Conv2d):
            _conv_padding(m)  # reject uneven 'same' padding now, not at the first forward
        m.forward = types.MethodType(fwd, m)
        m.extra_repr = types.MethodType(_extra_repr, m)
    return list(selected)


def _dfa_group(selected: dict[str, nn.Module], output_dim: int | None, output: str | None) -> _DFAGroup:
    convs = [n for n, m in selected.items() if not isinstance(m, nn.Linear)]
    if convs:
        raise PatchError(
            f"mode='dfa' supports nn.Linear layers only, but where= selects Conv2d layers "
            f"{', '.join(convs)}; select the Linear layers (e.g. where=['fc1', 'fc2']) or use 'fa'"
        )
    names = list(selected)
    out_name = names[-1] if output is None else output
    if out_name not in selected:
        raise PatchError(f"output={output!r} is not among the selected layers ({', '.join(names)}); "
                         "name the layer that produces the network output")
    out = selected[out_name]
    dim = out.out_features if output_dim is None else output_dim
    if dim != out.out_features:
        raise ConfigError(
            f"output_dim={output_dim!r} but the output layer {out_name!r} has out_features="
            f"{out.out_features}; pass output_dim={out.out_features} or name the right layer with output="
        )
    if len(names) < 2:
        raise PatchError(f"mode='dfa' needs the output layer and at least one hidden layer; where= "
                         f"selected only {names}")
    return _DFAGroup(first=selected[names[0]], output=out, output_dim=dim)


def unfeedback(model: nn.Module, where: Selector = "*") -> list[str]:
    """Return the selected layers (default: all) to plain autograd and drop their feedback buffers."""
    done = []
    for name, m in _select(model, where).items():
        if "_metabp_feedback" in m.__dict__:
            for attr in ("forward", "extra_repr", "_metabp_feedback"):
                m.__dict__.pop(attr, None)
            for b in _BUFFERS:
                m._buffers.pop(b, None)
            done.append(name)
    return done


def feedbacks(model: nn.Module) -> dict[str, Feedback]:
    """The layers of ``model`` with a feedback mode, and their settings."""
    return {n: m._metabp_feedback for n, m in layers(model).items() if "_metabp_feedback" in m.__dict__}


# ------------------------------------------------------------------- alignment
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


__all__ = ["feedback", "unfeedback", "feedbacks", "alignment", "LayerAlignment", "Feedback",
           "FeedbackLinear", "FeedbackConv2d", "layers", "MODES"]
