"""fashion-simplenet, the paper's SimpleNet protocol on Fashion-MNIST padded to 32x32: its data,
its copies batched (grouped convolutions, batch norm per copy), and the amp / channels_last options."""

from pathlib import Path

import pytest
import torch
from torch import nn

import metabp
from metabp.exceptions import ConfigError, DataError
from metabp.targets import build_model, get_target, load_data, train, train_many

SMALL = {"width": 0.0625, "epochs": 2, "batch_size": 16}  # channels 4, 8, ..., 128: seconds on a CPU
CANDIDATES = [None, metabp.MetaNet(hidden=1, act="tanh", seed=2), metabp.Derivative("tanh")]
SEEDS = [0, 1, 1]


@pytest.fixture
def fashion_dir(idx_factory):
    return idx_factory("fashion", n_train=64, n_test=32)


def _close(a, b, tol=1e-4):
    assert a.diverged == b.diverged and len(a.step_losses) == len(b.step_losses)
    assert a.step_losses == pytest.approx(b.step_losses, rel=tol, abs=tol)
    assert a.aulc == pytest.approx(b.aulc, rel=tol, abs=tol)


def test_the_preset_is_the_papers_protocol():
    spec = get_target("fashion-simplenet")
    assert (spec.dataset, spec.network, spec.optimizer, spec.lr, spec.epochs, spec.batch_size,
            spec.where) == ("fashion32", "simplenet", "adadelta", 0.01, 5, 128, "act4")
    assert spec.in_shape == (1, 32, 32) and spec.amp is None and spec.channels_last is False
    model = build_model(spec)
    assert type(model) is nn.Sequential and isinstance(model.act4, nn.ReLU)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


def test_fashion32_is_fashion_padded_with_zeros(fashion_dir):
    plain = load_data(get_target("fashion-lenet"), fashion_dir)
    padded = load_data(get_target("fashion-simplenet"), fashion_dir)
    assert padded.x_train.shape == (64, 1, 32, 32) and padded.x_test.shape == (32, 1, 32, 32)
    assert torch.equal(padded.x_train[..., 2:30, 2:30], plain.x_train)
    assert torch.equal(padded.x_test[..., 2:30, 2:30], plain.x_test)
    assert padded.x_train.sum() == plain.x_train.sum()  # the border is zero
    assert torch.equal(padded.y_train, plain.y_train) and padded.num_classes == 10


def test_real_fashion_mnist_pads_to_32(tmp_path):
    try:
        data = load_data(get_target("fashion-simplenet"), tmp_path)
    except DataError:
        pytest.skip("Fashion-MNIST's idx files are not on this machine (apt-get install "
                    "dataset-fashion-mnist, or METABP_DATA)")
    assert data.x_train.shape == (60000, 1, 32, 32) and data.x_test.shape == (10000, 1, 32, 32)
    assert data.x_train[..., :2, :].abs().sum() == 0 and data.x_train.max() == 1.0


@pytest.mark.parametrize("options", [{}, {"channels_last": True}, {"amp": "bf16"}],
                         ids=["float32", "channels-last", "bf16"])
def test_batched_simplenet_equals_each_copy_trained_alone(fashion_dir, options):
    spec = get_target("fashion-simplenet", **SMALL, **options)
    many = train_many(spec, CANDIDATES, seed=SEEDS, data_dir=fashion_dir)
    for g, s, run in zip(CANDIDATES, SEEDS, many, strict=True):
        single = train(spec, g, seed=s, data_dir=fashion_dir)
        _close(run, single, tol=2e-2 if spec.amp else 1e-4)  # bf16: 8 bits of mantissa
        assert run.test_accuracy == pytest.approx(single.test_accuracy, abs=1 / 32)
    assert many[1].step_losses != many[2].step_losses


def test_batched_simplenet_keeps_batch_norm_per_copy():
    from metabp.targets._many import batched_model

    spec = get_target("fashion-simplenet", width=0.0625)
    net = batched_model(spec, [None, None], None, [0, 1])
    assert net.bn1.running_mean.shape == (2 * 4,) and net.bn1.weight.shape == (2, 4)
    x = torch.rand(8, 1, 32, 32)
    out = net(x)
    for k, seed in enumerate((0, 1)):
        alone = build_model(spec, seed)
        torch.testing.assert_close(out[k], alone(x), rtol=1e-4, atol=1e-5)
        for name in ("bn1", "bn9"):
            mine, own = getattr(net, name), getattr(alone, name)
            C = len(own.running_mean)
            torch.testing.assert_close(mine.running_mean[C * k: C * (k + 1)], own.running_mean)
            torch.testing.assert_close(mine.running_var[C * k: C * (k + 1)], own.running_var)


