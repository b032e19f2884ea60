"""The shared training loop: train() equals a plain PyTorch loop bit for bit; callbacks see each step."""

import math

import pytest
import torch
import torch.nn.functional as F

import metabp
from metabp.targets import build_model, get_target, load_data, make_optimizer, train


def plain_loop(spec, bfn, seed):
    """What train() computes, written out: the same model, patch, optimizer and batch order."""
    data = load_data(spec)
    model = build_model(spec, seed)
    if bfn is not None:
        metabp.patch(model, bfn, spec.where)
    opt = make_optimizer(spec.optimizer, model.parameters(), spec.lr)
    n, bs = len(data.y_train), spec.batch_size
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(spec.epochs):
        order = [torch.arange(n)] if bs is None or bs >= n else torch.randperm(n, generator=gen).split(bs)
        for idx in order:
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            losses.append(loss.item())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return losses, model


@pytest.mark.parametrize("spec", [get_target("gaussians-mlp3", epochs=8),
                                  get_target("digits-mlp", epochs=1, optimizer="momentum", lr=0.02)],
                         ids=["gaussians", "digits"])
@pytest.mark.parametrize("bfn", [None, metabp.MetaNet(hidden=1, seed=0)], ids=["bp", "metanet"])
def test_train_is_bitwise_the_plain_loop(spec, bfn):
    losses, model = plain_loop(spec, bfn, seed=2)
    run = train(spec, bfn, seed=2)
    assert run.step_losses == losses
    assert run.aulc == math.fsum(losses) / len(losses)
    data = load_data(spec)
    with torch.no_grad():
        right = (model.eval()(data.x_test).argmax(-1) == data.y_test).sum().item()
    assert run.test_accuracy == right / len(data.y_test)


