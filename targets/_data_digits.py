"""scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes; offline).

Pixels ``0..16`` are scaled to ``[0, 1]``; a fixed permutation (seed 0) splits 80/20 into
1437 training and 360 test images. Shapes: ``x_train`` is ``1437 x 64``.
"""

from __future__ import annotations

import functools

import torch

from metabp.targets._data import Data

TEST_FRACTION = 0.2
SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def load_digits() -> Data:
    """The digits dataset, cached per process."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float32) / 16.0
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test = int(round(TEST_FRACTION * len(y)))
    test, train = order[:n_test], order[n_test:]
    return Data(x[train], y[train], x[test], y[test], num_classes=10)


__all__ = ["load_digits"]
