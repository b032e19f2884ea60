"""metabp: meta-learn the b-functions of backpropagation and read them as implicit learning rates.

The front door::

    g = metabp.MetaNet(hidden=1, act="tanh")      # or Derivative("tanh"), Scaled(0.5)
    metabp.patch(model, g, where="act2")          # backward uses g in place of sigma'
    metabp.patch(model, metabp.PerSite({"act1": g, "act2": h}))   # one g per site
    metabp.save(g, "found.bfn"); g = metabp.load("found.bfn")
    beta = metabp.implicit_lr(g, activation="relu", lr=0.01)
"""

from metabp._activations import ACTIVATION_MODULES, Activation, activation_of, get_activation
from metabp._artifact import load, save
from metabp._batch_manhattan import BatchManhattan
from metabp._bfunctions import BFunction, Derivative, Scaled
from metabp._feedback import LayerAlignment, alignment, feedback, feedbacks, unfeedback
from metabp._implicit_lr import SCALE_INVARIANT, SCALE_NOTE, implicit_lr
from metabp._metanet import MetaNet
from metabp._patch import activations, patch, patched, replace_derivative, unpatch
from metabp._sites import PerSite, as_per_site, is_per_site
from metabp._stacked import stack
from metabp._synthetic import (
    SyntheticGradient,
    remove_synthetic_gradients,
    set_synthetic_labels,
    synthetic_gradients,
)
from metabp.exceptions import ArtifactError, ConfigError, DataError, MetabpError, PatchError

__version__ = "0.1.0"

__all__ = [
    "patch", "unpatch", "patched", "activations", "stack", "replace_derivative",
    "load", "save", "implicit_lr", "SCALE_INVARIANT", "SCALE_NOTE",
    "BFunction", "MetaNet", "Derivative", "Scaled", "PerSite", "as_per_site", "is_per_site",
    "Activation", "get_activation", "activation_of", "ACTIVATION_MODULES",
    "feedback", "unfeedback", "feedbacks", "alignment", "LayerAlignment", "BatchManhattan",
    "SyntheticGradient", "synthetic_gradients", "set_synthetic_labels", "remove_synthetic_gradients",
    "MetabpError", "PatchError", "ArtifactError", "ConfigError", "DataError",
]
