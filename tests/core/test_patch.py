"""metabp/_patch.py: patched backward equals autograd or the hand-written equation, exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import metabp
from metabp import Derivative, MetaNet, Scaled

torch.set_num_threads(1)


def mlp(act: type[nn.Module] = nn.ReLU) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), act(), nn.Linear(16, 16), act(), nn.Linear(16, 3))


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), nn.ReLU(), nn.Flatten(),
        nn.Linear(6 * 2 * 2, 5),
    )


def grads(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    out = model(x)
    (out * torch.linspace(-1, 1, out.shape[-1], device=out.device)).sum().backward()
    return [p.grad.clone() for p in model.parameters()]


def assert_bit_identical(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for ga, gb in zip(a, b, strict=True):
        assert torch.equal(ga, gb)
        # torch.equal treats -0.0 == 0.0; compare the bits too
        assert torch.equal(ga.view(torch.int32), gb.view(torch.int32))


@pytest.mark.parametrize(("act", "name"), [(nn.ReLU, "relu"), (nn.Tanh, "tanh"), (nn.Sigmoid, "sigmoid"),
                                           (nn.GELU, "gelu"), (nn.SiLU, "silu"), (nn.ELU, "elu"),
                                           (nn.Softplus, "softplus"), (nn.LeakyReLU, "leaky_relu")])
def test_own_derivative_is_bit_identical_on_mlp(act, name):
    model, x = mlp(act), torch.randn(32, 6)
    plain = grads(model, x)
    kwargs = {"negative_slope": 0.01} if name == "leaky_relu" else {}
    assert metabp.patch(model, Derivative(name, **kwargs)) == ["1", "3"]
    assert_bit_identical(plain, grads(model, x))


def test_relu_derivative_is_bit_identical_on_cnn():
    model, x = cnn(), torch.randn(8, 2, 8, 8)
    plain = grads(model, x)
    metabp.patch(model, Derivative("relu"))
    patched = grads(model, x)
    assert_bit_identical(plain, patched)
    metabp.unpatch(model)
    assert_bit_identical(plain, grads(model, x))


def test_forward_is_unchanged():
    model, x = mlp(nn.Tanh), torch.randn(4, 6)
    before = model(x)
    metabp.patch(model, MetaNet(3, "tanh"))
    assert torch.equal(before, model(x))


def _hand_written_first_layer_grad(model: nn.Module, x: torch.Tensor, g) -> torch.Tensor:
    """delta^l = ((W^{l+1})^T delta^{l+1}) * g(z^l); dC/dW^l = delta^l a^{l-1} (paper eq. 1-2)."""
    fc1, fc2, fc3 = model[0], model[2], model[4]
    z1 = x @ fc1.weight.T + fc1.bias
    a1 = torch.relu(z1)
    z2 = a1 @ fc2.weight.T + fc2.bias
    a2 = torch.relu(z2)
    out = a2 @ fc3.weight.T + fc3.bias
    delta3 = torch.linspace(-1, 1, out.shape[-1]).expand_as(out)        # dC/d out
    delta2 = (delta3 @ fc3.weight) * (z2 > 0)                            # plain ReLU at act2
    delta1 = (delta2 @ fc2.weight) * g(z1)                               # b-function at act1
    return delta1.T @ x                                                  # (16, 6)


def test_metanet_gradient_equals_hand_written_equation():
    model, x = mlp(), torch.randn(32, 6)
    g = MetaNet(2, "tanh", omega=[1.5, -0.7, 0.3, 0.2, 0.8, -1.1, 0.05])
    metabp.patch(model, g, where="1")
    got = grads(model, x)[0]
    # the backward reads g from its table: the equation with the table's g matches exactly
    assert torch.allclose(got, _hand_written_first_layer_grad(model, x, g.table.lookup), rtol=0, atol=1e-6)
    # and with the exact g to within the table's error bound times sum |(W^T delta) a|
    exact = _hand_written_first_layer_grad(model, x, g)
    fc2, fc3 = model[2], model[4]
    with torch.no_grad():
        a1 = torch.relu(x @ model[0].weight.T + model[0].bias)
        z2 = a1 @ fc2.weight.T + fc2.bias
        back = ((torch.linspace(-1, 1, 3).expand(32, 3) @ fc3.weight) * (z2 > 0)) @ fc2.weight
    bound = g.table_error_bound() * (back.abs().T @ x.abs()) + 1e-6
    assert ((got - exact).abs() <= bound).all()
    assert not torch.allclose(got, grads(mlp(), x)[0])  # and it is not plain backprop


def test_scaled_with_sgd_equals_per_layer_learning_rate():
    """Scaled(c) at act2 with SGD lr == plain model whose fc1, fc2 use lr * c (paper eq. 3-4)."""
    torch.manual_seed(1)
    data = [(torch.randn(16, 6), torch.randint(0, 3, (16,))) for _ in range(5)]
    for c, exact in [(0.5, True), (0.3, False)]:
        patched, plain = mlp(), mlp()
        metabp.patch(patched, Scaled(c), where="3")
        lr = 0.1
        opt_a = torch.optim.SGD(patched.parameters(), lr=lr)
        below = [p for n, p in plain.named_parameters() if n.startswith(("0.", "2."))]
        above = [p for n, p in plain.named_parameters() if n.startswith("4.")]
        opt_b = torch.optim.SGD([{"params": below, "lr": lr * c}, {"params": above, "lr": lr}], lr=lr)
        for x, y in data * 2:
            for model, opt in ((patched, opt_a), (plain, opt_b)):
                opt.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
        for pa, pb in zip(patched.parameters(), plain.parameters(), strict=True):
            if exact:  # c a power of two: scaling commutes with every rounding
                assert torch.equal(pa, pb)
            else:
                assert torch.allclose(pa, pb, rtol=1e-5, atol=1e-6)
        assert not torch.equal(patched[0].weight, mlp()[0].weight)  # it trained


def test_omega_assignment_refreshes_backward():
    model, x = mlp(), torch.randn(8, 6)
    g = MetaNet(1, "tanh", omega=[1.0, 0.0, 1.0, 0.0])
    metabp.patch(model, g, where=0)
    first = grads(model, x)[0]
    g.omega = torch.tensor([1.0, 0.0, 2.0, 0.0])  # g doubles
    second = grads(model, x)[0]
    assert torch.allclose(second, 2 * first, rtol=1e-5, atol=1e-7)


def test_state_dict_of_patched_model_loads_into_unpatched():
    model = mlp()
    metabp.patch(model, MetaNet(2, "tanh"), where="*")
    fresh = mlp()
    fresh.load_state_dict(model.state_dict(), strict=True)
    assert set(model.state_dict()) == set(fresh.state_dict())
    # and deepcopy keeps the patch on the copy
    clone = copy.deepcopy(model)
    assert set(metabp.patched(clone)) == {"1", "3"}


def test_selectors_and_errors():
    model = nn.Sequential()
    model.add_module("fc1", nn.Linear(2, 2))
    model.add_module("act1", nn.ReLU())
    model.add_module("fc2", nn.Linear(2, 2))
    model.add_module("act2", nn.ReLU())
    assert metabp.patch(model, Scaled(2.0), where="act2") == ["act2"]
    assert metabp.patch(model, Scaled(2.0), where="act*") == ["act1", "act2"]
    assert metabp.patch(model, Scaled(2.0), where=-1) == ["act2"]
    assert metabp.patch(model, Scaled(2.0), where=["act2", 0]) == ["act1", "act2"]  # module order
    with pytest.raises(metabp.PatchError, match=r"where='act3' matches no activation.*act1, act2"):
        metabp.patch(model, Scaled(2.0), where="act3")
    with pytest.raises(metabp.PatchError, match=r"where=5 is out of range.*2 activations"):
        metabp.patch(model, Scaled(2.0), where=5)
    with pytest.raises(metabp.PatchError, match="is not a b-function"):
        metabp.patch(model, lambda z: z, where="act1")
    with pytest.raises(metabp.PatchError, match="no activation modules"):
        metabp.patch(nn.Linear(2, 2), Scaled(1.0))
    assert metabp.unpatch(model) == ["act1", "act2"]
    assert metabp.patched(model) == {}


def test_stack_matches_each_copy():
    gs = [MetaNet(2, "tanh", seed=s) for s in range(3)] + [MetaNet(1, "relu", seed=9)]
    z, grad = torch.randn(4, 64, 5) * 3, torch.randn(4, 64, 5)
    stacked = metabp.stack(gs).vjp(grad, z, torch.relu(z), metabp.get_activation("relu"))
    for k, g in enumerate(gs):
        assert torch.equal(stacked[k], g.vjp(grad[k], z[k], torch.relu(z[k]), metabp.get_activation("relu")))
    scaled = metabp.stack([Scaled(0.5), Scaled(2.0)])
    out = scaled.vjp(torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3), metabp.get_activation("relu"))
    assert out[:, 0].tolist() == [0.5, 2.0]
    with pytest.raises(metabp.PatchError, match="needs inputs with 4 copies on dim 0"):
        metabp.stack(gs).vjp(grad[:2], z[:2], z[:2], metabp.get_activation("relu"))


def test_patched_module_under_vmap_grad():
    """Per-sample gradients with torch.func.vmap(grad(...)) through a patched activation."""
    from torch.func import functional_call, grad, vmap

    model = mlp()
    g = MetaNet(2, "tanh", seed=3)
    metabp.patch(model, g, where="*")
    params = {k: v.detach() for k, v in model.named_parameters()}
    xs, ys = torch.randn(5, 6), torch.randint(0, 3, (5,))

    def loss(p, x, y):
        return nn.functional.cross_entropy(functional_call(model, p, (x[None],)), y[None])

    batched = vmap(grad(loss), in_dims=(None, 0, 0))(params, xs, ys)
    for i in range(5):
        model.zero_grad()
        nn.functional.cross_entropy(model(xs[i : i + 1]), ys[i : i + 1]).backward()
        for name, p in model.named_parameters():
            assert torch.allclose(batched[name][i], p.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_patch_on_cuda_matches_cpu():
    model, x = mlp(), torch.randn(16, 6)
    g = MetaNet(2, "tanh", seed=1)
    metabp.patch(model, g)
    cpu = grads(model, x)
    gpu = grads(model.cuda(), x.cuda())
    for a, b in zip(cpu, gpu, strict=True):
        assert torch.allclose(a, b.cpu(), rtol=1e-4, atol=1e-5)
    model_plain = mlp().cuda()
    plain = grads(model_plain, x.cuda())
    metabp.patch(model_plain, Derivative("relu"))
    assert_bit_identical(plain, grads(model_plain, x.cuda()))


@pytest.mark.parametrize("call, error, message", [
    (lambda: metabp.patch(None, Scaled(1.0)), metabp.PatchError, r"model=None is not a torch.nn.Module"),
    (lambda: metabp.patch(mlp(), "x"), metabp.PatchError, r"bfn='x' is not a b-function"),
    (lambda: metabp.unpatch(42), metabp.PatchError, r"model=42 is not a torch.nn.Module"),
    (lambda: metabp.patched("model"), metabp.PatchError, r"model='model' is not"),
    (lambda: metabp.patch(mlp(), Scaled(1.0), where=None), metabp.PatchError, r"where=None"),
    (lambda: metabp.patch(mlp(), Scaled(1.0), where=True), metabp.PatchError, r"where=True"),
    (lambda: metabp.replace_derivative(torch.ones(2), None, "relu"), metabp.PatchError, r"bfn=None"),
    (lambda: metabp.replace_derivative(torch.ones(2), Scaled(1.0), "bogus"), metabp.ConfigError,
     r"activation='bogus' is not known"),
    (lambda: metabp.stack(Scaled(1.0)), metabp.ConfigError, r"stack\(bfns=Scaled\(1.0\)\): pass a list"),
    (lambda: metabp.stack([Scaled(1.0), "x"]), metabp.PatchError, r"bfn='x' is not a b-function"),
    (lambda: metabp.stack(torch.tensor(1.0)), metabp.ConfigError, r"stack\(bfns=tensor\(1.\)\): pass a list"),
    (lambda: metabp.stack(3), metabp.ConfigError, r"stack\(bfns=3\): pass a list"),
])
def test_bad_arguments_are_named_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_pending_backward_keeps_its_forwards_table():
    """omega assigned between forward and backward: the backward reads the forward's table."""
    model, x = mlp(), torch.randn(8, 6)
    g = MetaNet(1, "tanh", omega=[1.0, 0.0, 1.0, 0.0])
    metabp.patch(model, g, where=0)
    first = grads(model, x)[0]
    model.zero_grad(set_to_none=True)
    out = model(x)
    g.omega = [1.0, 0.0, 2.0, 0.0]
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    assert torch.equal(model[0].weight.grad, first)
    assert not torch.equal(grads(model, x)[0], first)  # the next step reads the new table


def test_activations_resolves_where_without_patching():
    model = mlp()
    assert list(metabp.activations(model)) == ["1", "3"]
    assert list(metabp.activations(model, where=-1)) == ["3"]
    assert list(metabp.activations(model, where=["3", "1"])) == ["1", "3"]  # module order
    assert metabp.patched(model) == {}  # nothing was patched
    assert list(metabp.activations(model, where="*")) == metabp.patch(model, Scaled(1.0), where="*")
    with pytest.raises(metabp.PatchError, match=r"where='act9' matches no activation"):
        metabp.activations(model, where="act9")
    with pytest.raises(metabp.PatchError, match="no activation modules"):
        metabp.activations(nn.Linear(2, 2), where="*")
    assert metabp.activations(nn.Linear(2, 2)) == {}
