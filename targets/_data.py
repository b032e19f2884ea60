"""The arrays a target trains on, and where local dataset files are looked for."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

ENV_VAR = "METABP_DATA"


@dataclass(frozen=True)
class Data:
    """A classification dataset held in memory.

    Attributes:
        x_train: ``N x *in_shape`` float32. y_train: ``N`` int64 class indices.
        x_test: ``M x *in_shape`` float32. y_test: ``M`` int64.
        num_classes: ``C``.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, device: str | torch.device) -> Data:
        return Data(self.x_train.to(device), self.y_train.to(device), self.x_test.to(device),
                    self.y_test.to(device), self.num_classes)


def data_roots(data_dir: str | os.PathLike | None) -> list[Path]:
    """Directories to search, in order: ``data_dir``, then ``$METABP_DATA``, then ``~/.metabp/data``."""
    roots = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    if os.environ.get(ENV_VAR):
        roots.append(Path(os.environ[ENV_VAR]).expanduser())
    roots.append(Path("~/.metabp/data").expanduser())
    return roots


def where_hint(what: str) -> str:
    """The sentence every missing-data error ends with."""
    return (f"put {what} in a directory and pass it as --data-dir DIR (Python: data_dir=DIR) or set "
            f"the environment variable {ENV_VAR}=DIR; no download is attempted")
