"""Fuzzing ``metabp.load`` with corrupted and mutated ``.bfn`` files.

Every generated file either loads, and then a small patched model gets finite gradients from
finite inputs and the b-function saves again, or is refused with a ``MetabpError``. Nothing else
may escape. Four generators: byte flips, truncation/extension, header JSON mutations, and tensor
and config mutations with a re-computed checksum (so they get past the checksum and reach the
semantic checks). Cases: 100 + 40 + 100 + 100 + 60 = 400, fixed by ``derandomize=True``.
"""

from __future__ import annotations

import json
import math
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import nn

import metabp
from metabp._artifact import _digest
from metabp.exceptions import MetabpError

torch.set_num_threads(1)
FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

BASES = {
    "metanet-tanh": metabp.MetaNet(1, "tanh", omega=[1.5, -0.5, 2.0, 0.25]),
    "metanet-relu": metabp.MetaNet(2, "relu", seed=3),
    "derivative": metabp.Derivative("leaky_relu", negative_slope=0.2),
    "scaled": metabp.Scaled(0.5),
}


@pytest.fixture(scope="module")
def work() -> Path:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def _bytes(name: str) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        return metabp.save(BASES[name], Path(d) / "g.bfn", meta={"study": "fuzz", "aulc": 0.5}).read_bytes()


BASE_BYTES = {name: _bytes(name) for name in BASES}


def _split(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _join(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ELU(),
                         nn.Linear(8, 2))


X = torch.cat([torch.randn(32, 3, generator=torch.Generator().manual_seed(1)) * 3,
               torch.tensor([[100.0, -100.0, 50.0], [-1e3, 1e3, 0.0]])])


def check_file(path: Path, data: bytes, note=event) -> str:
    """Write ``data`` to ``path`` and load it: a MetabpError, or a b-function with finite gradients."""
    path.write_bytes(data)
    try:
        g = metabp.load(path)
    except MetabpError as exc:
        note("refused: " + str(exc).split('.bfn: ', 1)[-1][:50])
        return "refused"
    note(f"loaded: {g.kind}")
    assert isinstance(g.meta, dict)
    model = _model()
    metabp.patch(model, g)
    model(X).square().sum().backward()
    for name, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), f"{g!r} from {path.name}: non-finite gradient of {name}"
    assert type(metabp.load(metabp.save(g, path.with_suffix(".again.bfn")))) is type(g)
    return "loaded"


@settings(FUZZ, max_examples=100)
@given(base=st.sampled_from(sorted(BASES)),
       flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=6))
def test_byte_flips(work, base, flips):
    data = bytearray(BASE_BYTES[base])
    for pos, xor in flips:
        data[pos % len(data)] ^= xor
    check_file(work / "flip.bfn", bytes(data))


@settings(FUZZ, max_examples=40)
@given(base=st.sampled_from(sorted(BASES)), cut=st.integers(0, 10**6), tail=st.binary(max_size=64))
def test_truncated_or_extended(work, base, cut, tail):
    data = BASE_BYTES[base]
    check_file(work / "cut.bfn", data[: cut % (len(data) + 1)] + tail)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
METADATA_FIELDS = ["format", "version", "kind", "config", "meta", "sha256"]


