"""metabp/_bfunctions.py and _table.py: values, omega handling, tabulation error bound."""

from __future__ import annotations

import math

import pytest
import torch

import metabp
from metabp import ConfigError, Derivative, MetaNet, Scaled
from metabp._table import Table, TableArgs, grid_index, read


def test_metanet_equation_and_layout():
    # omega = [w1 (H), b1 (H), w2 (H), b2]
    g = MetaNet(2, "tanh", omega=[1.0, 2.0, 0.5, -0.5, 3.0, -1.0, 0.25])
    z = torch.tensor([-1.0, 0.0, 0.7])
    want = 3.0 * torch.tanh(1.0 * z + 0.5) - 1.0 * torch.tanh(2.0 * z - 0.5) + 0.25
    assert torch.allclose(g(z), want, atol=1e-6)
    assert g.num_params == 7 and g.omega.shape == (7,) and g.omega.dtype == torch.float64


def test_default_omega_is_seeded():
    assert torch.equal(MetaNet(3, seed=1).omega, MetaNet(3, seed=1).omega)
    assert not torch.equal(MetaNet(3, seed=1).omega, MetaNet(3, seed=2).omega)


def test_omega_is_a_copy_and_validated():
    g = MetaNet(1, omega=[1.0, 0.0, 1.0, 0.0])
    g.omega[0] = 5.0  # a copy: does not change g
    assert g.omega[0] == 1.0
    with pytest.raises(ConfigError,
                       match=r"omega has 3 values but MetaNet\(hidden=1\) needs 3\*hidden\+1 = 4"):
        g.omega = [1.0, 2.0, 3.0]
    with pytest.raises(ConfigError, match="omega must be finite"):
        g.omega = [1.0, float("nan"), 1.0, 0.0]
    with pytest.raises(ConfigError, match=r"MetaNet\(hidden=0\): hidden must be an integer from 1 to 1024"):
        MetaNet(0)
    with pytest.raises(ConfigError, match="activation='swoosh' is not known"):
        MetaNet(1, "swoosh")


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu", "gelu", "silu", "elu", "softplus",
                                 "leaky_relu", "linear"])
@pytest.mark.parametrize("seed", range(4))
def test_table_error_within_bound(act, seed):
    gen = torch.Generator().manual_seed(seed)
    omega = (torch.rand(3 * 8 + 1, generator=gen, dtype=torch.float64) * 10 - 5)  # the usual box
    g = MetaNet(8, act, omega=omega)
    lo, hi = g.table_range()
    z = torch.cat([torch.linspace(lo, hi, 300_001), torch.rand(100_000, generator=gen) * (hi - lo) + lo])
    err = (g.table.lookup(z).double() - g(z.double())).abs().max().item()
    assert err <= g.table_error_bound(), (err, g.table_error_bound())


def test_table_holds_end_values_outside_its_range():
    t = Table.build(torch.sin, -1.0, 1.0, 1001)
    out = t.lookup(torch.tensor([-5.0, 5.0]))
    assert torch.allclose(out, torch.sin(torch.tensor([-1.0, 1.0])))


def test_table_survives_nan_and_inf():
    t = Table.build(torch.tanh, -2.0, 2.0, 101)
    z = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e30, -1e30, 0.0])
    out = t.lookup(z)
    assert out[1] == out[3] == t.values[-1]  # +inf and huge: the upper end value
    assert out[2] == out[4] == t.values[0]  # -inf and huge negative: the lower end value
    assert out[0] == t.values[0] and out[5] == t.values[50]  # NaN: a valid index, no crash
    stacked = metabp.stack([MetaNet(1, seed=0), MetaNet(1, seed=1)])
    zz = torch.tensor([[float("nan"), 1e30], [-float("inf"), 0.5]])
    grad = stacked.vjp(torch.ones_like(zz), zz, zz, metabp.get_activation("relu"))
    assert torch.isfinite(grad).all()


def test_table_index_is_compact():
    assert Table.build(torch.tanh, -1.0, 1.0, 2**15).index(torch.zeros(3)).dtype == torch.int16
    assert Table.build(torch.tanh, -1.0, 1.0, 2**15 + 1).index(torch.zeros(3)).dtype == torch.int32


