"""CIFAR-10 from the standard "python version" batches (``cifar-10-batches-py``).

Files: ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``, in ``DIR/cifar-10-batches-py/``
or directly in ``DIR`` (``DIR`` = ``data_dir``, then ``$METABP_DATA``, then ``~/.metabp/data``).
Each batch is a dict with ``b"data"`` (``n x 3072`` uint8, channel-major 32x32 planes) and
``b"labels"``. Images are standardised per channel with the training set's mean and std;
shapes ``50000 x 3 x 32 x 32``.
"""

from __future__ import annotations

import functools
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from metabp.exceptions import DataError
from metabp.targets._data import Data, data_roots, where_hint

# The only globals a CIFAR-10 batch needs: numpy arrays (module path of numpy 1 and 2), and
# _codecs.encode, with which protocol-2 pickles written by Python 3 carry raw bytes.
_ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})


class _DataOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays; refuses any other global, so a planted
    file cannot run code (plain ``pickle.load`` would call whatever the file names)."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}: not CIFAR-10 data")
        return super().find_class(module, name)


TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
SUBDIR = "cifar-10-batches-py"


def read_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch file -> (``n x 3 x 32 x 32`` uint8, ``n`` int64)."""
    try:
        with open(path, "rb") as f:
            # CIFAR-10's python batches are pickled dicts: that *is* the dataset's published
            # format. Only data types are let through (see _DataOnlyUnpickler).
            batch = _DataOnlyUnpickler(f, encoding="bytes").load()
        data, labels = batch[b"data"], batch[b"labels"]
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path} is not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from exc
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(f"{path}: expected data of shape n x 3072 and n labels, got {data.shape}, "
                        f"{len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def find_cifar_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The directory that holds all six batch files."""
    candidates = [d for root in data_roots(data_dir) for d in (root / SUBDIR, root)]
    for directory in candidates:
        if all((directory / name).is_file() for name in TRAIN_FILES + (TEST_FILE,)):
            return directory
    raise DataError(
        f"CIFAR-10 files not found; looked in: {', '.join(map(str, candidates))}. Needed: "
        f"{SUBDIR}/{{{', '.join(TRAIN_FILES)}, {TEST_FILE}}}. "
        + where_hint(f"the folder {SUBDIR} (from cifar-10-python.tar.gz)")
    )


@functools.lru_cache(maxsize=2)
def _load(directory: Path) -> Data:
    parts = [read_batch(directory / name) for name in TRAIN_FILES]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = read_batch(directory / TEST_FILE)
    x_train_t = torch.from_numpy(x_train).float().div_(255.0)
    x_test_t = torch.from_numpy(x_test).float().div_(255.0)
    mean = x_train_t.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train_t.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return Data((x_train_t - mean) / std, torch.from_numpy(y_train), (x_test_t - mean) / std,
                torch.from_numpy(y_test), num_classes=10)


def load_cifar10(data_dir: str | os.PathLike | None = None) -> Data:
    """CIFAR-10 from local python batches; ``DataError`` saying where to put them if missing."""
    return _load(find_cifar_dir(data_dir).resolve())


__all__ = ["load_cifar10", "read_batch", "find_cifar_dir"]
