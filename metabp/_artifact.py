"""``.bfn`` artifacts: a b-function as safetensors tensors plus JSON metadata.

Layout: a safetensors file whose ``__metadata__`` holds ``format = "metabp.bfn"``, ``version``,
``kind``, ``config`` (JSON, how to rebuild), ``meta`` (JSON object, provenance: study, score, ...)
and ``sha256`` of the tensor bytes. Loading parses JSON and raw tensors only: no code runs, no
pickle. A file is checked completely when it loads (every field's type and range, the tensors'
dtype, shape and values, and that ``g`` stays within :data:`G_LIMIT`); every problem is an
:class:`~metabp.exceptions.ArtifactError` naming the file, the field, its value and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as dump_tensors
from torch import Tensor

from metabp._activations import get_activation
from metabp._bfunctions import BFunction, Derivative, Scaled
from metabp._metanet import MetaNet
from metabp._sites import MAX_SITES, PerSite, as_per_site, site_tensors
from metabp.exceptions import ArtifactError, ConfigError, MetabpError

FORMAT = "metabp.bfn"
VERSION = "1"
MAX_BYTES = 16 * 2**20  # a .bfn is a few KiB; nothing larger is read
KINDS: dict[str, type[BFunction]] = {c.kind: c for c in (MetaNet, Derivative, Scaled)}  # what a file names
FILE_KINDS = (*KINDS, PerSite.kind)  # a file holds one of KINDS, or a PerSite of them
TABLE_SIZES = (MetaNet.table_sizes[0], 2**15)  # MetaNet table_size range a file may ask for (int16 index)
#: The largest ``|g(z)|`` a saved or loaded b-function may reach at any ``z``. Each patched layer
#: scales the backward's ``delta`` by at most this where backprop scales it by ``|sigma'| <= 1.2``,
#: so six patched layers in a row add a factor below ``1e36``, inside float32's ``3.4e38``: gradients
#: that plain backprop keeps far from overflow stay finite (tested on three patched layers with
#: inputs up to 1e3; float16's range ends at 65504). Searches over ``omega`` in ``[-5, 5]`` reach
#: a few thousand at most.
G_LIMIT = 1e6
SOFTPLUS_THRESHOLD = 88.0  # exp(88) < float32 max < exp(88.8)
OMEGA_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# points where Derivative and the bound are probed: the float32 extremes, zero, and a fine middle
_PROBE = torch.cat([torch.tensor([-3.4e38, -1e30, -1e6, -0.0, 0.0, 1e6, 1e30, 3.4e38]),
                    torch.linspace(-100, 100, 2001)])


def _digest(tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous().cpu()
        h.update(name.encode() + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _path(path: Any, who: str) -> Path:
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise ArtifactError(f"{who}(path={path!r}): path must be a non-empty str or os.PathLike")
    text = os.fspath(path)
    if not isinstance(text, str) or text in ("", ".") or "\x00" in text:
        raise ArtifactError(f"{who}(path={path!r}): path must be a non-empty str or os.PathLike "
                            "naming a file (no NUL characters)")
    return Path(text)


def save(bfn: BFunction | PerSite, path: str | os.PathLike, *, meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``bfn`` to ``path`` (conventionally ``*.bfn``); ``meta`` is any JSON-able provenance.

    ``bfn`` is one b-function or a :class:`~metabp.PerSite` (or dict) of them, one per site; the
    file holds all of them (config ``{"sites": [{site, kind, config}]}``, site ``j``'s tensors
    named ``"{j}.{name}"``).

    The file is written to a temporary file beside ``path`` and renamed over it, so a failed save
    never leaves a half-written file and an existing file stays intact.

    Example:
        >>> import tempfile, metabp
        >>> p = save(metabp.MetaNet(omega=[1.0, 0.0, 1.0, 0.0]), tempfile.mktemp(suffix=".bfn"))
        >>> metabp.load(p).omega.tolist()
        [1.0, 0.0, 1.0, 0.0]
    """
    try:
        bfn = as_per_site(bfn)
    except MetabpError as exc:
        raise ArtifactError(f"save: {exc}") from None
    if not isinstance(bfn, BFunction | PerSite):
        raise ArtifactError(f"save(bfn={bfn!r}): only b-functions (MetaNet, Derivative, Scaled) or a "
                            "PerSite of them can be saved")
    path = _path(path, "save")
    own = getattr(bfn, "meta", None)
    own, meta = ({} if own is None else own), ({} if meta is None else meta)
    for name, value in (("bfn.meta", own), ("meta", meta)):
        if not isinstance(value, Mapping):
            raise ArtifactError(f"save({name}={value!r}): metadata must be a dict of JSON values")
    try:
        meta_json = json.dumps({**own, **meta}, sort_keys=True)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ArtifactError(f"save(meta=...): metadata must be JSON-serialisable ({exc})") from None
    try:
        tensors, config = bfn.state()
    except MetabpError as exc:
        raise ArtifactError(f"save({bfn!r}): {exc}") from None
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    try:  # what load would refuse is not written
        _CHECKS[bfn.kind](json.loads(json.dumps(config)), tensors)
    except (KeyError, MetabpError, ValueError, TypeError) as exc:
        raise ArtifactError(
            f"save({bfn!r}): a {bfn.kind} with config {config} would not load ({exc})"
        ) from None
    problem = _bound_problem(bfn)
    if problem:
        raise ArtifactError(f"save({bfn!r}): {problem}")
    header = {"format": FORMAT, "version": VERSION, "kind": bfn.kind,
              "config": json.dumps(config, sort_keys=True), "meta": meta_json,
              "sha256": _digest(tensors)}
    _write_atomic(path, dump_tensors(tensors, metadata=header))
    return path


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file beside ``path``, flush it to disk, then rename it over ``path``
    (atomic on POSIX and Windows): readers see the old file or the new one, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        if path.exists() and not path.is_file():
            raise ArtifactError(f"{path}: exists and is not a regular file; not replacing it")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot write the .bfn file ({exc.strerror or exc})") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def load(path: str | os.PathLike) -> BFunction | PerSite:
    """Read a ``.bfn`` file written by :func:`save`; its provenance is in ``bfn.meta`` (a dict).

    Returns the b-function, or a :class:`~metabp.PerSite` when the file holds one per site.

    Raises:
        ArtifactError: the file is missing, truncated, corrupted, not a metabp artifact, of an
            unknown kind or version, or holds a field or tensor out of range; the message names
            the file, the field, its value and what is allowed.
    """
    path = _path(path, "load")
    header, tensors = _read(path)
    kind = _check_header(path, header, tensors)
    config = _json_object(path, header, "config", required=True)
    meta = _json_object(path, header, "meta", required=False)
    try:
        _CHECKS[kind](config, tensors)
        bfn = (PerSite.from_state(tensors, config, KINDS) if kind == PerSite.kind
               else KINDS[kind].from_state(tensors, config))
    except (MetabpError, ValueError, TypeError, ArithmeticError, RuntimeError) as exc:
        raise ArtifactError(f"{path}: {kind} config {json.dumps(config)[:200]}: {exc}") from None
    problem = _bound_problem(bfn)
    if problem:
        raise ArtifactError(f"{path}: {problem}")
    bfn.meta = meta
    return bfn