@settings(FUZZ, max_examples=100)
@given(base=st.sampled_from(sorted(BASES)), data=st.data())
def test_header_json_mutations(work, base, data):
    header, body = _split(BASE_BYTES[base])
    how = data.draw(st.sampled_from(["metadata-field", "metadata-json", "drop-field", "tensor-entry",
                                     "header-value", "header-length"]))
    meta = header["__metadata__"]
    if how == "metadata-field":  # a field replaced by any string
        meta[data.draw(st.sampled_from(METADATA_FIELDS))] = data.draw(st.text(max_size=40))
    elif how == "metadata-json":  # config/meta replaced by any JSON text (NaN, huge ints, nesting)
        meta[data.draw(st.sampled_from(["config", "meta"]))] = json.dumps(data.draw(JSON))
    elif how == "drop-field":
        meta.pop(data.draw(st.sampled_from(METADATA_FIELDS)))
    elif how == "tensor-entry" and len(header) > 1:  # dtype, shape or offsets of a tensor changed
        entry = header["omega"]
        key = data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        entry[key] = data.draw(JSON | st.sampled_from(["F32", "F16", "I64", "BOOL", "U8", "F8_E4M3"]))
    elif how == "header-value":  # __metadata__ itself replaced
        header["__metadata__"] = data.draw(JSON)
    raw = _join(header, body)
    if how == "header-length":
        raw = struct.pack("<Q", data.draw(st.integers(0, 2**64 - 1))) + raw[8:]
    check_file(work / "header.bfn", raw)


def _with_checksum(kind: str, config: object, tensors: dict, meta: str = "{}") -> bytes:
    """A .bfn whose sha256 matches its tensors, so only the semantic checks can refuse it."""
    fields = {"format": "metabp.bfn", "version": "1", "kind": kind,
              "config": json.dumps(config), "meta": meta, "sha256": _digest(tensors)}
    with tempfile.TemporaryDirectory() as d:
        save_file(tensors, str(Path(d) / "t.bfn"), metadata=fields)
        return (Path(d) / "t.bfn").read_bytes()


DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.float8_e5m2,
          torch.complex64]
VALUES = st.floats(width=64) | st.sampled_from([0.0, 1e4, -1e5, 1e6, 1e30, 1e300, 3e38, 65504.0, 1e-300])
NUMBERS = (st.integers(-(2**40), 2**40) | st.floats() | st.booleans() | st.none() | st.text(max_size=6)
           | st.sampled_from([16, 1024, 16384, 32768, 32769, 10**9, 2, 3, -1, 0, 1]))


@st.composite
def metanet_files(draw) -> bytes:
    hidden = draw(st.integers(1, 3))
    n = draw(st.sampled_from([3 * hidden + 1] * 12 + [0, 1, 3 * hidden, 3 * hidden + 2]))
    shape = draw(st.sampled_from([(n,)] * 12 + [(), (1, n), (n, 1)]))
    numel = math.prod(shape)
    values = draw(st.lists(st.floats(-5, 5) | st.floats(-5, 5) | VALUES, min_size=numel, max_size=numel))
    dtype = draw(st.sampled_from([torch.float64] * 4 + DTYPES))
    omega = torch.tensor(values, dtype=torch.float64).reshape(shape).to(dtype)
    config = {"hidden": hidden, "act": draw(st.sampled_from(["tanh", "relu", "sigmoid", "elu", "gelu", "x"]))}
    if draw(st.integers(0, 3)) == 0:
        config[draw(st.sampled_from(["hidden", "table_size", "act", "other"]))] = draw(NUMBERS)
    return _with_checksum("metanet", config, {"omega": omega}, meta=draw(st.sampled_from(
        ['{"aulc": 1.0}'] * 6 + ["[]", '"x"', "1", '{"a": NaN}'])))


@st.composite
def derivative_files(draw) -> bytes:
    name = draw(st.sampled_from(["leaky_relu", "elu", "gelu", "softplus", "relu", "tanh", "nope"]))
    keys = st.sampled_from(["negative_slope", "alpha", "beta", "threshold", "approximate", "inplace"])
    values = NUMBERS | VALUES | st.floats(-3, 3) | st.sampled_from(["tanh", "none"])
    kwargs = draw(st.dictionaries(keys, values, max_size=2))
    tensors = draw(st.sampled_from([{}] * 6 + [{"omega": torch.zeros(4)}]))
    return _with_checksum("derivative", {"name": name, "kwargs": kwargs}, tensors)


@st.composite
def scaled_files(draw) -> bytes:
    c = draw(NUMBERS | VALUES | st.floats(-1e7, 1e7))
    config = draw(st.sampled_from([{"c": c}] * 6 + [{}, {"c": 1, "d": 2}]))
    return _with_checksum("scaled", config, {})


