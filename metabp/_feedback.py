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

``torch.compile(model, fullgraph=True)`` traces ``bp``, ``fa``, ``sign`` and ``frsf`` into one
graph; ``brsf`` (a draw from the layer's own generator in backward) and ``dfa`` (the output error
handed from one layer's backward to the others') break the graph, so compile those without
``fullgraph``.

A patched layer gets an instance ``forward`` and these buffers (in ``state_dict``, never
trained): ``feedback_B`` (``fa``, ``frsf`` magnitudes, ``dfa``), ``feedback_mask`` (when
``sparsity > 0``) and ``feedback_seed`` (the layer's seed). Activation b-functions
(``metabp.patch``) act on activation modules and combine freely with these.
"""

from __future__ import annotations

import math
import types

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabp._feedback_alignment import LayerAlignment, alignment
from metabp._feedback_layers import (
    Feedback,
    FeedbackConv2d,
    FeedbackLinear,
    _DFAGroup,
    _Slot,
    feedbacks,
    layers,
)
from metabp._select import Selector, select
from metabp.exceptions import ConfigError, PatchError

MODES = ("bp", "fa", "sign", "frsf", "brsf", "dfa")
ALIASES = {"usf": "sign", "backprop": "bp"}
_BUFFERS = ("feedback_B", "feedback_mask", "feedback_seed")
_SEED_STRIDE = 1_000_003  # layer k of a model gets seed + k * stride: seeds of distinct layers never meet


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
def _select(model: nn.Module, where: Selector) -> dict[str, nn.Module]:
    found = layers(model)
    if not found:
        raise PatchError(
            f"{type(model).__name__} has no nn.Linear or nn.Conv2d layers; feedback modes replace "
            "the weight transpose of those modules (functional F.linear calls cannot be patched)"
        )
    return select(found, where, noun="Linear/Conv2d layer", plural="Linear/Conv2d layers")


# ------------------------------------------------------------------- drawing B, one function per mode
def _uniform(shape: tuple, bound: float, gen: torch.Generator) -> Tensor:
    return torch.empty(shape, dtype=torch.float64).uniform_(-bound, bound, generator=gen)


def _draw_fa(m: nn.Module, fb: Feedback, gen: torch.Generator) -> Tensor:
    """``B ~ U(-a, a)``, the shape of ``W``."""
    return _uniform(tuple(m.weight.shape), fb.bound, gen)


def _draw_frsf(m: nn.Module, fb: Feedback, gen: torch.Generator) -> Tensor:
    """``|R|`` with ``R ~ U(-a, a)``: the fixed magnitudes of ``B = |R| sign(W)``."""
    return _uniform(tuple(m.weight.shape), fb.bound, gen).abs_()


def _draw_dfa(m: nn.Module, fb: Feedback, gen: torch.Generator) -> Tensor:
    """The output layer: ``B ~ U(-a, a)`` like ``fa``; a hidden layer: its own fixed
    ``B ~ U(-s, s)``, ``output_dim x in_features``, ``s = scale / sqrt(output_dim)``."""
    if m is fb.group.output:
        fb.is_output = True
        return _uniform(tuple(m.weight.shape), fb.bound, gen)
    dim = fb.group.output_dim
    return _uniform((dim, m.in_features), (fb.scale or 1.0) / math.sqrt(dim), gen)


# bp and sign read W at every backward; brsf redraws there (Feedback.matrix)
_DRAW = {"fa": _draw_fa, "frsf": _draw_frsf, "dfa": _draw_dfa}


def _bound(weight: Tensor, scale: float | None) -> float:
    """``a = sqrt(3) std(W) * scale``: ``U(-a, a)`` has the spread of ``W`` (``1/sqrt(fan_in)``
    for a constant or one-element ``W``)."""
    std = float(weight.detach().double().std()) if weight.numel() > 1 else 0.0
    a = math.sqrt(3.0) * std if std > 0 else 1.0 / math.sqrt(weight[0].numel())
    return a * (scale or 1.0)


def _mask(shape: tuple, sparsity: float, gen: torch.Generator) -> Tensor:
    """Ones with exactly ``round(sparsity * numel)`` zeros at random places."""
    mask = torch.ones(math.prod(shape), dtype=torch.float64)
    mask[torch.randperm(mask.numel(), generator=gen)[: round(sparsity * mask.numel())]] = 0
    return mask.view(shape)


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
    mode = _check_options(mode, seed, scale, sparsity, output_dim, output)
    index = {n: k for k, n in enumerate(layers(model))}
    selected = _select(model, where)
    group = _dfa_group(selected, output_dim, output) if mode == "dfa" else None
    unfeedback(model, list(selected))
    for name, m in selected.items():
        layer_seed = seed + index[name] * _SEED_STRIDE
        gen = torch.Generator().manual_seed(layer_seed)
        fb = Feedback(mode, layer_seed, scale, float(sparsity), bound=_bound(m.weight, scale), group=group)
        B = _DRAW[mode](m, fb, gen) if mode in _DRAW else None
        shape = tuple(m.weight.shape if B is None else B.shape)
        mask = _mask(shape, sparsity, gen) if sparsity else None
        _install(m, fb, B, mask)
    return list(selected)


def _check_options(mode: str, seed: int, scale: float | None, sparsity: float, output_dim: int | None,
                   output: str | None) -> str:
    """The canonical mode name; ConfigError for any option out of range."""
    if not isinstance(mode, str) or ALIASES.get(mode, mode) not in MODES:
        raise ConfigError(f"mode={mode!r} is not a feedback mode; choose one of: {', '.join(MODES)}")
    mode = ALIASES.get(mode, mode)
    if isinstance(seed, bool) or not isinstance(seed, int) or not abs(seed) < 2**62:
        raise ConfigError(f"seed={seed!r} must be an integer of magnitude below 2**62")
    if isinstance(sparsity, bool) or not (isinstance(sparsity, (int, float)) and 0.0 <= sparsity < 1.0):
        raise ConfigError(f"sparsity={sparsity!r} must be a fraction in [0, 1) of feedback connections "
                          "to remove")
    if mode == "bp" and sparsity:
        raise ConfigError(f"sparsity={sparsity!r} with mode='bp': bp uses W itself; use mode='fa' or "
                          "'sign' for sparse feedback")
    if scale is not None and (isinstance(scale, bool) or not (
            isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0)):
        raise ConfigError(f"scale={scale!r} must be a positive finite number (or None for the default)")
    if output is not None and not isinstance(output, str):
        raise ConfigError(f"output={output!r} must be the name of the output layer (a str) or None")
    if output_dim is not None and (isinstance(output_dim, bool) or not isinstance(output_dim, int)
                                   or output_dim < 1):
        raise ConfigError(f"output_dim={output_dim!r} must be a positive integer or None")
    if mode != "dfa" and (output_dim is not None or output is not None):
        raise ConfigError(f"output_dim={output_dim!r}, output={output!r} are for mode='dfa' only, "
                          f"not mode={mode!r}")
    return mode


def _install(m: nn.Module, fb: Feedback, B: Tensor | None, mask: Tensor | None) -> None:
    """Register the layer's feedback buffers and set its instance ``forward``."""
    w = m.weight
    if B is not None:
        m.register_buffer("feedback_B", B.to(w.device, w.dtype))
    if mask is not None:
        m.register_buffer("feedback_mask", mask.to(w.device, w.dtype))
    m.register_buffer("feedback_seed", torch.tensor(fb.seed, dtype=torch.int64, device=w.device))
    m._metabp_feedback = fb
    if isinstance(m, nn.Conv2d):
        _conv_padding(m)  # reject uneven 'same' padding now, not at the first forward
    m.forward = types.MethodType(_linear_forward if isinstance(m, nn.Linear) else _conv_forward, m)
    m.extra_repr = types.MethodType(_extra_repr, m)


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


__all__ = ["feedback", "unfeedback", "feedbacks", "alignment", "LayerAlignment", "Feedback",
           "FeedbackLinear", "FeedbackConv2d", "layers", "MODES"]
