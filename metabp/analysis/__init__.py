"""metabp.analysis: what a b-function does, in numbers and pictures.

* :func:`gradient_alignment` / :func:`alignment_run`: cosine per layer between the true backprop
  gradient and the gradient a patched model applies.
* :func:`compare` / :func:`compare_study`: a b-function against plain backprop, "lr tuned alone"
  and each baseline optimizer with a tuned learning rate, on held-out seeds, with a verdict in
  standard errors.
* :func:`report` / :func:`report_study`: ``index.md`` with a study's findings and figures.
* :func:`transfer`: a saved b-function against plain backprop on other targets.
* :func:`explain` / :func:`explain_file`: what a found ``g`` is: its description, named simple
  forms fitted to it (each a ``.bfn``) and the share of ``g``'s gain each recovers when trained.
* :func:`lr_sweep`: ``g`` and backprop over a sweep of learning rates (``compare(lr_sweep=8)``).

Each takes one ``g`` per site too (a ``metabp.PerSite``, e.g. a study with ``sites = [...]``):
``explain`` describes and fits every site's ``g`` (:func:`fit_sites`) and trains each form fitted
at every site as one ``PerSite``; ``compare`` and ``transfer`` train it at its own sites (``where``
must then be None; in ``transfer`` a target lacking one of them is a row marked not applicable);
``report`` shows each site's chosen ``g``.

This package reaches into ``metabp.targets`` and ``metabp.search``; nothing in the core imports it.

Example::

    from metabp.analysis import compare_study, report_study, transfer, write_transfer
    compare_study("studies/quickstart.toml", seeds=5, output="report/")
    report_study("studies/quickstart.toml", output="report/")
    write_transfer(transfer("best.bfn", ["digits-mlp", "mnist1d-mlp"], seeds=5), "transfer/")
"""

from __future__ import annotations

from metabp.analysis._alignment import (
    AlignmentTrace,
    alignment_run,
    cosine_by_layer,
    gradient_alignment,
    true_gradients,
)
from metabp.analysis._compare import Comparison, MethodResult, compare, evaluate
from metabp.analysis._compare_output import TUNING
from metabp.analysis._describe import Description, describe
from metabp.analysis._explain import ablate, explain
from metabp.analysis._explain_output import SHARE_GOAL
from metabp.analysis._explain_output import percent as share_percent
from metabp.analysis._explain_result import AblationRow, Explanation
from metabp.analysis._explain_sites import fit_sites
from metabp.analysis._explain_study import explain_file
from metabp.analysis._forms import Form, fit_forms
from metabp.analysis._lr_sweep import LrSweep, lr_sweep
from metabp.analysis._lr_sweep import read_csv as read_sweep
from metabp.analysis._lr_sweep import to_markdown as sweep_markdown
from metabp.analysis._lr_sweep import write as write_sweep
from metabp.analysis._report import ReportFiles, report
from metabp.analysis._report_data import ReportData, ReportRequest, compute, trial_bfn, trial_omega
from metabp.analysis._stats import Paired, mean_std, paired
from metabp.analysis._study import baseline_studies, compare_study, heldout_seeds, report_study
from metabp.analysis._transfer import Transfer, TransferRow, transfer
from metabp.analysis._transfer import write as write_transfer
from metabp.analysis._tuning import BASELINES, LR_RANGES, MULTIPLIER_RANGE, Tuned, tune_lr, tune_methods

__all__ = [
    "gradient_alignment", "alignment_run", "cosine_by_layer",
    "true_gradients", "AlignmentTrace", "compare", "compare_study", "evaluate", "tune_lr",
    "tune_methods", "Tuned", "Comparison", "MethodResult", "BASELINES", "LR_RANGES",
    "MULTIPLIER_RANGE", "report", "report_study", "ReportRequest", "ReportFiles", "compute", "ReportData",
    "trial_bfn",
    "trial_omega", "baseline_studies", "heldout_seeds", "transfer", "write_transfer", "Transfer",
    "TransferRow", "paired", "Paired", "mean_std", "explain", "explain_file", "Explanation", "AblationRow",
    "ablate", "describe", "Description", "fit_forms", "fit_sites", "Form", "lr_sweep", "LrSweep",
    "read_sweep", "sweep_markdown", "write_sweep", "TUNING", "SHARE_GOAL", "share_percent",
]
