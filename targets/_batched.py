r"""``K`` copies of an ``nn.Sequential`` target as one module with stacked parameters.

Copy ``k`` of every parameter sits at index ``k`` of a ``K x ...`` tensor (``named_parameters``
keeps the target's names: ``fc1.weight`` is ``K x out x in``). The input is shared (``B x ...``)
or one batch per copy (``K x B x ...``). Layers run batched:

- ``Linear``: ``Z = A W^T + b`` per copy, one ``baddbmm`` over ``K x B x in`` and ``K x in x out``
  (a shared input: one GEMM against every copy's weights side by side, ``B x K*out``).
- ``Conv``: the copies' channels side by side (``B x K*C x ...``), one grouped convolution
  (``groups=K``); ``BatchNorm`` over ``K*C`` channels is per copy as it is.
- patched activations: ``metabp.replace_derivative(z, metabp.stack(bfns), activation)`` on
  ``z`` of shape ``K x B x ...``, so copy ``k`` backprops through ``bfns[k]`` (one gather for
  ``K`` MetaNets).

The template's options carry over: its forward under autocast (``amp``), and channels-last conv
weights, stacked so that the grouped weight ``K*out x in x kh x kw`` is channels-last.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import metabp
from metabp import BFunction, activation_of
from metabp.exceptions import ConfigError
from metabp.targets._amp import amp_forward, channels_last_stack

POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveMaxPool1d,
         nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.Flatten, nn.Identity) + POOLS

# Layouts of the activations flowing through the batched model:
SHARED = "shared"  # B x ...        the input, the same for every copy
COPIES = "copies"  # K x B x ...    copy on dim 0 (linear layers, b-functions)
GROUPED = "grouped"  # B x K*C x ...  copies' channels side by side (convolutions, batch norm)


class BatchedSequential(nn.Module):
    """``K`` copies of an ``nn.Sequential`` target; ``forward(x)`` gives logits ``K x B x C``.

    Args:
        models: one network per copy, all of the same architecture (copy ``k`` starts from the
            weights of ``models[k]``; the same object may appear several times).
        sites: module name -> the stacked b-function its activation backprops.
        in_dim: dimensions of one example (``x`` with ``in_dim + 2`` dims is per copy).
    """

    def __init__(self, models: Sequence[nn.Sequential], sites: dict[str, BFunction], in_dim: int) -> None:
        super().__init__()
        self.K, self.sites, self.in_dim = len(models), sites, in_dim
        self.amp = getattr(models[0], "amp", None)
        self.layers = list(models[0].named_children())  # a list: the template is not a submodule
        for name, module in self.layers:
            if not (isinstance(module, LAYERS) or activation_of(module)):
                raise ConfigError(f"train_many cannot batch module {name!r} ({type(module).__name__}); "
                                  "use train() for this target")
            holder = _stacked([m.get_submodule(name) for m in models])
            if holder is not None:
                self.add_module(name, holder)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``K x B x C`` of every copy (float32 under ``amp``); ``x`` is ``B x *in_shape``
        or ``K x B x *in_shape``."""
        return amp_forward(self._forward, x, self.amp)

    def _forward(self, x: Tensor) -> Tensor:
        h, layout = x, (COPIES if x.dim() == self.in_dim + 2 else SHARED)
        for name, m in self.layers:
            if isinstance(m, nn.Linear):
                h, layout = self._linear(name, h, layout), COPIES
            elif isinstance(m, (nn.Conv1d, nn.Conv2d)):
                h, layout = self._conv(name, m, h, layout), GROUPED
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                h, layout = self._grouped(h, layout)
                own = getattr(self, name)
                h = F.batch_norm(h, own.running_mean, own.running_var, own.weight.reshape(-1),
                                 own.bias.reshape(-1), self.training, m.momentum, m.eps)
            elif isinstance(m, nn.Flatten):
                h, layout = self._flatten(h, layout)
            elif isinstance(m, POOLS):
                h = self._pool(m, h, layout)
            elif not isinstance(m, nn.Identity):  # activation
                act = activation_of(m)
                if name in self.sites:
                    h, layout = self._copies(h, layout)
                    h = metabp.replace_derivative(h, self.sites[name], act)
                else:
                    h = act.forward(h)
        return self._copies(h, layout)[0]

    def _linear(self, name: str, h: Tensor, layout: str) -> Tensor:
        own = getattr(self, name)
        w, b = own.weight, getattr(own, "bias", None)
        if layout == GROUPED:
            raise ConfigError(f"{name}: a Linear layer right after a convolution needs a Flatten")
        if layout == SHARED:  # one GEMM against every copy's weights: (B, in) @ (in, K*out)
            h = (h @ w.reshape(-1, w.shape[2]).t()).view(h.shape[0], self.K, -1).transpose(0, 1)
            return h if b is None else h + b.unsqueeze(1)
        if b is None:
            return torch.bmm(h, w.transpose(1, 2))
        return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))

    def _conv(self, name: str, m: nn.Module, h: Tensor, layout: str) -> Tensor:
        conv = F.conv1d if isinstance(m, nn.Conv1d) else F.conv2d
        own = getattr(self, name)
        w, b = own.weight, getattr(own, "bias", None)
        h, layout = self._grouped(h, layout)
        groups = 1 if layout == SHARED else self.K  # shared input: every copy's filters at once
        return conv(h, w.reshape(-1, *w.shape[2:]), None if b is None else b.reshape(-1),
                    m.stride, m.padding, m.dilation, groups)

    def _flatten(self, h: Tensor, layout: str) -> tuple[Tensor, str]:
        if layout == SHARED:
            return h.flatten(1), layout
        if layout == COPIES:
            return h.reshape(self.K, h.shape[1], -1), layout
        return h.reshape(h.shape[0], self.K, -1).transpose(0, 1), COPIES

    def _pool(self, m: nn.Module, h: Tensor, layout: str) -> Tensor:
        if layout != COPIES:
            return m(h)
        out = m(h.reshape(self.K * h.shape[1], *h.shape[2:]))
        return out.reshape(self.K, h.shape[1], *out.shape[1:])

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


def _stacked(modules: list[nn.Module]) -> nn.Module | None:
    """One module holding the ``K`` copies' parameters stacked (``K x ...``) and their float
    buffers concatenated (BatchNorm's running stats, ``K*C``); ``None`` if there are none."""
    params = [dict(m.named_parameters(recurse=False)) for m in modules]
    buffers = [dict(m.named_buffers(recurse=False)) for m in modules]
    if not params[0] and not any(b.is_floating_point() for b in buffers[0].values()):
        return None
    holder = nn.Module()
    for key, p in params[0].items():
        w = torch.stack([c[key].detach() for c in params])
        if p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous():
            w = channels_last_stack(w)
        holder.register_parameter(key, nn.Parameter(w))
    for key, b in buffers[0].items():
        if b.is_floating_point():
            holder.register_buffer(key, torch.cat([s[key].detach() for s in buffers]))
    return holder


__all__ = ["BatchedSequential"]
