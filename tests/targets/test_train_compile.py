"""``train(..., compile=True)`` and ``train_many(..., compile=True)``: eager's losses, compiled once."""

import pytest
import torch
from torch._dynamo.utils import counters

import metabp
from metabp.targets import get_target, train, train_many

pytestmark = pytest.mark.slow  # compiles two forward/backward graphs (seconds each)


def close(a, b):
    assert len(a.step_losses) == len(b.step_losses) and a.diverged == b.diverged
    torch.testing.assert_close(torch.tensor(a.step_losses), torch.tensor(b.step_losses), rtol=1e-4, atol=1e-5)


def test_compiled_runs_equal_eager_and_new_candidates_do_not_recompile():
    torch._dynamo.reset()
    counters.clear()
    spec = get_target("gaussians-mlp3", epochs=8)
    g = metabp.MetaNet(hidden=1, seed=2)
    close(train(spec, g, seed=0, compile=True), train(spec, g, seed=0))
    bfns, seeds = [g, metabp.MetaNet(hidden=1, seed=4), metabp.MetaNet(hidden=1, seed=6)], [0, 1, 1]
    compiled = train_many(spec, bfns, seed=seeds, compile=True)
    for run, eager in zip(compiled, train_many(spec, bfns, seed=seeds), strict=True):
        close(run, eager)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs == 2 and not counters["graph_break"]  # the plain model's and the batched model's
    # new candidates (all MetaNets, as in a study), new seeds, a new omega: the same graphs
    h = metabp.MetaNet(hidden=1, seed=9)
    close(train(spec, h, seed=5, compile=True), train(spec, h, seed=5))
    h.omega = metabp.MetaNet(hidden=1, seed=10).omega
    close(train_many(spec, [h, g, g], seed=[7, 8, 9], compile=True)[0], train(spec, h, seed=7))
    assert counters["stats"]["unique_graphs"] == graphs


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_compiled_runs_replay_cuda_graphs_and_equal_eager():
    spec = get_target("digits-mlp", epochs=2)
    bfns = [None, metabp.MetaNet(hidden=1, seed=2), metabp.MetaNet(hidden=1, seed=3)]
    eager = train_many(spec, bfns, seed=[0, 1, 2], device="cuda")
    for _ in range(2):  # the second run replays the graphs recorded by the first
        for run, ref in zip(train_many(spec, bfns, seed=[0, 1, 2], device="cuda", compile=True), eager,
                            strict=True):
            close(run, ref)
