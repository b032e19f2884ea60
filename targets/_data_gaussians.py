r"""Two Gaussian classes (implicit-learning-rate paper, section 3.1): class 0 ~ N(+1, I), class 1 ~ N(-1, I).

A fixed sample, the same for every run and seed (drawn from its own generator, seed 0), so the
run seed only changes the network's initial weights. Shapes: ``x_train`` is ``n_train x dim``.
"""

from __future__ import annotations

import torch

from metabp.targets._data import Data

N_TRAIN = 200  # 100 a class: one full batch
N_TEST = 1000
DIM = 2
DATA_SEED = 0


def _sample(n: int, dim: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(n) % 2
    mean = (1.0 - 2.0 * y.float()).unsqueeze(1)  # +1 for class 0, -1 for class 1
    x = mean + torch.randn(n, dim, generator=generator)
    return x, y


def load_gaussians(*, n_train: int = N_TRAIN, n_test: int = N_TEST, dim: int = DIM) -> Data:
    """The two-Gaussians dataset; deterministic."""
    gen = torch.Generator().manual_seed(DATA_SEED)
    x_train, y_train = _sample(n_train, dim, gen)
    x_test, y_test = _sample(n_test, dim, gen)
    return Data(x_train, y_train, x_test, y_test, num_classes=2)


__all__ = ["load_gaussians"]
