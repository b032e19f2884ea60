"""metabp/_artifact.py: .bfn round trips, and each kind of bad file has its own clear error."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import metabp
from metabp import Activation, ArtifactError, Derivative, MetaNet, Scaled


@pytest.mark.parametrize(
    "bfn",
    [MetaNet(3, "sigmoid", seed=4), Derivative("leaky_relu", negative_slope=0.2), Scaled(0.25)],
    ids=lambda b: b.kind,
)
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


def test_a_tiny_file_names_its_size(tmp_path: Path):
    (tmp_path / "t.bfn").write_text("hello\n")
    with pytest.raises(ArtifactError, match=r"t\.bfn: not a readable \.bfn file \(only 6 bytes: truncated"):
        metabp.load(tmp_path / "t.bfn")


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
    with pytest.raises(
        ArtifactError,
        match=r"g\.bfn: metanet config .*tensor 'omega' .*shape \(4,\)\): must be a "
        r"1-D float tensor .* of 3\*hidden\+1 = 10 values",
    ):
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
    with pytest.raises(ArtifactError, match=r"evil\.bfn: not a \.bfn file"):
        metabp.load(tmp_path / "evil.bfn")
    assert not (tmp_path / "pwned").exists()


# --- every field of a file is checked when it loads ---
def _write(
    path: Path, kind: str, config, tensors: dict | None = None, meta: str = "{}", **header: str
) -> Path:
    """A .bfn with any config/tensors and a correct checksum, so only the semantic checks can refuse it."""
    from metabp._artifact import _digest

    tensors = tensors or {}
    fields = {
        "format": "metabp.bfn",
        "version": "1",
        "kind": kind,
        "config": config if isinstance(config, str) else json.dumps(config),
        "meta": meta,
        "sha256": _digest(tensors),
        **header,
    }
    save_file(tensors, str(path), metadata=fields)
    return path


OMEGA = {"omega": torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)}
BAD = [
    (
        "metanet",
        '{"hidden": 1, "table_size": Infinity}',
        OMEGA,
        r"'table_size' = inf: must be an integer from 16 to 32768",
    ),
    (
        "metanet",
        {"hidden": 1, "table_size": 10**9},
        OMEGA,
        r"'table_size' = 1000000000: must be an integer from 16",
    ),
    ("metanet", {"hidden": 1, "table_size": 1e4}, OMEGA, r"'table_size' = 10000.0: must be an integer"),
    ("metanet", {"hidden": 1, "table_size": -5}, OMEGA, r"'table_size' = -5: must be an integer"),
    ("metanet", {"hidden": 1, "table_size": True}, OMEGA, r"'table_size' = True: must be an integer"),
    ("metanet", {"hidden": 1, "table_size": "big"}, OMEGA, r"'table_size' = 'big': must be an integer"),
    ("metanet", {"hidden": True}, OMEGA, r"'hidden' = True: must be an integer from 1 to 1024"),
    ("metanet", {"hidden": 10**6}, OMEGA, r"'hidden' = 1000000: must be an integer from 1 to 1024"),
    ("metanet", {"hidden": 1, "act": 3}, OMEGA, r"'act' = 3: must be an activation name"),
    ("metanet", {"hidden": 1, "act": "bogus"}, OMEGA, r"activation='bogus' is not known; choose one of relu"),
    (
        "metanet",
        {"hidden": 1, "colour": 1},
        OMEGA,
        r"\['colour'\] unknown; allowed: \['act', 'hidden', 'table_size'\]",
    ),
    ("metanet", {"act": "tanh"}, OMEGA, r"\['hidden'\] missing"),
    ("metanet", ["hidden", 1], OMEGA, r"header field 'config' = .* must be a JSON object"),
    ("metanet", "{not json", OMEGA, r"header field 'config' is not valid JSON"),
    (
        "metanet",
        {"hidden": 1},
        {"omega": torch.tensor(1.0, dtype=torch.float64)},
        r"tensor 'omega' \(torch.float64, shape \(\)\): must be a 1-D float tensor .* of 3\*hidden\+1 = 4",
    ),
    ("metanet", {"hidden": 1}, {"omega": torch.tensor([1, 0, 1, 0])}, r"tensor 'omega' \(torch.int64"),
    (
        "metanet",
        {"hidden": 1},
        {"omega": torch.ones(4).to(torch.float8_e5m2)},
        r"tensor .omega. \(torch.float8_e5m2, shape \(4,\)\): must be a 1-D float tensor \(float16/bfloat16",
    ),
    ("metanet", {"hidden": 1}, {}, r"tensors \[\]: a metanet stores exactly one tensor, 'omega'"),
    ("metanet", {"hidden": 1}, {**OMEGA, "extra": torch.zeros(2)}, r"tensors \['extra', 'omega'\]"),
    (
        "metanet",
        {"hidden": 1},
        {"omega": torch.tensor([1.0, float("nan"), 1.0, 0.0])},
        r"tensor 'omega' = \[1.0, nan, 1.0, 0.0\]: every value must be finite",
    ),
    (
        "metanet",
        {"hidden": 1},
        {"omega": torch.tensor([1.0, 0.0, 1e30, 0.0], dtype=torch.float64)},
        r"reaches \|g\| = 1e\+30 on its float32 table; allowed: finite \|g\| <= 1e\+06",
    ),
    (
        "metanet",
        {"hidden": 1},
        {"omega": torch.tensor([1.0, 0.0, 1e300, 0.0], dtype=torch.float64)},
        r"reach(es \|g\| =)? inf",
    ),
    ("derivative", {"name": "relu", "kwargs": {"alpha": 1.0}}, None, r"alpha=1\.0"),
    ("derivative", {"name": "elu", "kwargs": {"negative_slope": 0.1}}, None, r"negative_slope=0\.1"),
    ("derivative", '{"name": "leaky_relu", "kwargs": {"negative_slope": NaN}}', None, r"negative_slope=nan"),
    ("derivative", '{"name": "elu", "kwargs": {"alpha": NaN}}', None, r"alpha=nan"),
    ("derivative", {"name": "elu", "kwargs": {"alpha": "1"}}, None, r"alpha='1'"),
    (
        "derivative",
        {"name": "leaky_relu", "kwargs": {"negative_slope": 1e30}},
        None,
        r"reaches \|g\| = 1e\+30 on z in float32; allowed: finite \|g\| <= 1e\+06",
    ),
    ("derivative", {"name": "gelu", "kwargs": {"approximate": "bogus"}}, None, r"approximate='bogus'"),
    (
        "derivative",
        {"name": "gelu", "kwargs": ["tanh"]},
        None,
        r"field 'kwargs' = \['tanh'\]: must be an object",
    ),
    ("derivative", {"name": ["relu"]}, None, r"field 'name' = \['relu'\]: must be an activation name"),
    ("derivative", {"name": "relu"}, OMEGA, r"tensors \['omega'\]: this kind stores no tensors"),
    (
        "derivative",
        {"name": "softplus", "kwargs": {"beta": 42.0, "threshold": 90.0}},
        None,
        r"threshold=90.0; allowed: <= 88.0 \(below its threshold softplus' derivative computes exp",
    ),
    ("scaled", '{"c": NaN}', None, r"field 'c' = nan: must be a finite number"),
    ("scaled", {"c": True}, None, r"field 'c' = True: must be a finite number"),
    ("scaled", {"c": "2"}, None, r"field 'c' = '2': must be a finite number"),
    ("scaled", {"c": 1e10}, None, r"reaches \|g\| = 1e\+10 on c; allowed: finite \|g\| <= 1e\+06"),
    ("scaled", {}, None, r"\['c'\] missing"),
]


@pytest.mark.parametrize(
    "kind, config, tensors, message", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)]
)
def test_bad_field_is_named(tmp_path: Path, kind, config, tensors, message):
    path = _write(tmp_path / "bad.bfn", kind, config, tensors)
    with pytest.raises(ArtifactError, match=r"bad\.bfn: .*" + message):
        metabp.load(path)


@pytest.mark.parametrize("meta", ["[1, 2]", '"study"', "3", "null"])
def test_meta_must_be_an_object(tmp_path: Path, meta):
    path = _write(tmp_path / "m.bfn", "scaled", {"c": 0.5}, meta=meta)
    with pytest.raises(ArtifactError, match=r"m\.bfn: header field 'meta' = .* must be a JSON object"):
        metabp.load(path)


def test_loaded_meta_saves_again(tmp_path: Path):
    path = _write(tmp_path / "m.bfn", "scaled", {"c": 0.5}, meta='{"aulc": 0.3}')
    back = metabp.load(metabp.save(metabp.load(path), tmp_path / "again.bfn"))
    assert back.meta == {"aulc": 0.3} and back.c == 0.5


def test_huge_header_length(tmp_path: Path):
    path = tmp_path / "h.bfn"
    path.write_bytes(struct.pack("<Q", 2**63) + b"{}" * 8)
    with pytest.raises(
        ArtifactError, match=r"h\.bfn: not a readable \.bfn file .*header length 9223372036854775808"
    ):
        metabp.load(path)


def test_file_too_large_is_not_read(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("metabp._artifact.MAX_BYTES", 100)
    path = metabp.save(MetaNet(4), tmp_path / "g.bfn")
    with pytest.raises(
        ArtifactError, match=r"g\.bfn: \d+ bytes is too large for a \.bfn file \(at most 100\)"
    ):
        metabp.load(path)


@pytest.mark.parametrize("path", [None, 3, True, "", ".", "a\x00b", b"g.bfn"])
def test_path_must_be_a_path(path):
    with pytest.raises(ArtifactError, match=r"load\(path=.*\): path must be a non-empty str or os.PathLike"):
        metabp.load(path)
    with pytest.raises(ArtifactError, match=r"save\(path=.*\): path must be a non-empty str or os.PathLike"):
        metabp.save(Scaled(1.0), path)


# --- save writes whole files or none ---
def test_failed_save_keeps_the_existing_file(tmp_path: Path):
    path = metabp.save(Scaled(0.5), tmp_path / "g.bfn")
    before = path.read_bytes()
    with pytest.raises(ArtifactError, match="JSON-serialisable"):
        metabp.save(Scaled(2.0), path, meta={"x": {1, 2}})
    too_big = MetaNet(omega=[1.0, 0.0, 1e30, 0.0])
    with pytest.raises(ArtifactError, match=r"save\(MetaNet.*reaches \|g\| = 1e\+30"):
        metabp.save(too_big, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.bfn"]  # no temporary file left


def test_save_replaces_the_file_whole(tmp_path: Path):
    path = metabp.save(MetaNet(2, seed=1), tmp_path / "g.bfn")
    metabp.save(Scaled(0.5), path)
    assert metabp.load(path).c == 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.bfn"]


def test_unwritable_path_is_named(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArtifactError, match=r"file/g\.bfn: cannot write the \.bfn file"):
        metabp.save(Scaled(0.5), tmp_path / "file" / "g.bfn")
    (tmp_path / "dir.bfn").mkdir()
    with pytest.raises(ArtifactError, match=r"dir\.bfn: exists and is not a regular file"):
        metabp.save(Scaled(0.5), tmp_path / "dir.bfn")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.bfn", "file"]


@pytest.mark.parametrize("meta", [[1, 2], "study", torch.tensor([]), torch.ones(2)])
def test_save_refuses_meta_that_is_not_a_dict(tmp_path: Path, meta):
    g = Scaled(0.5)
    with pytest.raises(ArtifactError, match=r"save\(meta=.*\): metadata must be a dict"):
        metabp.save(g, tmp_path / "g.bfn", meta=meta)
    g.meta = meta
    with pytest.raises(ArtifactError, match=r"save\(bfn\.meta=.*\): metadata must be a dict"):
        metabp.save(g, tmp_path / "g.bfn")


def test_save_refuses_what_load_would_refuse(tmp_path: Path):
    with pytest.raises(ArtifactError, match=r"derivative with config .* would not load \(.*beta"):
        g = Derivative("relu")
        g.of = Activation("relu", {"beta": 2.0})  # past get_activation's check
        metabp.save(g, tmp_path / "g.bfn")
    with pytest.raises(ArtifactError, match=r"save\(bfn=3\): only b-functions"):
        metabp.save(3, tmp_path / "g.bfn")


def test_save_never_replaces_what_is_not_a_regular_file(tmp_path: Path):
    with pytest.raises(ArtifactError, match=r"/dev/null: exists and is not a regular file; not replacing it"):
        metabp.save(Scaled(0.5), "/dev/null")
    assert Path("/dev/null").is_char_device()


def test_saved_file_mode_follows_the_umask(tmp_path: Path):
    import os

    old = os.umask(0o022)
    try:
        path = metabp.save(Scaled(0.5), tmp_path / "g.bfn")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_folder_is_not_a_file(tmp_path: Path):
    with pytest.raises(ArtifactError, match=r"d\.bfn: is not a regular file"):
        metabp.load((tmp_path / "d.bfn").mkdir() or tmp_path / "d.bfn")


def test_softplus_threshold_bound_is_tight():
    """Found by a longer fuzz run: between probe points, threshold 90 makes NaN; 88 never does."""
    z = torch.linspace(2.10, 2.15, 11)
    assert torch.isnan(Derivative("softplus", beta=42.0, threshold=90.0)(z)).any()
    z = torch.linspace(-3, 3, 600001) * 30
    assert torch.isfinite(Derivative("softplus", beta=1.0, threshold=88.0)(z)).all()


def test_text_file_is_not_a_bfn_file(tmp_path: Path):
    path = tmp_path / "notes.bfn"
    path.write_text("hello world, this is text\n")
    with pytest.raises(ArtifactError, match=r"notes\.bfn: not a \.bfn file .*starts with b'hello world,'"):
        metabp.load(path)
