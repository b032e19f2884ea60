"""metabp/_artifact.py: .bfn round trips, and each kind of bad file has its own clear error."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import metabp
from metabp import ArtifactError, Derivative, MetaNet, Scaled


@pytest.mark.parametrize("bfn", [MetaNet(3, "sigmoid", seed=4), Derivative("leaky_relu", negative_slope=0.2),
                                 Scaled(0.25)], ids=lambda b: b.kind)
def test_round_trip(tmp_path: Path, bfn):
    path = metabp.save(bfn, tmp_path / "g.bfn", meta={"study": "s1", "aulc": 0.42})
    back = metabp.load(path)
    assert type(back) is type(bfn)
    assert back.meta == {"study": "s1", "aulc": 0.42}
    z = torch.linspace(-3, 3, 61)
    assert torch.equal(back(z, "relu"), bfn(z, "relu"))
    if isinstance(bfn, MetaNet):
        assert torch.equal(back.omega, bfn.omega)
        assert (back.hidden, back.act) == (bfn.hidden, bfn.act)


def test_meta_of_the_bfn_is_kept_and_merged(tmp_path: Path):
    g = MetaNet(1)
    g.meta = {"study": "quick"}
    back = metabp.load(metabp.save(g, tmp_path / "g.bfn", meta={"score": 1.5}))
    assert back.meta == {"study": "quick", "score": 1.5}


def test_meta_must_be_json(tmp_path: Path):
    with pytest.raises(ArtifactError, match="JSON-serialisable"):
        metabp.save(MetaNet(1), tmp_path / "g.bfn", meta={"x": object()})


def test_missing_file(tmp_path: Path):
    with pytest.raises(ArtifactError, match=r"nope\.bfn: no such \.bfn file"):
        metabp.load(tmp_path / "nope.bfn")


def test_truncated_file(tmp_path: Path):
    path = metabp.save(MetaNet(2), tmp_path / "g.bfn")
    data = path.read_bytes()
    for cut in (4, 20, len(data) - 3):
        (tmp_path / "cut.bfn").write_bytes(data[:cut])
        with pytest.raises(ArtifactError, match=r"cut\.bfn: not a readable \.bfn file"):
            metabp.load(tmp_path / "cut.bfn")


def test_corrupted_header(tmp_path: Path):
    path = metabp.save(MetaNet(2), tmp_path / "g.bfn")
    data = bytearray(path.read_bytes())
    data[10] = ord("}")  # break the JSON header
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="truncated or corrupted header"):
        metabp.load(path)


def test_corrupted_tensor_bytes_fail_the_checksum(tmp_path: Path):
    path = metabp.save(MetaNet(2), tmp_path / "g.bfn")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x40  # flip a bit of the last omega value
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        metabp.load(path)


def _rewrite_header(path: Path, **changes: str) -> None:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header["__metadata__"].update(changes)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])


def test_unknown_kind(tmp_path: Path):
    path = metabp.save(MetaNet(1), tmp_path / "g.bfn")
    _rewrite_header(path, kind="spline")
    with pytest.raises(ArtifactError, match="unknown b-function kind 'spline'; known: metanet"):
        metabp.load(path)


def test_newer_version(tmp_path: Path):
    path = metabp.save(MetaNet(1), tmp_path / "g.bfn")
    _rewrite_header(path, version="99")
    with pytest.raises(ArtifactError, match="version '99' is not supported"):
        metabp.load(path)


def test_shape_that_does_not_fit_the_config(tmp_path: Path):
    path = metabp.save(MetaNet(1), tmp_path / "g.bfn")
    _rewrite_header(path, config=json.dumps({"hidden": 3, "act": "tanh"}))
    with pytest.raises(ArtifactError, match=r"omega has 4 values but MetaNet\(hidden=3\) needs"):
        metabp.load(path)


def test_plain_safetensors_file_is_not_an_artifact(tmp_path: Path):
    save_file({"w": torch.zeros(3)}, str(tmp_path / "weights.bfn"))
    with pytest.raises(ArtifactError, match="not a metabp .bfn artifact"):
        metabp.load(tmp_path / "weights.bfn")


def test_pickle_file_is_refused_without_running_it(tmp_path: Path):
    import pickle

    class Boom:
        def __reduce__(self):
            return (exec, (f"open({str(tmp_path / 'pwned')!r}, 'w').write('ran')",))

    (tmp_path / "evil.bfn").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ArtifactError, match="not a readable"):
        metabp.load(tmp_path / "evil.bfn")
    assert not (tmp_path / "pwned").exists()
