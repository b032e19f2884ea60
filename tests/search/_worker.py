"""A study worker for the multi-process tests: a cheap, slow, deterministic objective.

    python tests/search/_worker.py STORAGE NAME N_TRIALS SLEEP [SAMPLER]

The objective is ``sum((omega - 0.3)^2) + 0.01 seed`` (plain backprop: ``1 + 0.01 seed``), after
sleeping ``SLEEP`` seconds for candidates, so a test can kill the process mid-trial; it prints
``started`` as each batch starts training. The study validates on seeds 50 and 51 (top 2).
"""

from __future__ import annotations

import sys
import time

import torch

from metabp.search import Evaluation, Study, StudyConfig


def config(name: str, n_trials: int, sampler: str = "botorch") -> StudyConfig:
    return StudyConfig(name=name, target="gaussians-mlp3", bounds=((-1.0, 1.0),) * 4, n_initial=4,
                       n_trials=n_trials, sampler=sampler, seeds=(0, 1), validate_seeds=(50, 51),
                       validate_top_k=2)


def objective(omega: torch.Tensor) -> float:
    return float(((omega - 0.3) ** 2).sum())


def slow_evaluator(sleep: float):
    def evaluate(gs, seeds, *, target=0, lr=None):
        if any(g is not None for g in gs):
            print("started", flush=True)
            time.sleep(sleep)
        return [Evaluation(aulc=(1.0 if g is None else objective(g.omega)) + 0.01 * s, step_losses=[1.0, 0.5],
                           seconds=sleep) for g, s in zip(gs, seeds, strict=True)]

    return evaluate


if __name__ == "__main__":
    storage, name, n_trials, sleep = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    sampler = sys.argv[5] if len(sys.argv) > 5 else "botorch"
    study = Study(config(name, n_trials, sampler), storage=storage, evaluate=slow_evaluator(sleep))
    study.optimize(progress=False)
    print("done", flush=True)
