"""MNIST-1D (Greydanus 2020): 4000/1000 one-dimensional signals of length 40, 10 classes.

Generated offline by the ``mnist1d`` package's ``make_dataset(get_dataset_args())`` (its default,
seeded arguments: the same arrays on every machine); never ``get_dataset``, which downloads.
Takes about 3 s, so the arrays are cached per process. Shapes: ``x_train`` is ``4000 x 1 x 40``.
"""

from __future__ import annotations

import functools

import torch

from metabp.exceptions import DataError
from metabp.targets._data import Data


@functools.lru_cache(maxsize=1)
def load_mnist1d() -> Data:
    """The MNIST-1D dataset, cached per process."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise DataError(f"MNIST-1D needs the mnist1d package: pip install mnist1d ({exc})") from exc
    d = make_dataset(get_dataset_args())

    def x(a) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.float32).reshape(len(a), 1, -1)

    def y(a) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.int64)

    return Data(x(d["x"]), y(d["y"]), x(d["x_test"]), y(d["y_test"]), num_classes=10)


__all__ = ["load_mnist1d"]