def test_channels_last_stacks_grouped_conv_weights_channels_last():
    from metabp.targets._many import batched_model

    spec = get_target("fashion-simplenet", width=0.0625, channels_last=True)
    assert build_model(spec).conv2.weight.is_contiguous(memory_format=torch.channels_last)
    w = batched_model(spec, [None] * 3, None, [0, 1, 2]).conv2.weight
    assert w.reshape(-1, *w.shape[2:]).is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(w, torch.stack([build_model(spec, s).conv2.weight for s in (0, 1, 2)]))


@pytest.mark.parametrize("bfn", [None, metabp.MetaNet(hidden=1, act="tanh", seed=2)], ids=["bp", "metanet"])
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_on_cpu_gives_the_float32_aulc_within_its_rounding(fashion_dir, bfn, amp):
    spec = get_target("fashion-simplenet", **SMALL)
    full = train(spec, bfn, seed=0, data_dir=fashion_dir)
    half = train(get_target(spec, amp=amp), bfn, seed=0, data_dir=fashion_dir)
    assert half.step_losses != full.step_losses and not half.diverged
    assert half.aulc == pytest.approx(full.aulc, rel=0.01)
    mlp = get_target("digits-mlp", epochs=1)
    assert train(get_target(mlp, amp=amp), bfn, seed=0).aulc == pytest.approx(
        train(mlp, bfn, seed=0).aulc, rel=0.02)


@pytest.mark.parametrize("kw, pattern", [
    ({"amp": "fp8"}, r"amp='fp8' is not known; choose one of bf16, fp16 \(or None: float32\)"),
    ({"amp": True}, r"amp=True is not known"),
    ({"channels_last": "yes"}, r"channels_last='yes' must be true or false"),
    ({"network": "mlp", "channels_last": True},
     r"channels_last=True applies to 2-d convolutions; network='mlp' has none"),
])
def test_bad_options_are_named(kw, pattern):
    with pytest.raises(ConfigError, match=pattern):
        get_target("fashion-simplenet", **kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_keeps_its_named_error(fashion_dir):
    with pytest.raises(ConfigError, match=r"device='cuda' is not available here; available: cpu"):
        train_many(get_target("fashion-simplenet", **SMALL), CANDIDATES, device="cuda", data_dir=fashion_dir)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("options", [{}, {"channels_last": True}, {"amp": "bf16"}],
                         ids=["float32", "channels-last", "bf16"])
def test_on_cuda_batched_simplenet_equals_each_copy_and_the_cpu(fashion_dir, options):
    spec = get_target("fashion-simplenet", **SMALL, **options)
    many = train_many(spec, CANDIDATES, seed=SEEDS, device="cuda", data_dir=fashion_dir)
    tol = 2e-2 if spec.amp else 1e-3
    for g, s, run in zip(CANDIDATES, SEEDS, many, strict=True):
        _close(run, train(spec, g, seed=s, device="cuda", data_dir=fashion_dir), tol=tol)
        _close(run, train(spec, g, seed=s, data_dir=fashion_dir), tol=tol)


def test_study_files_set_amp_and_channels_last_through_the_target_overrides(tmp_path):
    from metabp.search import load_study

    text = (Path(__file__).parents[2] / "studies" / "simplenet-gpu.toml").read_text()
    assert load_study_text(load_study, tmp_path, text).target_spec() == get_target("fashion-simplenet")
    on = text.replace("# channels_last", "channels_last").replace("# amp", "amp")
    spec = load_study_text(load_study, tmp_path, on).target_spec()
    assert (spec.amp, spec.channels_last) == ("bf16", True)
    with pytest.raises(ConfigError, match=r"\[target\] fashion-simplenet in .*amp='fp8' is not known"):
        load_study_text(load_study, tmp_path, on.replace('amp = "bf16"', 'amp = "fp8"'))


def load_study_text(load_study, tmp_path, text):
    path = tmp_path / "study.toml"
    path.write_text(text)
    return load_study(path, check_device=False)