def test_callbacks_see_each_step_with_the_grads_about_to_be_applied():
    spec = get_target("digits-mlp", epochs=2, optimizer="sgd", lr=0.1)
    seen = []

    def record(event):
        seen.append((event.step, event.epoch, event.loss.item(), event.x.shape[0],
                     {n: (p.detach().clone(), p.grad.clone()) for n, p in event.model.named_parameters()}))

    run = train(spec, seed=0, callbacks=[record])
    steps = len(run.step_losses)
    assert [s[0] for s in seen] == list(range(steps))
    assert [s[1] for s in seen] == [0] * (steps // 2) + [1] * (steps // 2)
    assert [s[2] for s in seen] == run.step_losses
    for before, after in zip(seen, seen[1:], strict=False):  # SGD: w' = w - lr * grad, grad as seen
        for name, (w, grad) in before[4].items():
            torch.testing.assert_close(after[4][name][0], w - 0.1 * grad)


def test_a_callback_that_changes_the_grads_changes_the_run():
    spec = get_target("gaussians-mlp3", epochs=4)

    def freeze_fc1(event):
        event.model.fc1.weight.grad.zero_()

    frozen = train(spec, seed=0, callbacks=[freeze_fc1])
    assert frozen.step_losses[0] == train(spec, seed=0).step_losses[0]
    assert frozen.step_losses == train(get_target("gaussians-mlp3", epochs=4, trainable="fc[23].*"),
                                       seed=0).step_losses


def test_train_many_callbacks_see_the_batched_model_and_per_copy_batches():
    from metabp.targets import train_many

    spec = get_target("digits-mlp", epochs=1, batch_size=500)
    events = []
    train_many(spec, [None, metabp.Scaled(0.5), None], seed=[0, 0, 1], callbacks=[events.append])
    first = events[0]
    assert first.model.fc1.weight.shape == (3, 32, 64)
    assert first.x.shape == (3, 500, 64) and first.y.shape == (3, 500)
    assert first.losses.shape == (3,) and first.alive.all()
    assert first.loss.item() == pytest.approx(first.losses.sum().item())
    assert torch.equal(first.x[0], first.x[1]) and not torch.equal(first.x[0], first.x[2])


@pytest.mark.parametrize("callbacks, pattern", [
    (print, r"callbacks=<built-in function print> must be a list of functions cb\(event\)"),
    ([print, 3], r"callbacks\[1\]=3 is not callable"),
])
def test_bad_callbacks_are_named(callbacks, pattern):
    from metabp.exceptions import ConfigError

    with pytest.raises(ConfigError, match=pattern):
        train(get_target("gaussians-mlp3", epochs=1), callbacks=callbacks)


# ----------------------------------------------------------------------- checks without host syncs
DIVERGING = get_target("digits-mlp", optimizer="sgd", lr=0.2, epochs=3, max_loss=5.0)
COPIES = [None, metabp.Scaled(50.0), metabp.Scaled(10.0), metabp.MetaNet(hidden=1, seed=2)]
SEEDS = [0, 1, 0, 2]


def fit_copies(spec, bfns, seeds, fit_fn=None, device="cpu", **kw):
    """``fit`` (or ``fit_fn``) on the batched copies, as ``train_many`` runs it."""
    import functools

    from metabp.targets._loop import copy_batches, fit, gather_batches, model_losses
    from metabp.targets._many import batched_model

    data = load_data(spec).to(device)
    net = batched_model(spec, bfns, None, seeds, device)
    opt = make_optimizer(spec.optimizer, list(net.parameters()), spec.lr)
    order = gather_batches(data.x_train, data.y_train,
                           copy_batches(len(data.y_train), spec.batch_size, spec.epochs, seeds))
    curves = (fit_fn or fit)(net, opt, functools.partial(model_losses, net), order, copies=len(bfns),
                             max_loss=spec.max_loss, **kw)
    return curves, net


def per_step_reference(model, optimizer, loss_fn, epochs, *, copies, max_loss):
    """The loop as it was before checks could wait: every step reads the losses back, a diverged
    copy is zeroed at once and the step's losses computed again."""
    from metabp.targets._loop import Curves, is_diverged
    from metabp.targets._optim import zero_copies

    curves = Curves([[] for _ in range(copies)], [[] for _ in range(copies)])
    alive = torch.ones(copies, dtype=torch.bool)
    for epoch_batches in epochs:
        first = [len(c) for c in curves.step_losses]
        for x, y in epoch_batches:
            losses = loss_fn(x, y)
            values, newly = losses.tolist(), []
            for k in alive.nonzero().flatten().tolist():
                curves.step_losses[k].append(values[k])
                newly += [k] if is_diverged(values[k], max_loss) else []
            if newly:
                alive[newly] = False
                if not alive.any():
                    break
                zero_copies(optimizer, (~alive).nonzero().flatten().tolist())
                losses = loss_fn(x, y)
            optimizer.zero_grad(set_to_none=True)
            (losses.sum() if alive.all() else losses[alive].sum()).backward()
            optimizer.step()
            if not alive.all():
                zero_copies(optimizer, (~alive).nonzero().flatten().tolist())
        if not alive.any():
            break
        for k in alive.nonzero().flatten().tolist():
            c = curves.step_losses[k]
            curves.epoch_losses[k].append(math.fsum(c[first[k]:]) / (len(c) - first[k]))
    curves.diverged = (~alive).tolist()
    return curves


def test_the_cpu_loop_checks_every_step_as_before():
    new, net = fit_copies(DIVERGING, COPIES, SEEDS)
    old, ref = fit_copies(DIVERGING, COPIES, SEEDS, fit_fn=per_step_reference)
    assert [len(c) for c in new.step_losses] == [69, 2, 38, 69]  # one dies in epoch 0, one in 1
    assert new.diverged == old.diverged == [False, True, True, False]
    assert new.step_losses == old.step_losses and new.epoch_losses == old.epoch_losses
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("every", [5, 23, 1000], ids=["every5", "epoch-end", "once-an-epoch"])
def test_checks_that_wait_give_the_per_step_curves_and_weights(every):
    per_step, a = fit_copies(DIVERGING, COPIES, SEEDS, check_every=1)
    waited, b = fit_copies(DIVERGING, COPIES, SEEDS, check_every=every)
    assert waited.step_losses == per_step.step_losses
    assert waited.epoch_losses == per_step.epoch_losses and waited.diverged == per_step.diverged
    for p, q in zip(a.parameters(), b.parameters(), strict=True):  # alive copies: bit for bit
        assert torch.equal(p[[0, 3]], q[[0, 3]]) and not q[[1, 2]].any()  # the dead: zeroed


def test_checks_that_wait_stop_when_every_copy_diverged():
    spec = get_target("gaussians-mlp3", optimizer="sgd", lr=1e3, epochs=20, max_loss=5.0)
    per_step, _ = fit_copies(spec, [None, metabp.Scaled(2.0)], [0, 0])
    waited, _ = fit_copies(spec, [None, metabp.Scaled(2.0)], [0, 0], check_every=4)
    assert waited.diverged == per_step.diverged == [True, True]
    assert waited.step_losses == per_step.step_losses and waited.epoch_losses == per_step.epoch_losses


@pytest.mark.parametrize("seeds", [[3], [3, 4, 3]], ids=["shared", "per-copy"])
def test_batches_gathered_in_one_copy_equal_plain_indexing(seeds):
    from metabp.targets._loop import copy_batches, gather_batches

    data = load_data(get_target("digits-mlp"))
    order = list(copy_batches(len(data.y_train), 100, 2, seeds))
    got = [list(epoch) for epoch in gather_batches(data.x_train, data.y_train, order)]
    assert [len(e) for e in got] == [15, 15] and got[0][-1][1].shape[-1] == len(data.y_train) - 1400
    for epoch, indices in zip(got, order, strict=True):
        for (x, y), i in zip(epoch, indices, strict=True):
            assert torch.equal(x, data.x_train[i]) and torch.equal(y, data.y_train[i])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_loop_waits_and_matches_the_per_step_check():
    waited, _ = fit_copies(DIVERGING, COPIES, SEEDS, device="cuda")  # the default: checks wait
    per_step, _ = fit_copies(DIVERGING, COPIES, SEEDS, device="cuda", check_every=1)
    assert waited.diverged == per_step.diverged and True in waited.diverged
    assert [len(c) for c in waited.step_losses] == [len(c) for c in per_step.step_losses]
    for a, b in zip(waited.step_losses, per_step.step_losses, strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("B, C", [(64, 10), (29, 10), (7, 2)])
def test_copy_losses_and_their_gradients_are_each_copys_cross_entropy_bit_for_bit(B, C):
    from metabp.targets._loop import copy_losses

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, B, C, generator=gen).requires_grad_()
    y = torch.randint(0, C, (5, B), generator=gen)
    scale = torch.tensor([1.0, 0.5, 2.0, 1.0, 3.0])  # a weighted sum: each copy's own gradient
    (copy_losses(logits, y) * scale).sum().backward()
    for k in range(5):
        one = logits.detach()[k].clone().requires_grad_()
        loss = F.cross_entropy(one, y[k])
        (loss * scale[k]).backward()
        assert torch.equal(copy_losses(logits.detach(), y)[k], loss.detach())
        assert torch.equal(logits.grad[k], one.grad), k
    shared = copy_losses(logits.detach(), y[0])
    assert torch.equal(shared[3], F.cross_entropy(logits.detach()[3], y[0]))
