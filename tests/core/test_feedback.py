"""Feedback b-functions (metabp/_feedback.py): exactness, each mode's B, buffers, DFA, learning."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metabp
from metabp import ConfigError, PatchError

torch.set_num_threads(1)

MODES = ["bp", "fa", "sign", "frsf", "brsf", "dfa"]


def grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    F.cross_entropy(model(x), y).backward()
    return [x.grad] + [p.grad for p in model.parameters()]


def convnet(padding_mode: str = "zeros", bias: bool = True) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=bias, padding_mode=padding_mode), nn.ReLU(),
        nn.Conv2d(6, 6, 3, stride=(2, 1), padding=2, dilation=2, groups=3, bias=bias), nn.Tanh(),
        nn.Conv2d(6, 4, (3, 1), padding="same", bias=bias), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 3 * 6, 12, bias=bias), nn.ReLU(), nn.Linear(12, 5),
    )


# ------------------------------------------------------------------- exactness of bp
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
@pytest.mark.parametrize("bias", [True, False])
def test_bp_mode_is_autograd_bit_for_bit(padding_mode, bias):
    torch.manual_seed(0)
    net = convnet(padding_mode, bias)
    ref = copy.deepcopy(net)
    assert metabp.feedback(net, "bp") == ["0", "2", "4", "7", "9"]
    x, y = torch.randn(5, 4, 9, 11), torch.randint(0, 5, (5,))
    got, want = grads(net, x, y), grads(ref, x, y)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    assert torch.equal(net(x), ref(x))


def test_bp_mode_linear_3d_input_and_activation_patch_combine():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(7, 9), nn.ReLU(), nn.Linear(9, 4, bias=False), nn.Tanh(), nn.Linear(4, 3))
    ref = copy.deepcopy(net)
    for m in (net, ref):
        metabp.patch(m, metabp.Scaled(0.5), where="1")
    metabp.feedback(net, "bp")
    x = torch.randn(2, 6, 7, requires_grad=True)
    g = torch.randn(2, 6, 3)
    a = torch.autograd.grad(net(x), [x, *net.parameters()], g)
    b = torch.autograd.grad(ref(x), [x, *ref.parameters()], g)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_bp_mode_gradcheck_double():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1, groups=1), nn.Tanh(), nn.Flatten(),
                        nn.Linear(27, 4)).double()
    metabp.feedback(net, "bp")
    x = torch.randn(2, 2, 5, 5, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, *p: torch.func.functional_call(
        net, dict(zip([n for n, _ in net.named_parameters()], p, strict=True)), (x,)),
        (x, *net.parameters()))


def test_fa_per_sample_gradients_under_vmap():
    torch.manual_seed(12)
    net = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    metabp.feedback(net, "fa")
    params = {k: v.detach() for k, v in net.named_parameters()}
    bufs = dict(net.named_buffers())
    x, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 0])

    def loss(p: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(torch.func.functional_call(net, (p, bufs), (xi[None],)), yi[None])

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(params, x, y)
    for i in range(4):
        net.zero_grad()
        F.cross_entropy(net(x[i:i + 1]), y[i:i + 1]).backward()
        for k, p in net.named_parameters():
            assert torch.allclose(per_sample[k][i], p.grad, atol=1e-6), k


# ------------------------------------------------------------------- each mode's B
def _effective_B(m: nn.Module) -> torch.Tensor:
    fb = metabp.feedbacks(m)[""]
    return fb.matrix(m.weight, m._buffers.get("feedback_B"), m._buffers.get("feedback_mask"))


@pytest.mark.parametrize("mode", ["fa", "sign", "frsf"])
def test_linear_input_grad_is_grad_times_B_and_weight_grad_is_autograd(mode):
    torch.manual_seed(3)
    lin = nn.Linear(6, 4)
    ref = copy.deepcopy(lin)
    metabp.feedback(lin, mode)
    x = torch.randn(5, 6, requires_grad=True)
    g = torch.randn(5, 4)
    gx, gw, gb = torch.autograd.grad(lin(x), [x, lin.weight, lin.bias], g)
    _, rw, rb = torch.autograd.grad(ref(x), [x, ref.weight, ref.bias], g)
    B = _effective_B(lin)
    assert torch.equal(gx, g @ B)
    assert torch.equal(gw, rw) and torch.equal(gb, rb)
    if mode == "fa":
        assert torch.equal(B, lin.feedback_B)
        assert not torch.allclose(gx, g @ lin.weight)
    if mode == "sign":
        rms = lin.weight.detach().square().mean().sqrt()
        assert torch.equal(B, torch.sign(lin.weight) * rms)
    if mode == "frsf":
        assert (lin.feedback_B >= 0).all()
        assert torch.equal(torch.sign(B), torch.sign(lin.weight))


@pytest.mark.parametrize("mode", ["fa", "frsf", "brsf"])
def test_conv_input_grad_uses_B(mode):
    torch.manual_seed(4)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1, groups=2)
    ref = copy.deepcopy(conv)
    metabp.feedback(conv, mode, seed=7)
    x = torch.randn(3, 4, 9, 9, requires_grad=True)
    out = conv(x)
    g = torch.randn_like(out)
    gx, gw, gb = torch.autograd.grad(out, [x, conv.weight, conv.bias], g)
    _, rw, rb = torch.autograd.grad(ref(x), [x, ref.weight, ref.bias], g)
    assert torch.equal(gw, rw) and torch.equal(gb, rb)
    if mode != "brsf":
        want = torch.nn.grad.conv2d_input(x.shape, _effective_B(conv), g, stride=2, padding=1, groups=2)
        assert torch.allclose(gx, want, atol=1e-6)
    assert not torch.allclose(gx, torch.nn.grad.conv2d_input(x.shape, conv.weight, g, stride=2, padding=1,
                                                             groups=2))


def test_brsf_redraws_every_step_reproducibly():
    def input_grads(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(5)
        lin = nn.Linear(8, 5)
        metabp.feedback(lin, "brsf", seed=seed)
        x = torch.randn(4, 8, requires_grad=True)
        out = []
        for _ in range(3):
            (gx,) = torch.autograd.grad(lin(x).sum(), x)
            out.append(gx)
        return out

    a, b, c = input_grads(0), input_grads(0), input_grads(1)
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[1], a[2])  # a new |R| every backward
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))     # the seed fixes the sequence
    assert not torch.equal(a[0], c[0])
    # every draw keeps the sign of W: sign(gx) of a one-hot grad is sign of a row of W
    torch.manual_seed(5)
    lin = nn.Linear(8, 5)
    metabp.feedback(lin, "brsf")
    x = torch.randn(1, 8, requires_grad=True)
    (gx,) = torch.autograd.grad(lin(x)[0, 2], x)
    assert torch.equal(torch.sign(gx[0]), torch.sign(lin.weight[2].detach()))


@pytest.mark.parametrize("mode", ["fa", "sign", "frsf", "brsf"])
def test_sparse_feedback_removes_the_fraction_asked(mode):
    torch.manual_seed(6)
    lin = nn.Linear(30, 20)
    metabp.feedback(lin, mode, sparsity=0.5)
    mask = lin.feedback_mask
    assert int((mask == 0).sum()) == 300 and int((mask == 1).sum()) == 300
    x = torch.randn(3, 30, requires_grad=True)
    g = torch.randn(3, 20)
    (gx,) = torch.autograd.grad(lin(x), x, g)
    if mode != "brsf":
        assert torch.equal(gx, g @ _effective_B(lin))
    # a removed connection carries nothing: error on output j reaches input i only where mask[j, i] = 1
    (gx,) = torch.autograd.grad(lin(x)[0, 0], x)
    assert torch.equal(gx[0] != 0, mask[0] != 0)
    lin2 = nn.Linear(30, 20)
    metabp.feedback(lin2, mode, sparsity=0.25)
    assert int((lin2.feedback_mask == 0).sum()) == 150


# ------------------------------------------------------------------- buffers, repr, unpatch
def test_state_dict_carries_B_and_seed_and_loads_back():
    torch.manual_seed(7)
    net = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    metabp.feedback(net, "fa", seed=11, sparsity=0.3)
    sd = net.state_dict()
    assert {"0.feedback_B", "2.feedback_B", "0.feedback_mask", "0.feedback_seed"} <= set(sd)
    assert int(sd["0.feedback_seed"]) == 11 and int(sd["2.feedback_seed"]) == 11 + 1_000_003
    assert not any(k.startswith("feedback") for k, _ in net.named_parameters())
    other = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    metabp.feedback(other, "fa", seed=99, sparsity=0.3)
    assert not torch.equal(other[2].feedback_B, net[2].feedback_B)
    other.load_state_dict(sd)
    assert torch.equal(other[2].feedback_B, net[2].feedback_B)
    x, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 0])
    assert all(torch.equal(a, b) for a, b in zip(grads(net, x, y), grads(other, x, y), strict=True))
    assert "feedback='fa', seed=11" in repr(net)


def test_unfeedback_restores_plain_layers():
    net = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    plain_keys = set(net.state_dict())
    metabp.feedback(net, "frsf")
    assert set(metabp.feedbacks(net)) == {"0", "2"}
    assert metabp.unfeedback(net, "2") == ["2"]
    assert set(metabp.feedbacks(net)) == {"0"}
    metabp.unfeedback(net)
    assert set(net.state_dict()) == plain_keys and "forward" not in net[0].__dict__
    assert "feedback" not in repr(net)


def test_global_rng_untouched():
    torch.manual_seed(8)
    net = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    state = torch.get_rng_state()
    metabp.feedback(net, "fa", sparsity=0.5)
    assert torch.equal(torch.get_rng_state(), state)


# ------------------------------------------------------------------- errors
def test_errors_name_argument_value_and_fix():
    net = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    with pytest.raises(ConfigError, match=r"mode='xfa' is not a feedback mode; choose one of: bp, fa, sign"):
        metabp.feedback(net, "xfa")
    with pytest.raises(PatchError, match=r"where='fc1' matches no Linear/Conv2d layer; the model's "
                                         r"Linear/Conv2d layers are: 0, 2"):
        metabp.feedback(net, "fa", where="fc1")
    with pytest.raises(PatchError, match=r"where=5 is out of range: the model has 2 Linear/Conv2d layers"):
        metabp.feedback(net, "fa", where=5)
    with pytest.raises(ConfigError, match=r"sparsity=1.5 must be a fraction in \[0, 1\)"):
        metabp.feedback(net, "fa", sparsity=1.5)
    with pytest.raises(ConfigError, match=r"output_dim=4 but the output layer '2' has out_features=3"):
        metabp.feedback(net, "dfa", output_dim=4)
    with pytest.raises(ConfigError, match=r"output_dim=3, output=None are for mode='dfa' only"):
        metabp.feedback(net, "fa", output_dim=3)
    with pytest.raises(PatchError, match=r"mode='dfa' supports nn.Linear layers only.*Conv2d layers 0"):
        metabp.feedback(convnet(), "dfa")
    with pytest.raises(PatchError, match=r"has no nn.Linear or nn.Conv2d layers"):
        metabp.feedback(nn.ReLU(), "fa")
    with pytest.raises(PatchError, match=r"no layer of the model has a feedback mode"):
        metabp.alignment(net)
    assert metabp.feedbacks(net) == {}  # a failed call patches nothing


# ------------------------------------------------------------------- DFA mechanism
def test_dfa_sends_output_error_through_each_layers_B():
    torch.manual_seed(9)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 7), nn.Tanh(), nn.Linear(7, 4))
    metabp.feedback(net, "dfa", output_dim=4)
    assert net[0].feedback_B.shape == (4, 6) and net[2].feedback_B.shape == (4, 8)
    assert net[4].feedback_B.shape == (4, 7)  # the output layer: plain FA
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 0])
    seen: dict[str, torch.Tensor] = {}

    def record(name: str):
        def hook(module: nn.Module, inp: tuple) -> None:
            inp[0].register_hook(lambda g: seen.__setitem__(name, g))
        return hook

    for name in ("2", "4"):  # the gradient arriving at each layer's input
        net.get_submodule(name).register_forward_pre_hook(record(name))
    x = x.requires_grad_()
    logits = net(x)
    logits.retain_grad()
    F.cross_entropy(logits, y).backward()
    e = logits.grad
    assert torch.equal(seen["4"], e @ net[4].feedback_B)
    assert torch.equal(seen["2"], e @ net[2].feedback_B)
    assert torch.equal(x.grad, e @ net[0].feedback_B)


def test_dfa_two_forwards_before_one_backward_use_their_own_errors():
    torch.manual_seed(10)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    metabp.feedback(net, "dfa")
    x1, x2, y = torch.randn(4, 6), torch.randn(4, 6), torch.tensor([0, 1, 2, 0])
    g1, g2 = grads(net, x1, y), grads(net, x2, y)
    net.zero_grad()
    (F.cross_entropy(net(x1), y) + F.cross_entropy(net(x2), y)).backward()
    for p, a, b in zip(net.parameters(), g1[1:], g2[1:], strict=True):
        assert torch.allclose(p.grad, a + b, atol=1e-6)


# ------------------------------------------------------------------- learning on digits
def digits() -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits

    d = load_digits()
    X, Y = torch.tensor(d.data, dtype=torch.float32) / 16, torch.tensor(d.target)
    p = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
    return X[p[:1400]], Y[p[:1400]], X[p[1400:]], Y[p[1400:]]


def train_digits(mode: str | None, *, epochs: int = 8, lr: float = 0.05, sg: bool = False,
                 angles: list | None = None) -> tuple[nn.Module, float]:
    Xtr, Ytr, Xte, Yte = DIGITS
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    if mode is not None:
        metabp.feedback(net, mode)
    if sg:
        metabp.synthetic_gradients(net, "1", num_classes=10)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    for _ in range(epochs):
        perm = torch.randperm(len(Xtr), generator=gen)
        for i in range(0, len(Xtr), 32):
            idx = perm[i:i + 32]
            if sg:
                metabp.set_synthetic_labels(net, Ytr[idx])
            opt.zero_grad()
            F.cross_entropy(net(Xtr[idx]), Ytr[idx]).backward()
            opt.step()
        if angles is not None:
            angles.append(metabp.alignment(net, (Xtr[:300], Ytr[:300])))
    with torch.no_grad():
        return net, (net(Xte).argmax(1) == Yte).float().mean().item()


DIGITS = digits()


@pytest.fixture(scope="module")
def bp_accuracy() -> float:
    return train_digits(None)[1]


def test_fa_learns_digits_close_to_bp_and_aligns(bp_accuracy):
    angles: list = []
    _, acc = train_digits("fa", angles=angles)
    assert bp_accuracy > 0.93
    assert acc > bp_accuracy - 0.05, (acc, bp_accuracy)
    first, last = angles[0], angles[-1]
    # layers 2 and 4 send their B^T delta down (layer 0's B feeds the input and is never used)
    for name, below in (("2", 85), ("4", 70)):
        assert last[name].weight < below and last[name].weight < first[name].weight - 3, (first, last)
    assert last["2"].delta < 60 and last["4"].delta < 1e-3  # delta at layer 2's output; 4: output error


def test_dfa_learns_digits_and_its_deltas_align():
    angles: list = []
    _, acc = train_digits("dfa", angles=angles)
    assert acc > 0.85, acc
    assert angles[-1]["0"].delta < 75 and angles[-1]["2"].delta < 75, angles[-1]
    assert angles[-1]["0"].weight is None  # a hidden DFA B is output_dim x in: no W to compare


@pytest.mark.parametrize("mode", ["sign", "frsf", "brsf"])
def test_sign_modes_learn_digits(mode):
    _, acc = train_digits(mode, epochs=4)
    assert acc > 0.88, acc


def test_synthetic_gradients_learn_digits_and_predict_the_gradient():
    Xtr, Ytr, _, _ = DIGITS
    net, acc = train_digits(None, lr=0.01, sg=True)
    assert acc > 0.85, acc
    sg = net[1].synthetic_gradient
    metabp.set_synthetic_labels(net, Ytr[:300])
    a = net[1](net[0](Xtr[:300])).detach().requires_grad_()
    (true,) = torch.autograd.grad(F.cross_entropy(net[4](net[3](net[2](a))), Ytr[:300]), a)
    cos = F.cosine_similarity(sg.predict(a).flatten(), true.flatten(), dim=0)
    assert cos > 0.3, cos
    torch.manual_seed(0)
    w0 = nn.Linear(64, 64).weight  # the first layer's initial weights (same seed, same first draw)
    assert (net[0].weight - w0).norm() > 0.1 * w0.norm()  # the layer below learned from predictions


def test_alignment_bp_mode_is_zero_degrees():
    torch.manual_seed(11)
    net = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    metabp.feedback(net, "bp")
    al = metabp.alignment(net, (torch.randn(8, 5), torch.randint(0, 3, (8,))))
    assert all(v.weight < 1e-3 and v.delta < 1e-3 for v in al.values())
    assert metabp.alignment(net)["0"].delta is None  # no batch, no delta angle


@pytest.mark.parametrize("call, error, message", [
    (lambda: metabp.feedback("model", "fa"), metabp.PatchError, r"model='model' is not a torch.nn.Module"),
    (lambda: metabp.unfeedback(None), metabp.PatchError, r"model=None is not a torch.nn.Module"),
    (lambda: metabp.feedbacks(3), metabp.PatchError, r"model=3 is not"),
    (lambda: metabp.feedback(nn.Linear(2, 2), "fa", seed=True), metabp.ConfigError, r"seed=True must be"),
    (lambda: metabp.feedback(nn.Linear(2, 2), "fa", seed=2**70), metabp.ConfigError, r"seed=\d+ must be"),
    (lambda: metabp.feedback(nn.Linear(2, 2), "fa", sparsity=True), metabp.ConfigError, r"sparsity=True"),
    (lambda: metabp.feedback(nn.Linear(2, 2), "fa", scale=float("nan")), metabp.ConfigError, r"scale=nan"),
    (lambda: metabp.feedback(nn.Linear(2, 2), "fa", where=1.5), metabp.PatchError, r"where=1.5"),
    (lambda: metabp.feedback(nn.Linear(2, 2), "dfa", output=[]), metabp.ConfigError, r"output=\[\] must be"),
    (lambda: metabp.feedback(nn.Linear(2, 2), "dfa", output_dim=0), metabp.ConfigError, r"output_dim=0 must"),
])
def test_bad_arguments_are_named_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()
