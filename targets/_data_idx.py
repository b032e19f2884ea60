"""MNIST and Fashion-MNIST from the standard idx files (LeCun's format), optionally gzipped.

Files: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte`` (each may end in ``.gz``). An idx file is a big-endian header —
two zero bytes, a type code (``0x08`` = unsigned byte), the number of dimensions ``d`` — then
``d`` 32-bit sizes, then the data. Images are scaled to ``[0, 1]``; shapes ``N x 1 x 28 x 28``.

``load_fashion(pad_to=32)`` pads the images with zeros to ``N x 1 x 32 x 32`` (the input size of
SimpleNet), centred.

Searched in a directory given as ``data_dir``, then ``$METABP_DATA``, then ``~/.metabp/data``,
each as is and in the subfolders named below; for Fashion-MNIST finally where Debian's package
``dataset-fashion-mnist`` installs the files.
"""

from __future__ import annotations

import functools
import gzip
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch

from metabp.exceptions import DataError
from metabp.targets._data import Data, data_roots, where_hint

FILES = {
    "x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte",
}
SUBDIRS = {
    "mnist": ("", "mnist", "MNIST", "MNIST/raw"),
    "fashion": ("", "fashion-mnist", "fashion_mnist", "FashionMNIST", "FashionMNIST/raw"),
}
DEBIAN_PACKAGE = "dataset-fashion-mnist"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one idx file (``.gz`` or plain) into a uint8 array of the shape its header states."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read idx file {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte idx file (header {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    start = 4 + 4 * ndim
    if len(raw) - start != int(np.prod(shape)):
        raise DataError(f"{path}: header says shape {shape} but holds {len(raw) - start} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(shape)


@functools.lru_cache(maxsize=1)
def _debian_dir() -> Path | None:
    """Where ``dataset-fashion-mnist`` put its files (``dpkg -L``), if it is installed."""
    if shutil.which("dpkg") is None:
        return None
    try:
        out = subprocess.run(["dpkg", "-L", DEBIAN_PACKAGE], capture_output=True, text=True,
                             timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.endswith(FILES["x_train"] + ".gz") or line.endswith(FILES["x_train"]):
            return Path(line).parent
    return None


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def find_idx_dir(kind: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The first directory holding all four idx files of ``kind`` (``mnist`` or ``fashion``)."""
    candidates = [root / sub for root in data_roots(data_dir) for sub in SUBDIRS[kind]]
    if kind == "fashion" and _debian_dir() is not None:
        candidates.append(_debian_dir())
    for directory in candidates:
        if all(_find(directory, stem) for stem in FILES.values()):
            return directory
    name = "Fashion-MNIST" if kind == "fashion" else "MNIST"
    looked = ", ".join(str(c) for c in candidates)
    extra = f" (or apt-get install {DEBIAN_PACKAGE})" if kind == "fashion" else ""
    raise DataError(
        f"{name} files not found; looked in: {looked}. Needed: "
        f"{', '.join(s + '[.gz]' for s in FILES.values())}. "
        + where_hint(f"these four files (or a subfolder {SUBDIRS[kind][1]!r} holding them)") + extra
    )


@functools.lru_cache(maxsize=4)
def _load(kind: str, directory: Path) -> Data:
    arrays = {key: read_idx(_find(directory, stem)) for key, stem in FILES.items()}
    for split in ("train", "test"):
        nx, ny = len(arrays[f"x_{split}"]), len(arrays[f"y_{split}"])
        if nx != ny or arrays[f"x_{split}"].ndim != 3:
            raise DataError(f"{directory}: {split} images ({arrays[f'x_{split}'].shape}) and labels "
                            f"({ny}) do not match")

    def x(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)

    def y(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    num_classes = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    return Data(x(arrays["x_train"]), y(arrays["y_train"]), x(arrays["x_test"]),
                y(arrays["y_test"]), num_classes=max(num_classes, 10))


def load_mnist(data_dir: str | os.PathLike | None = None) -> Data:
    """MNIST from local idx files; ``DataError`` saying where to put them if missing."""
    return _load("mnist", find_idx_dir("mnist", data_dir).resolve())


def load_fashion(data_dir: str | os.PathLike | None = None, *, pad_to: int | None = None) -> Data:
    """Fashion-MNIST from local idx files; ``DataError`` saying where to put them if missing.
    ``pad_to``: zero-pad each image to ``pad_to x pad_to``, centred (``None``: 28 x 28)."""
    directory = find_idx_dir("fashion", data_dir).resolve()
    return _load("fashion", directory) if pad_to is None else _padded(directory, pad_to)


@functools.lru_cache(maxsize=1)
def _padded(directory: Path, size: int) -> Data:
    data = _load("fashion", directory)
    before = (size - data.x_train.shape[-1]) // 2
    after = size - data.x_train.shape[-1] - before

    def pad(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(x, (before, after, before, after))

    return Data(pad(data.x_train), data.y_train, pad(data.x_test), data.y_test, data.num_classes)


__all__ = ["load_mnist", "load_fashion", "read_idx", "find_idx_dir"]
