"""metabp.search: find the b-function ``g_omega`` that minimises a target's AULC.

Bayesian optimisation over the meta-network weights ``omega`` (paper section 3.2.1): a GP prior
and (log) Expected Improvement, proposed by BoTorch inside an Optuna study, so storage, parallel
workers and optuna-dashboard come from Optuna. The front door::

    from metabp.search import Study, load_study, minimize
    study = Study(load_study("studies/quickstart.toml"))
    study.optimize()                       # resumes where it stopped
    g = study.best_bfn(); study.export("best.bfn")
"""

from ._config import StudyConfig, load_study
from ._minimize import MinimizeResult, minimize
from ._samplers import SAMPLERS, SobolSampler, make_sampler
from ._storage import get_storage
from ._study import Evaluation, Study, train_evaluator

__all__ = [
    "Study", "StudyConfig", "load_study", "minimize", "MinimizeResult", "SAMPLERS", "make_sampler",
    "SobolSampler", "get_storage", "Evaluation", "train_evaluator",
]
