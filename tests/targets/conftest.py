import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_idx(path: Path, array: np.ndarray, *, gz: bool) -> None:
    """An unsigned-byte idx file: 0, 0, 0x08, ndim, big-endian sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def make_idx_dir(directory: Path, *, n_train: int = 64, n_test: int = 32, gz: bool = True,
                 seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(directory / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), gz=gz)
        write_idx(directory / f"{split}-labels-idx1-ubyte", np.arange(n) % 10, gz=gz)
    return directory


def make_cifar_dir(root: Path, *, per_batch: int = 8, seed: int = 0) -> Path:
    """The standard python batches (pickled dicts with b'data' n x 3072 uint8 and b'labels')."""
    rng = np.random.default_rng(seed)
    directory = root / "cifar-10-batches-py"
    directory.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072)).astype(np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, per_batch)]}
        with open(directory / name, "wb") as f:
            pickle.dump(batch, f)
    return root


@pytest.fixture
def idx_factory(tmp_path):
    """make(subdir, **kw) -> a directory of tiny idx files written in the standard format."""
    return lambda sub="idx", **kw: make_idx_dir(tmp_path / sub, **kw)


@pytest.fixture
def cifar_root(tmp_path):
    return make_cifar_dir(tmp_path / "data")
