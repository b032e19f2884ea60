"""A base for metabp's custom autograd Functions: ``apply`` without a per-call signature bind."""

from __future__ import annotations

from typing import Any

import torch
from torch._functorch.utils import unwrap_dead_wrappers


class FastFunction(torch.autograd.Function):
    """``torch.autograd.Function`` whose ``apply`` skips ``inspect.signature`` outside transforms.

    With ``setup_context`` defined, ``Function.apply`` binds the arguments through
    ``inspect.signature`` on every call (~50 us on a 2-core CPU, as much as a small layer's whole
    forward and backward) only to fill in defaults. Subclasses' ``forward`` take no defaults and
    are called positionally, so outside function transforms this does what ``Function.apply``
    does after the bind; under ``vmap``/``grad`` the full path runs.
    """

    @classmethod
    def apply(cls, *args: Any) -> Any:
        if torch._C._are_functorch_transforms_active():
            return super().apply(*args)
        return super(torch.autograd.Function, cls).apply(*unwrap_dead_wrappers(args))
