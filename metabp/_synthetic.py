r"""Synthetic gradients (decoupled neural interfaces, Jaderberg et al. 2017) at a layer boundary.

At a boundary with activations ``h`` (``N x D``), a small module ``M`` predicts the gradient
of the loss, :math:`\hat\delta = M(h, \text{onehot}(y)) \approx \partial L / \partial h`. In one
``loss.backward()``:

- the layers above get their true gradients, and the true :math:`\delta = \partial L/\partial h`
  arrives at the boundary;
- the layers below receive :math:`\hat\delta` instead of :math:`\delta` (they are decoupled from
  the layers above: they could update before the forward pass reaches the loss);
- ``M`` receives the gradient of :math:`\tfrac{1}{2N}\sum_n \lVert N\hat\delta_n - N\delta_n\rVert^2`
  (per-example gradients of a batch-mean loss, so its targets do not shrink with ``N``), and is
  trained online by the same optimizer as the model.

``M`` is linear by default (``hidden=0``) with zero initial output, as in the paper, so training
starts with the layers below frozen and they begin to move as ``M`` learns.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metabp._select import Selector, select
from metabp.exceptions import ConfigError, PatchError

MAX_PARAMETERS = 10**8  # a predictor larger than this is a mistake (400 MB of float32 weights)


class _Boundary(torch.autograd.Function):
    """Identity on ``h``; backward sends ``pred`` down and ``d MSE / d pred`` to the predictor."""

    @staticmethod
    def forward(h: Tensor, pred: Tensor, n: int) -> Tensor:
        return h.clone()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        _, pred, n = inputs
        ctx.save_for_backward(pred)
        ctx.n = n

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        (pred,) = ctx.saved_tensors
        n = ctx.n
        # pred predicts n * grad; MSE/2 over the batch: d/dpred = (pred - n * grad) / n
        return pred / n, (pred - grad * n) / n, None


class SyntheticGradient(nn.Module):
    r"""Predicts :math:`N\,\partial L/\partial h` from ``h`` (``N x D``) and optionally ``onehot(y)``.

    Used as an identity layer at a boundary (see :func:`synthetic_gradients`, or put it in an
    ``nn.Sequential`` yourself): forward returns ``h`` unchanged; backward sends the prediction
    down and trains the predictor towards the true gradient.

    Args:
        features: ``D``, the size of ``h``'s last dimension.
        num_classes: condition on ``onehot(label)`` of this many classes (0: no conditioning).
            Set ``module.label`` (``N`` class indices) before each forward pass.
        hidden: 0 for a linear predictor, else one hidden ReLU layer of this size.
        seed: seeds the predictor's initial weights (its output layer starts at zero).

    Example:
        >>> sg = SyntheticGradient(8, num_classes=3)
        >>> sg.label = torch.tensor([0, 2])
        >>> sg(torch.randn(2, 8)).shape
        torch.Size([2, 8])
    """

    def __init__(self, features: int, *, num_classes: int = 0, hidden: int = 0, seed: int = 0) -> None:
        super().__init__()
        _check_sizes(features=features, num_classes=num_classes, hidden=hidden, seed=seed)
        d_in = features + num_classes
        size = d_in * hidden + hidden * features if hidden else d_in * features
        if size > MAX_PARAMETERS:
            raise ConfigError(
                f"SyntheticGradient(features={features}, num_classes={num_classes}, hidden={hidden}) would "
                f"have {size:.3g} weights; at most {MAX_PARAMETERS:.0e}: use fewer classes or hidden units"
            )
        self.features, self.num_classes, self.hidden = features, num_classes, hidden
        self.label: Tensor | None = None
        gen = torch.Generator().manual_seed(seed)
        if hidden:
            first = nn.Linear(d_in, hidden)
            with torch.no_grad():
                bound = 1 / d_in ** 0.5
                first.weight.copy_(torch.empty_like(first.weight).uniform_(-bound, bound, generator=gen))
                first.bias.copy_(torch.empty_like(first.bias).uniform_(-bound, bound, generator=gen))
            self.net = nn.Sequential(first, nn.ReLU(), nn.Linear(hidden, features))
        else:
            self.net = nn.Sequential(nn.Linear(d_in, features))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def predict(self, h: Tensor) -> Tensor:
        """The predicted gradient :math:`\\hat\\delta` (``N x D``, for a batch-mean loss)."""
        return self._raw(h.detach()) / h.shape[0]

    def _raw(self, h: Tensor) -> Tensor:
        if h.shape[-1] != self.features:
            raise PatchError(f"SyntheticGradient(features={self.features}) got h of shape {tuple(h.shape)}")
        if self.num_classes:
            if self.label is None:
                raise PatchError(
                    f"SyntheticGradient(num_classes={self.num_classes}) needs the labels: set "
                    "module.label (or metabp.set_synthetic_labels(model, y)) before the forward pass"
                )
            onehot = F.one_hot(self.label.to(h.device), self.num_classes).to(h.dtype)
            onehot = onehot.view(onehot.shape[:1] + (1,) * (h.dim() - 2) + onehot.shape[1:])
            h = torch.cat([h, onehot.expand(h.shape[:-1] + (self.num_classes,))], dim=-1)
        return self.net(h)

    def forward(self, h: Tensor) -> Tensor:
        if not (torch.is_grad_enabled() and h.requires_grad):
            return h
        return _Boundary.apply(h, self._raw(h.detach()), h.shape[0])

    def extra_repr(self) -> str:
        return f"features={self.features}, num_classes={self.num_classes}, hidden={self.hidden}"


def _check_sizes(**values: Any) -> None:
    """ConfigError unless ``features`` is an integer >= 1 and the others integers >= 0 (no bools)."""
    for name, v in values.items():
        least = 1 if name == "features" else 0
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise ConfigError(f"{name}={v!r}: must be an integer >= {least}")


def _check_model(model: Any, who: str) -> None:
    if not isinstance(model, nn.Module):
        raise PatchError(f"model={model!r}: {who} needs an nn.Module")


def synthetic_gradients(model: nn.Module, where: Selector, *, num_classes: int = 0,
                        hidden: int = 0, seed: int = 0) -> dict[str, SyntheticGradient]:
    """Put a :class:`SyntheticGradient` at the output of each selected module of ``model``.

    The predictor becomes a child of the module (``<name>.synthetic_gradient``, so it is in
    ``model.parameters()`` and ``state_dict``; build the optimizer afterwards) and a forward hook
    passes the module's output through it. Pick modules whose output is ``N x ... x D``
    (e.g. the activation after a hidden Linear layer). ``where`` selects as in
    :func:`metabp.patch`, among all submodules (names, globs, indices, or a list).

    Returns:
        ``{module name: SyntheticGradient}``, in module order.
    """
    _check_model(model, "synthetic_gradients")
    _check_sizes(num_classes=num_classes, hidden=hidden, seed=seed)
    found = {n: m for n, m in model.named_modules()
             if n and "synthetic_gradient" not in n.split(".")}  # not the predictors themselves
    chosen = select(found, where, noun="module", plural="modules")
    for n, m in chosen.items():
        if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            raise PatchError(f"where={n!r} is a container ({type(m).__name__}); pick the layer or "
                             "activation whose output is the boundary")
        if "synthetic_gradient" in m._modules:
            raise PatchError(f"module {n!r} already has a synthetic gradient")
    features = {n: _out_features(model, m, n) for n, m in chosen.items()}  # all checked before any change
    out: dict[str, SyntheticGradient] = {}
    for n, m in chosen.items():
        sg = SyntheticGradient(features[n], num_classes=num_classes, hidden=hidden, seed=seed + len(out))
        w = next(model.parameters(), None)
        if w is not None:
            sg.to(w.device, w.dtype)
        m.add_module("synthetic_gradient", sg)
        m._metabp_sg_hook = m.register_forward_hook(lambda mod, inp, o: mod.synthetic_gradient(o))
        out[n] = sg
    return out


def _out_features(model: nn.Module, m: nn.Module, name: str) -> int:
    """Size of ``m``'s output: its own ``out_features``, else that of the last Linear before it."""
    if isinstance(m, nn.Linear):
        return m.out_features
    last = None
    for n, mod in model.named_modules():
        if n == name:
            break
        if isinstance(mod, nn.Linear):
            last = mod
    if last is None:
        raise PatchError(f"cannot tell the output size of module {name!r}; pick a Linear layer or an "
                         "activation that follows one")
    return last.out_features


def set_synthetic_labels(model: nn.Module, y: Tensor | None) -> None:
    """Set the conditioning labels of every :class:`SyntheticGradient` in ``model`` (before forward)."""
    _check_model(model, "set_synthetic_labels")
    if y is not None and not (isinstance(y, Tensor) and y.dim() == 1 and not y.is_floating_point()):
        raise ConfigError(f"y={y!r}: must be None or a 1-D integer tensor of class indices")
    for m in model.modules():
        if isinstance(m, SyntheticGradient):
            m.label = y


def remove_synthetic_gradients(model: nn.Module) -> list[str]:
    """Remove every synthetic-gradient module and hook that :func:`synthetic_gradients` put in."""
    _check_model(model, "remove_synthetic_gradients")
    done = []
    for n, m in model.named_modules():
        if "_metabp_sg_hook" in m.__dict__:
            m.__dict__.pop("_metabp_sg_hook").remove()
            del m._modules["synthetic_gradient"]
            done.append(n)
    return done


__all__ = ["SyntheticGradient", "synthetic_gradients", "set_synthetic_labels", "remove_synthetic_gradients"]
