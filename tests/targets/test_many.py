import dataclasses
import math

import pytest
import torch

import metabp
from metabp.exceptions import ConfigError
from metabp.targets import DEFAULT_LR, OPTIMIZERS, get_target, train, train_many

G = metabp.MetaNet(hidden=1, seed=2)


@pytest.fixture
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _close(a, b, tol=1e-4):
    assert len(a.step_losses) == len(b.step_losses)
    for x, y in zip(a.step_losses, b.step_losses, strict=True):
        assert x == pytest.approx(y, rel=tol, abs=tol)
    assert a.aulc == pytest.approx(b.aulc, rel=tol, abs=tol)
    assert a.diverged == b.diverged


CANDIDATES = [None, metabp.Scaled(0.5), metabp.Derivative("tanh"), metabp.MetaNet(hidden=1, seed=2),
              metabp.MetaNet(hidden=2, seed=5)]


@pytest.mark.parametrize("spec", [get_target("gaussians-mlp3", epochs=10),
                                  get_target("digits-mlp", epochs=1),
                                  get_target("digits-mlp", epochs=1, optimizer="nesterov", lr=0.1)],
                         ids=["gaussians", "digits", "digits-nesterov"])
def test_each_copy_equals_its_own_train(spec):
    many = train_many(spec, CANDIDATES, seed=1)
    assert len(many) == len(CANDIDATES)
    for g, run in zip(CANDIDATES, many, strict=True):
        single = train(spec, g, seed=1)
        _close(run, single)
        if not single.diverged:
            assert run.test_accuracy == pytest.approx(single.test_accuracy, abs=0.01)
    assert many[0].step_losses != many[1].step_losses


def test_conv_copies_equal_their_own_train():
    spec = get_target("mnist1d-cnn", epochs=1, train_size=300)
    cands = [None, metabp.MetaNet(hidden=1, seed=2)]
    for g, run in zip(cands, train_many(spec, cands, where="act*", seed=0), strict=True):
        _close(run, train(spec, g, where="act*", seed=0))


def test_a_diverging_copy_does_not_poison_the_others():
    spec = get_target("gaussians-mlp3", optimizer="sgd", lr=0.5, epochs=20, max_loss=5.0)
    cands = [metabp.Scaled(1.0), metabp.Scaled(1e4), metabp.MetaNet(hidden=1, seed=2)]
    singles = [train(spec, g, seed=0) for g in cands]
    assert singles[1].diverged and not singles[0].diverged
    many = train_many(spec, cands, seed=0)
    for run, single in zip(many, singles, strict=True):
        _close(run, single)
    assert math.isfinite(many[1].aulc) and many[1].aulc > 5.0 and math.isnan(many[1].test_accuracy)
    assert many[0].test_accuracy == pytest.approx(singles[0].test_accuracy)


def test_all_copies_diverging_returns_runs():
    spec = get_target("gaussians-mlp3", optimizer="sgd", lr=1e3, epochs=20, max_loss=5.0)
    runs = train_many(spec, [None, metabp.Scaled(2.0)], seed=0)
    assert all(r.diverged and math.isfinite(r.aulc) for r in runs)


def test_feedback_falls_back_to_sequential_and_bad_input_is_named():
    spec = get_target("gaussians-mlp3", epochs=3, feedback="fa")
    runs = train_many(spec, [None, metabp.Scaled(0.5)], seed=0)
    assert runs[0].step_losses == train(spec, None, seed=0).step_losses
    with pytest.raises(ConfigError, match=r"train_many\(bfns=\[\]\)"):
        train_many(spec, [])
    with pytest.raises(ConfigError, match=r"bfns\[1\]='relu' is not a b-function"):
        train_many(spec, [None, "relu"])


def test_trainable_glob_applies_to_copies():
    spec = get_target("gaussians-mlp3", epochs=5, trainable="fc2.*")
    cands = [None, metabp.Scaled(0.3)]
    for g, run in zip(cands, train_many(spec, cands, seed=0), strict=True):
        _close(run, train(spec, g, seed=0))


