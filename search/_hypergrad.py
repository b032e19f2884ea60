r"""Exact hypergradients: d(mean loss of a ``T``-step unroll) / d omega through the patched backward.

The unroll trains an MLP target for ``T`` steps from its initial weights :math:`W_0`,

.. math:: W_{t+1} = U\big(W_t,\ G(W_t, \omega; B_t)\big), \qquad
          L_T(\omega) = \frac{1}{T} \sum_{t=1}^{T} \ell(W_t; B_t),

where :math:`B_t` is step ``t``'s batch (the targets layer's order for ``seed``), :math:`U` the
target's optimizer (SGD or Adam, written functionally) and :math:`G` the *patched* gradient: the
delta equations of backpropagation written out with plain torch ops,

.. math:: \delta^L = \frac{\mathrm{softmax}(z^L) - y}{B}, \qquad
          \delta^l = (\delta^{l+1} W^{l+1}) \odot b^l(z^l), \qquad
          \nabla_{W^l} = {\delta^l}^\top a^{l-1},

with :math:`b^l = g_\omega` at the patched site (evaluated from ``omega`` directly, not from the
core's lookup table) and :math:`\sigma'` elsewhere. :math:`G` is then an ordinary differentiable
function of :math:`(W, \omega)`, so one *first-order* backward through the unroll gives
:math:`dL_T/d\omega` exactly, including every :math:`\partial G / \partial W` term, and never
differentiates the core's autograd Function twice.

Cost: the unroll's graph keeps every step's activations, so memory and time grow linearly in ``T``
(measured per unroll length by ``benchmarks/gradient_search.py --unroll-cost``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from metabp import MetaNet, get_activation, is_per_site
from metabp.exceptions import ConfigError

#: Optimizers the unroll writes functionally, with torch's default hyperparameters.
UNROLL_OPTIMIZERS = ("sgd", "adam")
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8
#: Floor under Adam's second moment before the square root: ``sqrt`` has an infinite derivative
#: at 0 (a weight whose gradient is exactly 0, e.g. behind a dead ReLU). Far below ``ADAM_EPS**2``.
V_FLOOR = 1e-30
#: What a one-g-per-site b-function is told: the unroll differentiates one MetaNet's omega.
PER_SITE_NOTE = "; one g per site is not supported: pass one site's MetaNet and that site as where"


@dataclass
class HyperGrad:
    """One unroll's result.

    Attributes:
        loss: :math:`L_T(\\omega)`, the mean of the step losses ``losses``.
        grad: :math:`dL_T/d\\omega`, float64, ``num_params``.
        losses: :math:`\\ell(W_t; B_t)` for ``t = 1..T``.
        seconds: wall time of the unroll and its backward.
        saved_bytes: bytes autograd saved for the backward (the unroll's memory beyond the weights).
    """

    loss: float
    grad: Tensor
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    saved_bytes: int = 0


def metanet_g(omega: Tensor, z: Tensor, hidden: int, act: str) -> Tensor:
    r""":math:`g_\omega(z) = \sum_k w_{2,k}\,\phi(w_{1,k} z + b_{1,k}) + b_2`, differentiable in
    ``omega`` (``3 hidden + 1``) and ``z`` (any shape); memory ``O(z * hidden)``."""
    phi = get_activation(act)
    w1, b1, w2, b2 = omega[:hidden], omega[hidden:2 * hidden], omega[2 * hidden:3 * hidden], omega[3 * hidden]
    return (phi.forward(z.unsqueeze(-1) * w1 + b1) * w2).sum(-1) + b2


def patched_grads(weights: list[tuple[Tensor, Tensor | None]], x: Tensor, y: Tensor, *, activation: str,
                  site: int, g) -> tuple[Tensor, list[tuple[Tensor, Tensor | None]]]:
    """``(loss, grads)``: cross-entropy of the MLP ``weights`` on ``(x, y)`` and its patched gradient
    (module docstring), ``g(z)`` in place of ``sigma'(z)`` after hidden layer ``site`` (0-based).

    ``weights``: ``(W, b)`` per linear layer (``W``: ``out x in``; ``b``: ``out`` or ``None``).
    """
    act = get_activation(activation)
    a, inputs, zs = x.flatten(1), [], []
    for i, (w, b) in enumerate(weights):
        inputs.append(a)
        z = a @ w.T if b is None else a @ w.T + b
        if i < len(weights) - 1:
            zs.append(z)
            a = act.forward(z)
    loss = F.cross_entropy(z, y)
    delta = (torch.softmax(z, 1) - F.one_hot(y, z.shape[1]).to(z.dtype)) / len(y)
    grads: list[tuple[Tensor, Tensor | None]] = []
    for i in range(len(weights) - 1, -1, -1):
        w, b = weights[i]
        grads.append((delta.T @ inputs[i], None if b is None else delta.sum(0)))
        if i > 0:
            z = zs[i - 1]
            local = g(z) if i - 1 == site else act.derivative(z)
            delta = (delta @ w) * local
    return loss, grads[::-1]


def hypergrad(target, g: MetaNet, *, unroll: int, seed: int = 0, where: str | None = None,
              lr: float | None = None, data_dir: str | None = None,
              dtype: torch.dtype = torch.float32) -> HyperGrad:
    r""":math:`L_T(\omega)` and :math:`dL_T/d\omega` for ``g``'s weights on ``target`` (module docstring).

    Args:
        target: a ``metabp.targets`` preset name or ``TargetSpec``; an ``mlp`` trained by ``sgd``
            or ``adam``.
        g: the meta-network whose ``omega`` is differentiated.
        unroll: ``T``, training steps unrolled (>= 1).
        seed: the target's initial weights and batch order (as ``metabp.targets.train``).
        where: the patched activation, ``"act<k>"``; default the target's.
        lr: the optimizer's learning rate; default the target's.
        data_dir: passed to ``load_data``. dtype: the unroll's floating type.

    Raises:
        ConfigError: naming the argument, its value and what is allowed.

    Example::

        hg = hypergrad("gaussians-mlp3", MetaNet(1, "tanh", omega=[1.0, 0.0, 1.0, 0.0]), unroll=20)
        hg.loss, hg.grad          # L_20 and dL_20/domega (4 values)
    """
    from metabp.targets import batches, build_model, get_target, load_data, steps_per_epoch

    spec = get_target(target)
    if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1:
        raise ConfigError(f"unroll={unroll!r}: the unroll length T must be an integer >= 1")
    if not isinstance(g, MetaNet):
        raise ConfigError(f"g={type(g).__name__}: hypergradients are taken with respect to a MetaNet's "
                          f"omega{PER_SITE_NOTE if is_per_site(g) else ''}")
    if spec.network != "mlp" or spec.optimizer not in UNROLL_OPTIMIZERS or spec.feedback or spec.trainable:
        raise ConfigError(f"target={spec.name!r} (network={spec.network!r}, optimizer={spec.optimizer!r}): "
                          f"the unroll supports an mlp trained by {' or '.join(UNROLL_OPTIMIZERS)} "
                          "(all weights, no feedback mode)")
    where = spec.where if where is None else where
    site = _site(where, len(spec.hidden))
    data = load_data(spec, data_dir)
    n = len(data.y_train)
    epochs = -(-(unroll + 1) // steps_per_epoch(n, spec.batch_size))
    order = [idx for epoch in batches(n, spec.batch_size, epochs, seed) for idx in epoch][: unroll + 1]
    x, y = data.x_train.to(dtype), data.y_train
    model = build_model(spec, seed)
    weights = [(m.weight.detach().to(dtype), None if m.bias is None else m.bias.detach().to(dtype))
               for m in model if isinstance(m, torch.nn.Linear)]
    omega = g.omega.detach().to(dtype).requires_grad_(True)
    t0, saved = time.perf_counter(), [0]

    def pack(t: Tensor) -> Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        losses = _unroll(weights, omega, [(x[i], y[i]) for i in order], spec=spec, site=site, g=g,
                         lr=spec.lr if lr is None else float(lr))
        loss = torch.stack(losses).mean()
    (grad,) = torch.autograd.grad(loss, omega)
    steps = [float(v.detach()) for v in losses]
    return HyperGrad(float(loss.detach()), grad.detach().to(torch.float64), steps,
                     time.perf_counter() - t0, saved[0])


def _site(where: str, num_hidden: int) -> int:
    """``"act<k>"`` -> hidden layer index ``k - 1``."""
    k = where[3:] if isinstance(where, str) and where.startswith("act") else ""
    if not k.isdigit() or not 1 <= int(k) <= num_hidden:
        raise ConfigError(f"where={where!r}: the unroll patches one activation act1..act{num_hidden}")
    return int(k) - 1


def _unroll(weights: list[tuple[Tensor, Tensor | None]], omega: Tensor, data: list[tuple[Tensor, Tensor]],
            *, spec, site: int, g: MetaNet, lr: float) -> list[Tensor]:
    """``T = len(data) - 1`` optimizer steps on ``data[0..T-1]``; returns ``l(W_t; B_t)``, ``t = 1..T``."""
    flat = [w for pair in weights for w in pair if w is not None]
    has_bias = [pair[1] is not None for pair in weights]
    moments = [(torch.zeros_like(w), torch.zeros_like(w)) for w in flat]
    b1, b2 = ADAM_BETAS
    losses = []
    for t, (xb, yb) in enumerate(data):
        loss, grads = patched_grads(_pairs(flat, has_bias), xb, yb, activation=spec.activation, site=site,
                                    g=lambda z: metanet_g(omega, z, g.hidden, g.act.name))
        if t > 0:
            losses.append(loss)
        if t == len(data) - 1:
            break
        grads_flat = [d for pair in grads for d in pair if d is not None]
        if spec.optimizer == "sgd":
            flat = [w - lr * d for w, d in zip(flat, grads_flat, strict=True)]
            continue
        moments = [(b1 * m + (1 - b1) * d, b2 * v + (1 - b2) * d * d)
                   for (m, v), d in zip(moments, grads_flat, strict=True)]
        c1, c2 = 1 - b1 ** (t + 1), 1 - b2 ** (t + 1)
        flat = [w - lr * (m / c1) / ((v / c2).clamp_min(V_FLOOR).sqrt() + ADAM_EPS)
                for w, (m, v) in zip(flat, moments, strict=True)]
    return losses


def _pairs(flat: list[Tensor], has_bias: list[bool]) -> list[tuple[Tensor, Tensor | None]]:
    """The flat tensor list back as ``(W, b)`` pairs."""
    out, i = [], 0
    for bias in has_bias:
        out.append((flat[i], flat[i + 1] if bias else None))
        i += 2 if bias else 1
    return out


__all__ = ["hypergrad", "HyperGrad", "metanet_g", "patched_grads", "UNROLL_OPTIMIZERS"]