def test_table_rebuilt_after_omega_changes():
    g = MetaNet(1, "tanh", omega=[1.0, 0.0, 1.0, 0.0])
    first, (values, scale) = g.table, g.tensors_for(torch.device("cpu"), torch.float32)[:2]
    g.omega = [1.0, 0.0, 2.0, 0.0]
    assert g.table is not first
    assert torch.allclose(g.table.values, 2 * first.values)
    # new tensors: the old ones (held by a pending backward) keep the old table
    new_values, new_scale = g.tensors_for(torch.device("cpu"), torch.float32)[:2]
    assert torch.equal(values, first.values) and torch.equal(new_values, g.table.values)
    assert float(scale) == pytest.approx(1 / first.step)
    assert float(new_scale) == pytest.approx(1 / g.table.step)


def test_stacked_index_equals_each_table_index():
    gs = [MetaNet(2, "tanh", seed=0), MetaNet(1, "relu", seed=1, table_size=1000)]
    z = torch.randn(2, 50, 7) * 20
    s = metabp.stack(gs)
    args = s.table_args(z)
    assert isinstance(args, TableArgs) and args.last == 16383  # the shorter table is padded
    index = grid_index(z, args.scale, args.shift, args.last, args.index_dtype)
    for k, g in enumerate(gs):  # padding holds the end value: clamping at 999 reads the same
        assert torch.equal(read(args.values, index, args.offset)[k], g.table.lookup(z[k]))
    assert torch.equal(index[0].long(), gs[0].table.index(z[0]).long())
    gs[1].omega = [2.0, 0.0, 1.0, 0.0]  # a member's new omega reaches the stack
    new = s.table_args(z)
    assert torch.equal(read(new.values, index, new.offset)[1], gs[1].table.lookup(z[1]))
    assert torch.equal(new.values[16384:17384], gs[1].table.values)
    assert not torch.equal(new.values, args.values)  # new tensors; the old ones unchanged


def test_derivative_values():
    z = torch.linspace(-3, 3, 13)
    assert torch.equal(Derivative("relu")(z), (z > 0).float())
    assert torch.allclose(Derivative("tanh")(z), 1 - torch.tanh(z) ** 2)
    assert torch.allclose(Derivative("sigmoid")(z), torch.sigmoid(z) * (1 - torch.sigmoid(z)))
    silu_grad = torch.func.vmap(torch.func.grad(torch.nn.functional.silu))(z)
    assert torch.allclose(Derivative("swish")(z), silu_grad)
    assert torch.equal(Derivative("linear")(z), torch.ones_like(z))
    assert torch.allclose(Derivative("leaky_relu", negative_slope=0.2)(z), torch.where(z > 0, 1.0, 0.2))


def test_scaled_values_and_errors():
    z = torch.tensor([-1.0, 2.0])
    assert torch.equal(Scaled(0.5)(z, "relu"), torch.tensor([0.0, 0.5]))
    with pytest.raises(ConfigError, match=r"Scaled needs activation=\.\.\."):
        Scaled(0.5)(z)
    with pytest.raises(ConfigError, match=r"Scaled\(c=inf\): c must be a finite real number"):
        Scaled(math.inf)