def test_simplenet_builds_and_batches_with_batchnorm(cifar_root):
    spec = get_target("cifar10-simplenet", width=0.0625, epochs=1, batch_size=20)
    cands = [None, metabp.MetaNet(hidden=1, seed=3)]
    many = train_many(spec, cands, seed=0, data_dir=cifar_root)
    for g, run in zip(cands, many, strict=True):
        _close(run, train(spec, g, seed=0, data_dir=cifar_root), tol=1e-3)


def test_full_simplenet_forward_backward_on_a_tiny_batch():
    from metabp.targets import build_model

    model = build_model(get_target("cifar10-simplenet"), seed=0)
    assert 5.3e6 < sum(p.numel() for p in model.parameters()) < 5.6e6
    metabp.patch(model, metabp.MetaNet(hidden=1, seed=0), "act4")
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert model.conv1.weight.grad is not None and torch.isfinite(model.conv1.weight.grad).all()


@pytest.mark.parametrize("spec, where", [(get_target("digits-mlp", epochs=1), None),
                                         (get_target("mnist1d-cnn", epochs=1, train_size=300), "act*")],
                         ids=["mlp", "cnn"])
def test_per_copy_seeds_equal_sequential_runs(spec, where):
    g, h = metabp.MetaNet(hidden=1, seed=2), metabp.Scaled(0.5)
    bfns, seeds = [g, g, g, h, h, h], [0, 1, 2, 0, 1, 2]
    many = train_many(spec, bfns, where=where, seed=seeds)
    singles = [train(spec, b, where=where, seed=s) for b, s in zip(bfns, seeds, strict=True)]
    for run, single in zip(many, singles, strict=True):
        _close(run, single)
    assert many[0].step_losses != many[1].step_losses  # different seeds: different runs
    assert train_many(spec, [g, g], where=where, seed=[1, 1])[1].step_losses == pytest.approx(
        many[1].step_losses, rel=1e-4, abs=1e-4)


def test_per_copy_seeds_full_batch_share_the_order_but_not_the_weights():
    spec = get_target("gaussians-mlp3", epochs=5)
    many = train_many(spec, [None, None], seed=[0, 3])
    for run, s in zip(many, [0, 3], strict=True):
        _close(run, train(spec, None, seed=s))


@pytest.mark.parametrize("seed, pattern", [
    ([0, 1], r"seed=\[0, 1\] has 2 entries.*one seed per b-function \(3\)"),
    ([0, True, 2], r"seed\[1\]=True must be an int in \[0, 2\*\*63 - 1\]"),
    ([0, -1, 2], r"seed\[1\]=-1 must be an int"),
    ([0, 1.5, 2], r"seed\[1\]=1\.5 must be an int"),
    ([0, "1", 2], r"seed\[1\]='1' must be an int"),
    (True, r"seed=True must be an int"),
    (2**63, r"seed=9223372036854775808 must be an int in \[0, 2\*\*63 - 1\]"),
    ("0", r"seed='0' must be an int"),
])
def test_bad_seed_lists_are_named(seed, pattern):
    with pytest.raises(ConfigError, match=pattern):
        train_many(get_target("gaussians-mlp3", epochs=1), [None, None, None], seed=seed)


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_per_copy_lr_equals_train_at_that_lr(optimizer, float64):
    """Each copy at its own lr equals `train` at that lr, for every optimizer (float64: the
    semantics, apart from float32 summation order)."""
    spec = get_target("digits-mlp", epochs=1, train_size=256, optimizer=optimizer)
    bfns, seeds = [None, G, G, None], [0, 1, 0, 1]
    lrs = [DEFAULT_LR[optimizer] * m for m in (0.5, 1.0, 3.0, 0.2)]
    many = train_many(spec, bfns, seed=seeds, lr=lrs)
    for run, g, s, a in zip(many, bfns, seeds, lrs, strict=True):
        single = train(dataclasses.replace(spec, lr=a), g, seed=s)
        assert run.step_losses == pytest.approx(single.step_losses, rel=1e-12, abs=1e-12)
    assert len({round(r.aulc, 9) for r in many}) == 4