@settings(FUZZ, max_examples=100)
@given(data=st.one_of(metanet_files(), metanet_files(), derivative_files(), scaled_files()))
def test_semantic_mutations_with_valid_checksum(work, data):
    check_file(work / "semantic.bfn", data)


ACTS = ["tanh", "relu", "sigmoid", "elu", "gelu", "silu", "softplus", "leaky_relu", "linear"]
OPTIONS = {"leaky_relu": ["negative_slope"], "elu": ["alpha"], "softplus": ["beta", "threshold"]}
ANY_FLOAT = st.floats(-5, 5) | st.floats(-1e7, 1e7) | st.floats(width=32) | VALUES


@st.composite
def well_formed_files(draw) -> bytes:
    """Files of the right structure with any values: what decides is whether g stays bounded."""
    kind = draw(st.sampled_from(["metanet", "metanet", "derivative", "scaled"]))
    if kind == "scaled":
        return _with_checksum("scaled", {"c": draw(ANY_FLOAT)}, {})
    if kind == "derivative":
        name = draw(st.sampled_from(sorted(OPTIONS)))
        kwargs = {k: draw(ANY_FLOAT | st.floats(80, 100)) for k in OPTIONS[name]}
        return _with_checksum("derivative", {"name": name, "kwargs": kwargs}, {})
    hidden = draw(st.integers(1, 3))
    omega = torch.tensor(draw(st.lists(ANY_FLOAT, min_size=3 * hidden + 1, max_size=3 * hidden + 1)),
                         dtype=torch.float64).to(draw(st.sampled_from(DTYPES[:4])))
    config = {"hidden": hidden, "act": draw(st.sampled_from(ACTS)),
              "table_size": draw(st.sampled_from([16, 16384]))}
    return _with_checksum("metanet", config, {"omega": omega})


@settings(FUZZ, max_examples=60)
@given(data=well_formed_files())
def test_any_values_load_bounded_or_are_refused(work, data):
    check_file(work / "values.bfn", data)


def test_the_generators_reach_both_outcomes(work):
    """The property tests above are only meaningful if some mutated files load and some don't."""
    files = {"a.bfn": _with_checksum("metanet", {"hidden": 1}, {"omega": torch.ones(4)}),
             "b.bfn": _with_checksum("scaled", {"c": 1e30}, {})}
    outcomes = {check_file(work / name, data, note=print) for name, data in files.items()}
    assert outcomes == {"loaded", "refused"}


@pytest.mark.parametrize("g", [metabp.Scaled(-0.999e6), metabp.MetaNet(omega=[0.0, 0.0, 0.0, 0.999e6]),
                               metabp.MetaNet(1, "relu", omega=[1.0, 0.0, 0.999e6 / 64, 0.0]),
                               metabp.Derivative("leaky_relu", negative_slope=-0.999e6)], ids=repr)
def test_at_the_bound_gradients_stay_finite(work, g):
    """Just inside G_LIMIT, on three patched layers in a row with inputs up to 1e3."""
    path = metabp.save(g, work / "edge.bfn")
    assert check_file(path, path.read_bytes(), note=print) == "loaded"


def test_the_bound_is_needed(work):
    """A b-function the constructors accept but past G_LIMIT makes inf/NaN gradients on this model,
    so the loader's bound, not luck, keeps loaded files finite."""
    g = metabp.Scaled(1e20)
    model = _model()
    metabp.patch(model, g)
    model(X).square().sum().backward()
    assert not all(torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.raises(metabp.ArtifactError, match=r"reaches \|g\| = 1e\+20 on c; allowed: finite"):
        metabp.save(g, work / "big.bfn")
    data = _with_checksum("scaled", {"c": 1e20}, {})
    assert check_file(work / "big.bfn", data, note=print) == "refused"