@pytest.mark.parametrize("make, message", [
    (lambda: MetaNet(hidden=10**30), r"MetaNet\(hidden=10{30}\): hidden must be an integer from 1 to 1024"),
    (lambda: MetaNet(hidden=True), r"hidden=True\): hidden must be an integer"),
    (lambda: MetaNet(1, table_size=math.inf), r"table_size=inf\): table_size must be an integer from 16"),
    (lambda: MetaNet(1, table_size=float("nan")), r"table_size=nan\)"),
    (lambda: MetaNet(1, table_size=2**20 + 1), r"table_size=1048577\): .* from 16 to 1048576"),
    (lambda: MetaNet(1, act="bogus"), r"activation='bogus' is not known"),
    (lambda: MetaNet(1, act=3), r"activation=3 is not known"),
    (lambda: MetaNet(1, seed=10**30), r"seed=10{30}\): seed must be an integer"),
    (lambda: MetaNet(1, omega=torch.tensor(1.0)), r"omega has 1 values but MetaNet\(hidden=1\) needs"),
    (lambda: MetaNet(1, omega=[1.0, 2.0]), r"omega has 2 values"),
    (lambda: MetaNet(1, omega=[1.0, math.inf, 1.0, 0.0]), r"omega must be finite"),
    (lambda: MetaNet(1, omega="abcd"), r"omega='abcd' is not a sequence of numbers"),
    (lambda: MetaNet(1, omega=[1.0, 0.0, 1e300, 0.0]), r"makes g reach inf .* the table must be finite"),
    (lambda: MetaNet(1, omega=[1.0, 0.0, 1e39, 0.0]), r"makes g reach inf"),
    (lambda: Derivative("relu", alpha=1.0), r"activation 'relu' got alpha=1.0; it takes no keyword"),
    (lambda: Derivative("elu", negative_slope=0.1), r"'elu' got negative_slope=0.1; it takes alpha"),
    (lambda: Derivative("leaky_relu", negative_slope=math.nan), r"negative_slope=nan\): .* finite number"),
    (lambda: Derivative("elu", alpha=math.nan), r"elu\(alpha=nan\)"),
    (lambda: Derivative("elu", alpha="1"), r"elu\(alpha='1'\)"),
    (lambda: Derivative("gelu", approximate="bogus"), r"approximate='bogus'\): choose one of none, tanh"),
    (lambda: Derivative("softplus", beta=0.0), r"softplus\(beta=0.0\): beta must be > 0"),
    (lambda: Scaled(math.nan), r"Scaled\(c=nan\): c must be a finite real number \(not a bool\)"),
    (lambda: Scaled(True), r"Scaled\(c=True\)"),
    (lambda: Scaled("2"), r"Scaled\(c='2'\)"),
    (lambda: Scaled(1e300), r"\|c\| must be <= 1e\+37, or c \* sigma' overflows float32"),
    (lambda: Derivative.from_state({}, {"kwargs": {}}), r"has no field 'name'"),
    (lambda: Derivative.from_state({}, {"name": "elu", "kwargs": [1]}), r"kwargs=\[1\]: must be a mapping"),
    (lambda: Scaled.from_state({}, []), r"config=\[\]: must be a mapping"),
    (lambda: MetaNet.from_state({"omega": torch.zeros(4)}, {"hidden": "1"}), r"hidden='1'\)"),
])
def test_constructors_name_bad_arguments(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_overflowing_omega_leaves_g_unchanged():
    g = MetaNet(1, omega=[1.0, 0.0, 1.0, 0.0])
    with pytest.raises(ConfigError, match="the table must be finite"):
        g.omega = [1.0, 0.0, 1e39, 0.0]  # finite in float64, inf in the float32 table
    assert g.omega.tolist() == [1.0, 0.0, 1.0, 0.0] and torch.isfinite(g.table.values).all()
    assert Scaled(1e37).c == 1e37 and Derivative("elu", alpha=2).of.kwargs == {"alpha": 2}


def test_implicit_lr_paper_eq4():
    z = torch.linspace(-2, 2, 41)
    beta = metabp.implicit_lr(Scaled(0.5), "relu", lr=0.01, z=z)
    assert torch.isnan(beta[z <= 0]).all()
    assert torch.allclose(beta[z > 0], torch.full_like(beta[z > 0], 0.005))
    assert torch.allclose(metabp.implicit_lr(Derivative("relu"), "relu", lr=0.1, z=z)[z > 0],
                          torch.full((20,), 0.1))
    g = MetaNet(1, omega=[1.0, 0.0, 1.0, 0.0])  # g = tanh(z)
    want = 0.1 * torch.tanh(z) / (1 - torch.tanh(z) ** 2)
    assert torch.allclose(metabp.implicit_lr(g, "tanh", lr=0.1, z=z), want, rtol=1e-5)
    assert metabp.implicit_lr(g).shape == (401,)


def test_doctests_of_core_modules():
    import doctest

    from metabp import _activations, _artifact, _bfunctions, _implicit_lr, _metanet, _patch, _stacked, _table

    for module in (_activations, _artifact, _bfunctions, _implicit_lr, _metanet, _patch, _stacked, _table):
        result = doctest.testmod(module, extraglobs={"torch": torch, "metabp": metabp})
        assert result.failed == 0, module.__name__


def test_pickled_stack_follows_its_members():
    import pickle

    s = pickle.loads(pickle.dumps(metabp.stack([MetaNet(1, seed=0), MetaNet(2, seed=1)])))
    assert pickle.loads(pickle.dumps(s.bfns[0])).omega.tolist() == s.bfns[0].omega.tolist()
    s.bfns[0].omega = [3.0, 0.0, 1.0, 0.0]
    assert torch.equal(s.table_args(torch.zeros(2, 1)).values[:16384], s.bfns[0].table.values)
