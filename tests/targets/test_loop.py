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
