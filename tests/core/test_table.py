"""metabp/_table.py through the patched backward: mixed precision, any input scale, wrong device,
and the path that the patched backward takes equals the table read by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import metabp
from metabp import MetaNet
from metabp._table import TableArgs, index_dtype, lookup

torch.set_num_threads(1)
HALF = [torch.bfloat16, torch.float16]


def _grad_z(z: torch.Tensor, g: metabp.BFunction, grad: torch.Tensor) -> torch.Tensor:
    z = z.detach().requires_grad_()
    metabp.replace_derivative(z, g, "relu").backward(grad)
    return z.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, *HALF])
def test_backward_is_the_table_read_in_float32_times_grad(dtype):
    """grad_z = grad * values[k(z)], k computed in float32 from the half-precision z, in z's dtype."""
    g = MetaNet(2, "tanh", seed=4)
    z = (torch.randn(64, 33) * 6).to(dtype)
    grad = torch.randn(64, 33).to(dtype)
    got = _grad_z(z, g, grad)
    index = g.table.index(z.to(torch.promote_types(dtype, torch.float32))).long()
    want = g.table.values[index].to(dtype) * grad
    assert got.dtype == dtype and torch.equal(got, want)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("scale", [1.0, 10.0, 1e3, 1e30, float("inf")])
def test_autocast_on_cpu_never_indexes_past_the_table(dtype, scale):
    """A 16-64-10 MLP patched with a MetaNet, under autocast, inputs at any scale: no IndexError
    (in bfloat16 the index of 16383 rounds to 16384); gradients in float32 parameters."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 10))
    metabp.patch(model, MetaNet(1, "tanh", omega=[1.0, 0.0, 2.0, 0.5]))
    x = torch.randn(32, 16) * scale
    with torch.autocast("cpu", dtype=dtype):
        loss = model(x).float().square().mean()
    loss.backward()
    assert model[0].weight.grad.dtype == torch.float32
    if scale <= 10:
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("dtype", HALF)
def test_half_inputs_at_the_table_ends(dtype):
    g = MetaNet(1, "tanh", omega=[1.0, 0.0, 2.0, 0.5])
    lo, hi = g.table_range()
    z = torch.tensor([hi, hi * 0.999, 1e30, float("inf"), lo, -float("inf"), float("nan")]).to(dtype)
    got = _grad_z(z, g, torch.ones_like(z))
    ends = g.table.values[[-1, 0]].to(dtype)
    assert got[0] == got[2] == got[3] == ends[0] and got[4] == got[5] == ends[1]
    assert got[6] == g.table.values[0].to(dtype)  # NaN reads cell 0, never out of range


def test_table_args_is_a_named_tuple():
    g = MetaNet(1, "tanh", table_size=1000)
    args = g.table_args(torch.zeros(3, dtype=torch.bfloat16))
    assert isinstance(args, TableArgs) and args._fields == (
        "values", "scale", "shift", "offset", "last", "index_dtype")
    assert args.values.dtype == torch.bfloat16 and args.scale.dtype == torch.float32
    assert args.offset is None and args.last == 999 and args.index_dtype == index_dtype(1000)
    assert g.table_args(torch.zeros(3, dtype=torch.bfloat16)) is args  # made once per dtype
    assert g.table_args(torch.zeros(3, dtype=torch.float64)).scale.dtype == torch.float64


def test_wrong_device_is_a_named_error():
    g = MetaNet(1, "tanh")
    z = torch.zeros(4, device="meta")
    with pytest.raises(metabp.PatchError, match=r"the table is on cpu but the input is on meta"):
        g.table.lookup(z)
    with pytest.raises(metabp.PatchError, match=r"the table is on cpu but the input is on meta"):
        lookup(z, g.table_args(torch.zeros(1)))
    with pytest.raises(metabp.PatchError, match=r"table is on cpu"):
        g.table.read(torch.zeros(4, dtype=torch.int16, device="meta"))


def _numpy_reference(z: torch.Tensor, g: MetaNet, grad: torch.Tensor) -> torch.Tensor:
    """grad * values[floor(clip(z * scale + shift, 0, n - 1))], written out in float32 numpy."""
    import numpy as np

    t, zz = g.table, z.detach().cpu().float().numpy()
    with np.errstate(over="ignore", invalid="ignore"):  # -1e38 * scale is -inf, clipped to 0
        k = np.floor(np.clip(zz * np.float32(t.scale) + np.float32(t.shift), 0, t.n - 1))
    k = np.nan_to_num(k, nan=0.0).astype(np.int64)
    values = t.values.to(z.dtype).float().numpy()
    return torch.from_numpy(values[k]).to(z.dtype) * grad.cpu()


def test_backward_equals_the_table_equation_written_out():
    g = MetaNet(3, "tanh", seed=7)
    z = torch.cat([torch.randn(5000) * 10, torch.tensor([float("nan"), float("inf"), -1e38])])
    grad = torch.randn(z.shape)
    assert torch.equal(_grad_z(z, g, grad), _numpy_reference(z, g, grad))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, *HALF])
def test_cuda_backward_equals_the_table_equation(dtype):
    g = MetaNet(3, "tanh", seed=7)
    z = torch.cat([torch.randn(5000) * 10, torch.tensor([float("nan"), float("inf"), -1e38])])
    z, grad = z.to("cuda", dtype), torch.randn(z.shape, device="cuda").to(dtype)
    got = _grad_z(z, g, grad)
    assert got.device.type == "cuda" and torch.equal(got.cpu(), _numpy_reference(z, g, grad))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", HALF)
def test_cuda_autocast_never_indexes_past_the_table(dtype):
    """On CUDA an index past the table is a device-side assert that kills the process's context."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 10)).cuda()
    metabp.patch(model, MetaNet(1, "tanh", omega=[1.0, 0.0, 2.0, 0.5]))
    for scale in (1.0, 10.0, 1e3, 1e30, float("inf")):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype):
            loss = model(torch.randn(32, 16, device="cuda") * scale).float().square().mean()
        loss.backward()
        torch.cuda.synchronize()
    assert model[0].weight.grad.dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_prepare_cuda_makes_the_table_that_cuda_tensors_read():
    g = MetaNet(1, "tanh")
    stacked = metabp.stack([MetaNet(1, seed=0), MetaNet(1, seed=1)])
    g.prepare("cuda")
    stacked.prepare("cuda")
    z = torch.zeros(2, 3, device="cuda")
    assert g.table_args(z) is g.tensors_for("cuda", torch.float32)
    assert stacked.table_args(z).values is stacked.table_args(z).values  # one concatenation
    assert set(key[0] for key in g._args) == {torch.device("cpu"), z.device}
