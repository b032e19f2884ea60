import gzip

import numpy as np
import pytest
import torch

from metabp.exceptions import DataError
from metabp.targets import get_target, load_data, train
from metabp.targets._data_cifar10 import read_batch
from metabp.targets._data_idx import read_idx


@pytest.fixture(autouse=True)
def _no_env_data(monkeypatch, tmp_path):
    monkeypatch.delenv("METABP_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # ~/.metabp/data is empty
    monkeypatch.setattr("metabp.targets._data_idx._debian_dir", lambda: None)


def test_gaussians_fixed_sample_with_the_paper_means():
    a = load_data(get_target("gaussians-mlp3"))
    b = load_data(get_target("gaussians-mlp3"))
    assert torch.equal(a.x_train, b.x_train)
    assert a.x_train.shape == (200, 2) and a.num_classes == 2
    means = [a.x_test[a.y_test == c].mean().item() for c in (0, 1)]
    assert means[0] == pytest.approx(1.0, abs=0.1) and means[1] == pytest.approx(-1.0, abs=0.1)
    assert a.x_test[a.y_test == 0].std().item() == pytest.approx(1.0, abs=0.1)


def test_digits_split():
    d = load_data(get_target("digits-mlp"))
    assert d.x_train.shape[1:] == (64,) and len(d.y_train) + len(d.y_test) == 1797
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    assert load_data(get_target("digits-mlp", train_size=100)).x_train.shape == (100, 64)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_through_the_real_loader(idx_factory, gz):
    directory = idx_factory(n_train=40, n_test=20, gz=gz)
    raw = read_idx(directory / ("train-images-idx3-ubyte" + (".gz" if gz else "")))
    d = load_data(get_target("fashion-mlp"), data_dir=directory)
    assert d.x_train.shape == (40, 1, 28, 28) and d.x_test.shape == (20, 1, 28, 28)
    assert torch.equal(d.x_train[:, 0], torch.from_numpy(raw.astype(np.float32) / 255))
    assert d.y_train.tolist() == [i % 10 for i in range(40)]


def test_env_var_and_subfolder(idx_factory, monkeypatch):
    directory = idx_factory("root/MNIST/raw", n_train=30)
    monkeypatch.setenv("METABP_DATA", str(directory.parents[1]))
    assert len(load_data(get_target("mnist-lenet")).y_train) == 30


def test_missing_idx_files_say_what_and_where(tmp_path):
    with pytest.raises(DataError, match=r"Fashion-MNIST files not found.*train-images-idx3-ubyte\[\.gz\]"
                                        r".*--data-dir DIR.*METABP_DATA"):
        load_data(get_target("fashion-mlp"), data_dir=tmp_path / "nothing")
    with pytest.raises(DataError, match=r"MNIST files not found; looked in: .*nothing"):
        load_data(get_target("mnist-mlp"), data_dir=tmp_path / "nothing")


def test_corrupt_idx_is_named(tmp_path):
    bad = tmp_path / "x.gz"
    with gzip.open(bad, "wb") as f:
        f.write(bytes([0, 0, 0x08, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(DataError, match=r"header says shape \(9,\) but holds 2 bytes"):
        read_idx(bad)
    (tmp_path / "y").write_bytes(b"\x12\x34\x56\x78")
    with pytest.raises(DataError, match=r"is not an unsigned-byte idx file \(header 12345678\)"):
        read_idx(tmp_path / "y")


def test_cifar_batches_through_the_real_loader(cifar_root):
    d = load_data(get_target("cifar10-simplenet"), data_dir=cifar_root)
    assert d.x_train.shape == (40, 3, 32, 32) and d.x_test.shape == (8, 3, 32, 32)
    raw, labels = read_batch(cifar_root / "cifar-10-batches-py" / "test_batch")
    assert d.y_test.tolist() == labels.tolist()
    assert d.x_train.mean(dim=(0, 2, 3)).abs().max() < 1e-4  # standardised per channel


def test_missing_cifar_says_what_and_where(tmp_path):
    with pytest.raises(DataError, match=r"CIFAR-10 files not found.*cifar-10-batches-py/\{data_batch_1"
                                        r".*--data-dir DIR.*METABP_DATA"):
        train(get_target("cifar10-simplenet"), data_dir=tmp_path)


def test_bad_cifar_batch_is_named(tmp_path):
    (tmp_path / "b").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=r"is not a CIFAR-10 python batch"):
        read_batch(tmp_path / "b")


@pytest.mark.parametrize(("protocol", "old_numpy_path"), [(2, True), (2, False), (4, False)])
def test_cifar_batch_pickles_load(tmp_path, protocol, old_numpy_path):
    import pickle
    import warnings

    raw = pickle.dumps({b"data": np.arange(2 * 3072).astype(np.uint8).reshape(2, 3072), b"labels": [3, 7]},
                       protocol=protocol)
    if old_numpy_path:  # as numpy 1 wrote it; protocol 2 names globals by newline-ended text
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    (tmp_path / "b").write_bytes(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2's numpy.core shim
        x, y = read_batch(tmp_path / "b")
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [3, 7] and x.flatten()[5] == 5


def test_cifar_batch_that_would_run_code_is_refused(tmp_path):
    import pickle

    class Planted:
        def __reduce__(self):
            return (exec, (f"open({str(tmp_path / 'ran')!r}, 'w')",))

    (tmp_path / "b").write_bytes(pickle.dumps({b"data": Planted(), b"labels": [0]}))
    with pytest.raises(DataError, match=r"refusing global builtins\.exec"):
        read_batch(tmp_path / "b")
    assert not (tmp_path / "ran").exists()


@pytest.mark.slow
def test_mnist1d_generated_offline():
    d = load_data(get_target("mnist1d-mlp"))
    assert d.x_train.shape == (4000, 1, 40) and d.x_test.shape == (1000, 1, 40)
    assert load_data(get_target("mnist1d-cnn")) is d  # cached per process