def test_one_lr_for_every_copy_and_none_is_the_specs():
    spec = get_target("gaussians-mlp3", epochs=4)
    a = train_many(spec, [None, G], seed=0, lr=0.3)
    b = train_many(get_target("gaussians-mlp3", epochs=4, lr=0.3), [None, G], seed=0)
    assert [r.step_losses for r in a] == [r.step_losses for r in b]
    assert [r.step_losses for r in train_many(spec, [None, G], lr=None)] == [
        r.step_losses for r in train_many(spec, [None, G], lr=[spec.lr, spec.lr])]


def test_per_copy_lr_with_feedback_falls_back_to_train_at_each_lr():
    spec = get_target("gaussians-mlp3", epochs=3, feedback="fa")
    runs = train_many(spec, [None, None], seed=0, lr=[0.01, 0.2])
    assert runs[1].step_losses == train(get_target(spec, lr=0.2), None, seed=0).step_losses
    assert runs[0].step_losses != runs[1].step_losses


def test_train_many_under_float64_default_dtype(float64):
    spec = get_target("digits-mlp", epochs=1, train_size=128)
    run = train_many(spec, [None, G], seed=[0, 1])[1]
    assert run.step_losses == pytest.approx(train(spec, G, seed=1).step_losses, rel=1e-12)


@pytest.mark.parametrize("lr, pattern", [
    ([0.1, 0.2], r"lr=\[0\.1, 0\.2\] has 2 entries.*one learning rate per b-function \(3\)"),
    ([0.1, 0.0, 0.2], r"Invalid learning rate: 0\.0 \(lr\[1\] must be a finite number > 0\)"),
    ([0.1, -1.0, 0.2], r"Invalid learning rate: -1\.0 \(lr\[1\]"),
    ([0.1, float("nan"), 0.2], r"Invalid learning rate: nan \(lr\[1\]"),
    ([0.1, 0.2, float("inf")], r"Invalid learning rate: inf \(lr\[2\]"),
    ([True, 0.1, 0.2], r"Invalid learning rate: True \(lr\[0\]"),
    ([0.1, "0.2", 0.2], r"Invalid learning rate: '0\.2' \(lr\[1\]"),
    ([0.1, None, 0.2], r"Invalid learning rate: None \(lr\[1\]"),
    (True, r"Invalid learning rate: True \(lr must"),
    ("0.1", r"Invalid learning rate: '0\.1' \(lr must"),
    (0.0, r"Invalid learning rate: 0\.0 \(lr must"),
])
def test_bad_lr_lists_are_named(lr, pattern):
    with pytest.raises(ConfigError, match=pattern):
        train_many(get_target("gaussians-mlp3", epochs=1), [None, None, None], lr=lr)


