"""metabp.targets: the networks whose training scores a b-function.

``get_target(name, **overrides)`` gives a preset (:class:`TargetSpec`); ``train`` runs it once
with a b-function patched in and returns a :class:`Run` (loss curve, AULC, test accuracy);
``train_many`` trains ``K`` candidates together as one batched model, each on its own seed if
asked. Both run the same loop, which calls ``callbacks`` with a :class:`StepEvent` every step.

Example::

    from metabp.targets import get_target, train, train_many
    spec = get_target("gaussians-mlp3", optimizer="sgd", lr=0.5, epochs=20)
    run = train(spec, bfn=g, where="act2", seed=0)
    runs = train_many(spec, [g1, g1, g2, g2], where="act2", seed=[0, 1, 0, 1])
"""

from metabp.targets._data import Data
from metabp.targets._init import INITS, initialize
from metabp.targets._loop import StepEvent, accuracy, batches, is_diverged, steps_per_epoch
from metabp.targets._many import train_many
from metabp.targets._optim import DEFAULT_LR, OPTIMIZERS, make_optimizer
from metabp.targets._spec import PRESETS, TargetSpec, build_model, get_target, list_targets, load_data
from metabp.targets._threads import num_threads, recommended_threads
from metabp.targets._train import Run, apply_feedback, aulc, train, trainable_parameters

__all__ = [
    "get_target", "list_targets", "train", "train_many", "Run", "TargetSpec", "aulc",
    "build_model", "load_data", "make_optimizer", "Data", "PRESETS", "OPTIMIZERS", "DEFAULT_LR",
    "INITS", "initialize", "recommended_threads", "num_threads", "StepEvent", "batches",
    "steps_per_epoch", "is_diverged", "trainable_parameters", "apply_feedback", "accuracy",
]