def _read(path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The safetensors ``__metadata__`` and the tensors of ``path``, or an ArtifactError."""
    try:
        if not path.is_file():
            what = "is not a regular file" if path.exists() else "no such .bfn file"
            raise ArtifactError(f"{path}: {what}")
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ArtifactError(f"{path}: {size} bytes is too large for a .bfn file (at most {MAX_BYTES})")
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read the .bfn file ({exc.strerror or exc})") from None
    if len(data) > 8 and data[8:9] != b"{":  # safetensors: 8 bytes of length, then a JSON object
        raise ArtifactError(f"{path}: not a .bfn file (a .bfn file is safetensors with metabp's JSON "
                            f"header; this one starts with {data[:12]!r})")
    if len(data) < 10:  # 8 bytes of header length and at least "{}"
        raise ArtifactError(f"{path}: not a readable .bfn file (only {len(data)} bytes: truncated, or not a "
                            ".bfn file, which is safetensors with metabp's JSON header)")
    n = struct.unpack("<Q", data[:8])[0]
    if not 2 <= n <= len(data) - 8:
        raise ArtifactError(
            f"{path}: not a readable .bfn file (truncated or corrupted header: header length {n} "
            f"in a file of {len(data)} bytes)"
        )
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
        tensors = load_tensors(data)
    except Exception as exc:  # noqa: BLE001 - any parse failure of untrusted bytes is a bad file
        raise ArtifactError(
            f"{path}: not a readable .bfn file (truncated or corrupted header: {type(exc).__name__}: "
            f"{str(exc)[:200]})"
        ) from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return (metadata if isinstance(metadata, dict) else {}), tensors


def _check_header(path: Path, header: dict[str, Any], tensors: dict[str, Tensor]) -> str:
    """Format, version, kind and checksum of a parsed file; returns its kind."""
    if header.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a metabp .bfn artifact (no format={FORMAT!r} in its header)")
    if header.get("version") != VERSION:
        raise ArtifactError(
            f"{path}: .bfn version {header.get('version')!r} is not supported (this metabp reads "
            f"version {VERSION})"
        )
    kind = header.get("kind")
    if not isinstance(kind, str) or kind not in FILE_KINDS:
        raise ArtifactError(f"{path}: unknown b-function kind {kind!r}; known: {', '.join(FILE_KINDS)}")
    if header.get("sha256") != _digest(tensors):
        raise ArtifactError(f"{path}: checksum mismatch, the tensor data is corrupted")
    return kind


def _json_object(path: Path, header: dict[str, Any], field: str, *, required: bool) -> dict[str, Any]:
    raw = header.get(field)
    if raw is None and not required:
        return {}
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except (ValueError, RecursionError) as exc:
        raise ArtifactError(f"{path}: header field {field!r} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ArtifactError(f"{path}: header field {field!r} = {str(raw)[:100]!r} must be a JSON object")
    return value


# --- one check per kind: config fields and tensors, before the b-function is built ---
def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _keys(config: dict[str, Any], required: set[str], optional: set[str]) -> None:
    missing, unknown = required - set(config), set(config) - required - optional
    if missing or unknown:
        raise ConfigError(f"config fields {sorted(missing)} missing, {sorted(unknown)} unknown; "
                          f"allowed: {sorted(required | optional)}")


def _int_field(config: dict[str, Any], key: str, lo: int, hi: int, default: int) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(f"field {key!r} = {value!r}: must be an integer from {lo} to {hi}")
    return value


def _no_tensors(tensors: dict[str, Tensor]) -> None:
    if tensors:
        raise ConfigError(f"tensors {sorted(tensors)}: this kind stores no tensors")


def _check_metanet(config: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    _keys(config, {"hidden"}, {"act", "table_size"})
    hidden = _int_field(config, "hidden", 1, MetaNet.max_hidden, 1)
    _int_field(config, "table_size", *TABLE_SIZES, 16384)
    act = config.get("act", "tanh")
    if not isinstance(act, str):
        raise ConfigError(f"field 'act' = {act!r}: must be an activation name")
    get_activation(act)
    if set(tensors) != {"omega"}:
        raise ConfigError(f"tensors {sorted(tensors)}: a metanet stores exactly one tensor, 'omega'")
    omega = tensors["omega"]
    if omega.dtype not in OMEGA_DTYPES or omega.dim() != 1 or omega.numel() != 3 * hidden + 1:
        raise ConfigError(
            f"tensor 'omega' ({omega.dtype}, shape {tuple(omega.shape)}): must be a 1-D float tensor "
            f"(float16/bfloat16/float32/float64) of 3*hidden+1 = {3 * hidden + 1} values"
        )
    if not torch.isfinite(omega).all():
        raise ConfigError(f"tensor 'omega' = {omega.tolist()}: every value must be finite")


def _check_derivative(config: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    _keys(config, {"name"}, {"kwargs"})
    _no_tensors(tensors)
    name, kwargs = config["name"], config.get("kwargs", {})
    if not isinstance(name, str):
        raise ConfigError(f"field 'name' = {name!r}: must be an activation name")
    if not isinstance(kwargs, dict):
        raise ConfigError(f"field 'kwargs' = {kwargs!r}: must be an object of the activation's options")
    get_activation(name, **kwargs)  # checks the option names and values


def _check_scaled(config: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    _keys(config, {"c"}, set())
    _no_tensors(tensors)
    if not _is_real(config["c"]) or not math.isfinite(config["c"]):
        raise ConfigError(f"field 'c' = {config['c']!r}: must be a finite number")


def _check_per_site(config: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    _keys(config, {"sites"}, set())
    sites = config["sites"]
    if not isinstance(sites, list) or not 1 <= len(sites) <= MAX_SITES:
        raise ConfigError(f"field 'sites': must be a list of 1 to {MAX_SITES} {{site, kind, config}} objects")
    names = [entry.get("site") if isinstance(entry, dict) else None for entry in sites]
    for j, entry in enumerate(sites):
        if not isinstance(entry, dict) or set(entry) != {"site", "kind", "config"}:
            raise ConfigError(f"sites[{j}] = {str(entry)[:100]}: must be an object with exactly the fields "
                              "site, kind, config")
        if not isinstance(entry["site"], str) or not entry["site"] or names.count(entry["site"]) > 1:
            raise ConfigError(f"sites[{j}].site = {entry['site']!r}: must be a non-empty name, "
                              "each site once")
        kind = entry["kind"] if isinstance(entry["kind"], str) else None  # a list is no key of KINDS
        if kind not in KINDS or not isinstance(entry["config"], dict):
            raise ConfigError(f"sites[{j}]: kind {entry['kind']!r} with config {str(entry['config'])[:80]}; "
                              f"allowed: a kind of {', '.join(KINDS)} with an object config")
        _CHECKS[kind](entry["config"], site_tensors(tensors, j))
    prefixes = tuple(f"{j}." for j in range(len(sites)))
    stray = sorted(n for n in tensors if not n.startswith(prefixes))
    if stray:
        raise ConfigError(f"tensors {stray}: belong to no site (names must be '<site index>.<name>')")


_CHECKS = {"metanet": _check_metanet, "derivative": _check_derivative, "scaled": _check_scaled,
           "per_site": _check_per_site}


def _bound_problem(bfn: BFunction | PerSite) -> str | None:
    """:func:`bound_problem` of ``bfn``, or of each site's b-function (the first problem)."""
    if not isinstance(bfn, PerSite):
        return bound_problem(bfn)
    problems = (bound_problem(g) for g in bfn.values())
    return next((f"site {site!r}: {p}" for site, p in zip(bfn, problems, strict=True) if p), None)


def bound_problem(bfn: BFunction) -> str | None:
    """Why ``bfn`` could make non-finite gradients (``|g| > G_LIMIT`` or non-finite ``g`` in
    float32 somewhere), or None. MetaNet is checked on the table the backward reads (it holds its
    end values beyond the table), Scaled by ``|c|`` (every activation's ``|sigma'| <= 1.2``),
    Derivative at :data:`_PROBE` and, for softplus, by its threshold (its only regime where the
    backward kernel can overflow between probe points)."""
    try:
        if isinstance(bfn, MetaNet):
            values, what = bfn.table.values, "its float32 table"
        elif isinstance(bfn, Derivative):
            threshold = bfn.of.kwargs.get("threshold", 20.0) if bfn.of.name == "softplus" else 0.0
            if threshold > SOFTPLUS_THRESHOLD:
                return (f"{bfn!r}: threshold={threshold!r}; allowed: <= {SOFTPLUS_THRESHOLD} (below its "
                        "threshold softplus' derivative computes exp(beta * z), which overflows float32 "
                        "past 88.7 and makes NaN)")
            z = _PROBE.clone()
            values, what = bfn.of.backward(torch.ones_like(z), z, bfn.of.forward(z)), "z in float32"
        elif isinstance(bfn, Scaled):
            values, what = torch.tensor([bfn.c], dtype=torch.float64), "c"
        else:
            return None
    except (RuntimeError, ValueError, TypeError, ArithmeticError) as exc:
        return f"{bfn!r} cannot be evaluated ({exc})"
    worst = float(values.abs().max()) if values.numel() else 0.0
    if not math.isfinite(worst) or worst > G_LIMIT:
        return (f"{bfn!r} reaches |g| = {worst:.3g} on {what}; allowed: finite |g| <= {G_LIMIT:g} "
                "(larger values overflow float32 gradients)")
    return None


__all__ = ["save", "load", "bound_problem", "G_LIMIT", "FORMAT", "VERSION"]