def test_a_copy_diverging_at_its_own_lr_leaves_the_others_exact():
    spec = get_target("gaussians-mlp3", optimizer="adam", epochs=20, max_loss=5.0)
    runs = train_many(spec, [None, None, G], seed=0, lr=[0.05, 50.0, 0.02])
    assert runs[1].diverged and not runs[0].diverged and not runs[2].diverged
    for run, g, a in ((runs[0], None, 0.05), (runs[2], G, 0.02)):
        _close(run, train(get_target(spec, lr=a), g, seed=0), tol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_per_copy_lr_on_cuda_matches_the_cpu(float64):
    """On CUDA (the scaled step, one set of kernels for every copy) each copy equals the CPU run."""
    spec = get_target("digits-mlp", epochs=1, train_size=256, optimizer="adam")
    bfns, seeds, lrs = [None, G, G], [0, 1, 0], [0.003, 0.01, 0.03]
    cpu = train_many(spec, bfns, seed=seeds, lr=lrs)
    cuda = train_many(spec, bfns, seed=seeds, lr=lrs, device="cuda")
    for a, b in zip(cpu, cuda, strict=True):
        assert a.step_losses == pytest.approx(b.step_losses, rel=1e-9, abs=1e-9)


PER_SITE = metabp.PerSite({"act1": metabp.MetaNet(hidden=2, seed=5), "act2": metabp.Scaled(-0.5)})


@pytest.mark.parametrize("spec", [get_target("gaussians-mlp3", epochs=10, trainable=None),
                                  get_target("mnist1d-cnn", epochs=1, train_size=300)],
                         ids=["mlp", "cnn"])
def test_per_site_copies_equal_their_own_train(spec):
    """A PerSite copy backprops its own g at each site; the others patch `where` as before."""
    cands = [PER_SITE, metabp.MetaNet(hidden=1, seed=2), None, {"act2": metabp.Scaled(2.0)}]
    many = train_many(spec, cands, where="act*", seed=[0, 1, 0, 1])
    for g, s, run in zip(cands, [0, 1, 0, 1], many, strict=True):
        per_site = isinstance(g, dict | metabp.PerSite)
        _close(run, train(spec, g, None if per_site else "act*", s))
    assert many[0].step_losses != many[2].step_losses


def test_per_site_with_feedback_falls_back_to_train():
    spec = get_target("gaussians-mlp3", epochs=3, feedback="fa")
    run = train_many(spec, [PER_SITE], where="act2", seed=0)[0]
    assert run.step_losses == train(spec, PER_SITE, seed=0).step_losses


def test_a_per_site_with_a_missing_site_is_named():
    with pytest.raises(metabp.PatchError, match="site 'act7' matches no activation"):
        train_many(get_target("gaussians-mlp3", epochs=1), [{"act7": metabp.Scaled(1.0)}])


def test_one_g_at_two_sites_or_in_two_copies_is_a_distinct_object_in_every_stack():
    """A compiled step must never get one table as two inputs: repeats are copied, values kept."""
    from metabp.targets._many import batched_model

    g = metabp.MetaNet(hidden=1, seed=3)
    shared = metabp.PerSite({"act1": g, "act2": g})
    net = batched_model(get_target("gaussians-mlp3"), [shared, shared, g], None, [0, 1, 0])
    members = [m for stacked in net.sites.values() for m in stacked.bfns if isinstance(m, metabp.MetaNet)]
    assert len(members) == 5 and len({id(m) for m in members}) == 5  # copy 3: act1 backprops sigma'
    assert all(torch.equal(m.omega, g.omega) for m in members)
    assert list(shared.values()) == [g, g]  # the caller's PerSite is left as it was


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "adadelta"])
def test_copies_are_bit_identical_to_their_own_train_on_the_cpu(optimizer):
    """One copy, and eight copies at eight lrs on per-copy batches (seeds 0, 1, 2: ``K x B``) or on
    one shared batch (seed 1): each copy's step losses are its own `train`'s, bit for bit (a last
    batch of 44 examples, not 64, included)."""
    spec = get_target("digits-mlp", epochs=1, train_size=300, optimizer=optimizer)
    lrs = [DEFAULT_LR[optimizer] * 1.5 ** (k - 4) for k in range(8)]
    bfns = [metabp.MetaNet(hidden=1, seed=k) for k in range(8)]
    for seeds in ([0] * 1, [k % 3 for k in range(8)], [1] * 8):
        K = len(seeds)
        many = train_many(spec, bfns[:K], where="act2", seed=seeds, lr=lrs[:K])
        for run, g, s, a in zip(many, bfns, seeds, lrs, strict=False):
            assert run.step_losses == train(get_target(spec, lr=a), g, where="act2", seed=s).step_losses
        assert len({r.aulc for r in many}) == K
