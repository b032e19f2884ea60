"""``.bfn`` artifacts: a b-function as safetensors tensors plus JSON metadata.

Layout: a safetensors file whose ``__metadata__`` holds ``format = "metabp.bfn"``, ``version``,
``kind``, ``config`` (JSON, how to rebuild), ``meta`` (JSON, provenance: study, score, ...) and
``sha256`` of the tensor bytes. Loading parses JSON and raw tensors only: no code runs, no pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from metabp._bfunctions import KINDS, BFunction
from metabp.exceptions import ArtifactError, ConfigError

FORMAT = "metabp.bfn"
VERSION = "1"


def _digest(tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous().cpu()
        h.update(name.encode() + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save(bfn: BFunction, path: str | os.PathLike, *, meta: dict[str, Any] | None = None) -> Path:
    """Write ``bfn`` to ``path`` (conventionally ``*.bfn``); ``meta`` is any JSON-able provenance.

    Example:
        >>> import tempfile, metabp
        >>> p = save(metabp.MetaNet(omega=[1.0, 0.0, 1.0, 0.0]), tempfile.mktemp(suffix=".bfn"))
        >>> metabp.load(p).omega.tolist()
        [1.0, 0.0, 1.0, 0.0]
    """
    if not isinstance(bfn, BFunction):
        raise ArtifactError(f"save(bfn={bfn!r}): only b-functions can be saved")
    tensors, config = bfn.state()
    merged = {**getattr(bfn, "meta", {}), **(meta or {})}
    try:
        meta_json = json.dumps(merged, sort_keys=True)
    except TypeError as exc:
        raise ArtifactError(f"save(meta=...): metadata must be JSON-serialisable ({exc})") from None
    header = {"format": FORMAT, "version": VERSION, "kind": bfn.kind,
              "config": json.dumps(config, sort_keys=True), "meta": meta_json,
              "sha256": _digest(tensors)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=header)
    os.replace(tmp, path)  # never leave a half-written artifact under the real name
    return path


def load(path: str | os.PathLike) -> BFunction:
    """Read a ``.bfn`` file written by :func:`save`; its provenance is in ``bfn.meta``.

    Raises:
        ArtifactError: the file is missing, truncated, corrupted, not a metabp artifact, or of
            an unknown kind; the message names the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such .bfn file")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(
            f"{path}: not a readable .bfn file (truncated or corrupted header: {exc})"
        ) from None
    if header.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a metabp .bfn artifact (no format={FORMAT!r} in its header)")
    if header.get("version") != VERSION:
        raise ArtifactError(
            f"{path}: .bfn version {header.get('version')!r} is not supported (this metabp reads "
            f"version {VERSION})"
        )
    kind = header.get("kind")
    if kind not in KINDS:
        raise ArtifactError(f"{path}: unknown b-function kind {kind!r}; known: {', '.join(KINDS)}")
    if header.get("sha256") != _digest(tensors):
        raise ArtifactError(f"{path}: checksum mismatch, the tensor data is corrupted")
    try:
        config, meta = json.loads(header["config"]), json.loads(header.get("meta", "{}"))
        bfn = KINDS[kind].from_state(tensors, config)
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: corrupted {kind} config: {exc}") from None
    except ConfigError as exc:
        raise ArtifactError(f"{path}: {exc}") from None
    bfn.meta = meta
    return bfn
