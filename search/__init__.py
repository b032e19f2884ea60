"""metabp.search: find the b-function ``g_omega`` that minimises a target's AULC.

Bayesian optimisation over the meta-network weights ``omega`` (paper section 3.2.1): a GP prior
and (log) Expected Improvement, proposed by BoTorch inside an Optuna study, so storage, parallel
workers and optuna-dashboard come from Optuna. A candidate is scored on several training seeds
(and targets), and the best are validated on held-out seeds. The front door::

    from metabp.search import Study, load_study, minimize
    study = Study(load_study("studies/quickstart.toml"))
    study.optimize()                       # resumes where it stopped; validates at the end
    g = study.best_bfn(); study.export("best.bfn")

Reading order: ``_load.py`` (study file) -> ``_config.py`` (StudyConfig) -> ``_study.py`` (trials)
-> ``_score.py`` (a candidate's score); ``_validate.py``, ``_workers.py`` and ``_storage.py`` aside;
the proposals: ``_samplers.py`` (by name) -> ``_gp_sampler.py`` (trial glue) -> ``_botorch.py`` (GP engine:
``_settings.py`` its choices, ``_mll.py`` the fit, ``_acquisition.py`` LogEI);
``_schema.py`` names every key written into the storage (public as ``metabp.search.schema``).
"""

from . import _schema as schema
from ._config import StudyConfig, TargetEntry
from ._hypergrad import HyperGrad, hypergrad
from ._load import load_study
from ._minimize import MinimizeResult, minimize
from ._samplers import SAMPLERS, LatinSampler, SobolSampler, make_sampler
from ._score import CandidatesOnly, Evaluation, Evaluator, Score, train_evaluator
from ._settings import EngineSettings
from ._storage import get_storage
from ._study import Study
from ._validate import format_heldout, tune_grid
from ._workers import retry_of

__all__ = [
    "Study", "StudyConfig", "TargetEntry", "load_study", "minimize", "MinimizeResult", "SAMPLERS",
    "make_sampler", "SobolSampler", "LatinSampler", "get_storage", "Evaluation", "Score", "train_evaluator",
    "format_heldout",
    "retry_of", "EngineSettings", "schema", "Evaluator", "CandidatesOnly", "tune_grid",
    "hypergrad", "HyperGrad",
]
