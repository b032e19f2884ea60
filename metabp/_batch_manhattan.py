r"""Batch Manhattan: step with the sign of each minibatch gradient (Liao, Leibo & Poggio 2016).

The wrapped optimizer sees :math:`\tilde g = \mathrm{sign}(g)` in place of the minibatch gradient
:math:`g`, so plain SGD becomes :math:`\theta_{t+1} = \theta_t - \gamma\,\mathrm{sign}(g_t)`: the
update's magnitude no longer depends on the gradient's (or the feedback matrix's) scale, which
is what makes sign-symmetric and random feedback train well in that paper.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

from metabp.exceptions import ConfigError


class BatchManhattan(Optimizer):
    r"""Wrap ``optimizer`` so that every step uses :math:`\mathrm{sign}(\nabla)` of the gradients.

    .. math:: g \leftarrow \mathrm{sign}(g), \quad \text{then } \texttt{optimizer.step()}

    ``step`` overwrites each ``p.grad`` with its sign in place (``0`` stays ``0``), then calls the
    wrapped optimizer's ``step``. ``param_groups`` and ``state`` are the wrapped optimizer's own
    objects, so learning-rate schedulers and ``state_dict`` work on either.

    Args:
        optimizer: any ``torch.optim.Optimizer`` (SGD gives the paper's rule).

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.0]))
        >>> opt = BatchManhattan(torch.optim.SGD([w], lr=0.1))
        >>> w.grad = torch.tensor([3.0, -0.01, 0.0]); opt.step()
        >>> w.data
        tensor([ 0.9000, -1.9000,  0.0000])
    """

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise ConfigError(
                f"optimizer={type(optimizer).__name__!r} object is not a torch.optim.Optimizer; wrap one, "
                "e.g. BatchManhattan(torch.optim.SGD(model.parameters(), lr=0.01))"
            )
        if isinstance(optimizer, BatchManhattan):
            raise ConfigError("optimizer is already a BatchManhattan; wrap the inner optimizer once")
        self.optimizer = optimizer
        # the same group dicts: Optimizer.__init__ keeps the dicts it is given
        super().__init__(optimizer.param_groups, optimizer.defaults)
        self.state = optimizer.state

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Take the sign of every gradient, then one step of the wrapped optimizer."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if grads:
            torch._foreach_sign_(grads)
        self.optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)
        self.param_groups = self.optimizer.param_groups
        self.state = self.optimizer.state

    def __repr__(self) -> str:
        return f"BatchManhattan({self.optimizer!r})"


__all__ = ["BatchManhattan"]
