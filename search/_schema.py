"""The storage schema: every key metabp writes into an Optuna storage, in one place.

The search writes these keys; ``metabp.analysis``, ``metabp show`` and optuna-dashboard read them
(through ``metabp.search.schema``). A trial's params are ``omega_0 .. omega_{N-1}`` (:func:`omega`)
and, when the study file searches it, ``lr`` (:data:`LR`, log scale); its value is the score.
One meta-network has ``N = P = 3*hidden+1``; a per-site study (``sites = [s_0, .., s_{S-1}]``) has
``N = S*P``, site ``s_j``'s meta-network owning ``omega_{jP} .. omega_{jP+P-1}``, in the order of
``sites`` (stored in :data:`CONFIG` as ``sites``).

Study user attrs:

- :data:`CONFIG`: the study's identity (target, seeds, search space); studies with equal identity
  in one storage are searches of the same problem (the random/TPE baselines of a report);
- :data:`SAMPLER`: the sampler's name;
- :data:`BACKPROP`: plain backprop's score on the search seeds, ``{mean, std, seeds, values}``;
- :data:`HELDOUT_CONTROLS`: held-out scores of the controls, ``{"backprop": ..., "tuned_lr": ...}``
  (keys :data:`CONTROL_BACKPROP` and :data:`CONTROL_TUNED_LR`, the latter with its ``lr``);
- ``HELDOUT_PREFIX + str(number)``: trial ``number``'s held-out score (:func:`heldout_key`), shown on
  the trial as its :data:`HELDOUT_AULC` user attr.

Trial user attrs: :data:`PER_SEED` (one ``{target, seed, aulc, backprop_aulc, diverged,
test_accuracy}`` per target and seed), :data:`STEP_LOSSES`, :data:`DIVERGED`, :data:`SECONDS`,
:data:`TEST_ACCURACY` and, once validated, :data:`HELDOUT_AULC` ``{mean, std, seeds, values}``.

Trial system attrs (the search's own bookkeeping): :data:`PROPOSE_SECONDS`, :data:`SURPLUS`,
:data:`DUPLICATE_OF`, :data:`ERROR`, :data:`WORKER`, :data:`HEARTBEAT`, :data:`CHECKED`,
:data:`PROPOSAL` (the point a worker claimed before it suggests it) and :data:`ES` (an evolution
strategies trial's place in its population).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

# trial params
OMEGA_PREFIX = "omega_"
LR = "lr"

# study user attrs
CONFIG = "metabp:config"
SAMPLER = "metabp:sampler"
BACKPROP = "backprop"
HELDOUT_CONTROLS = "heldout_controls"
CONTROL_BACKPROP = "backprop"
CONTROL_TUNED_LR = "tuned_lr"
HELDOUT_PREFIX = "heldout_aulc:"

# trial user attrs
PER_SEED = "per_seed"
STEP_LOSSES = "step_losses"
DIVERGED = "diverged"
SECONDS = "seconds"
TEST_ACCURACY = "test_accuracy"
HELDOUT_AULC = "heldout_aulc"

# trial system attrs
PROPOSE_SECONDS = "metabp:propose_seconds"
SURPLUS = "metabp:surplus"
DUPLICATE_OF = "metabp:duplicate_of"
ERROR = "metabp:error"
WORKER = "metabp:worker"
HEARTBEAT = "metabp:heartbeat"
CHECKED = "metabp:checked"
PROPOSAL = "metabp:proposal"
ES = "metabp:es"


def omega(i: int) -> str:
    """The param name of ``omega``'s ``i``-th entry.

    Example:
        >>> omega(3)
        'omega_3'
    """
    return f"{OMEGA_PREFIX}{i}"


def heldout_key(number: int) -> str:
    """The study user attr holding trial ``number``'s held-out score.

    Example:
        >>> heldout_key(23)
        'heldout_aulc:23'
    """
    return f"{HELDOUT_PREFIX}{number}"


def by_site(values: Sequence[T], sites: Sequence[str], size: int) -> dict[str, Sequence[T]]:
    """``values`` laid out site by site (omega, or its param names): site ``j`` of ``sites`` owns
    ``values[j*size : (j+1)*size]``, ``size = 3*hidden+1``.

    Example:
        >>> by_site([1, 2, 3, 4, 5, 6], ["act1", "act2"], 3)
        {'act1': [1, 2, 3], 'act2': [4, 5, 6]}
    """
    return {site: values[j * size:(j + 1) * size] for j, site in enumerate(sites)}
