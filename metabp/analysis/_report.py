r"""A study report: ``index.md`` and its figures, saying what a b-function search found.

Three steps, one module each: :func:`~metabp.analysis._report_data.compute` (the numbers, a
:class:`~metabp.analysis._report_data.ReportData`), :func:`~metabp.analysis._report_figures.draw`
(the PNGs) and :func:`~metabp.analysis._report_text.to_markdown` (``index.md``). Sections:

1. *Summary*: best search score against plain backprop on the same seeds; the held-out scores of
   the chosen candidate and of the study's controls; overfitting.
2. *Held-out validation*: search-seed score against held-out score of the validated candidates.
3. *Search progress*: best score so far against trial number (random/TPE baselines too).
4. *The chosen b-function*: ``g(z)`` beside ``sigma'(z)`` and its implicit learning rate
   :math:`\beta(z) = \mathrm{lr}\, g(z)/\sigma'(z)` (paper eq. 4).
5. *Agreement among the top candidates*, 6. *Loss curves*, 7. *Gradient alignment* (see
   :mod:`metabp.analysis._alignment`), and the table of ``metabp compare`` when it was run into
   the same folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from metabp.analysis._report_data import compute
from metabp.analysis._report_figures import draw
from metabp.analysis._report_text import compare_summary, to_markdown


def report(
    trials: Sequence[Any],
    *,
    spec: Any,
    output: str | os.PathLike,
    where: str | None = None,
    hidden: int = 1,
    act: str = "tanh",
    name: str = "study",
    sampler: str = "study",
    seeds: Sequence[int] = (0,),
    backprop: Mapping | None = None,
    controls: Mapping | None = None,
    multi_target: bool = False,
    baselines: Mapping[str, Sequence[Any]] | None = None,
    top: int = 10,
    alignment: bool = True,
    device: str = "cpu",
    data_dir: str | None = None,
    progress: bool = False,
) -> Path:
    """Write ``output/index.md`` and its figures for a finished (or running) study.

    Args:
        trials: the study's Optuna trials (params ``omega_i`` and optionally ``lr``, value = score,
            user attrs ``step_losses``, ``diverged``, ``test_accuracy``, ``heldout_aulc``).
        spec: the (first) target (``metabp.targets.TargetSpec``) the trials trained.
        output: folder to write into (created).
        where: the patch site; None for ``spec.where``.
        hidden, act: the meta-network's shape.
        name, sampler: the study's name and sampler, for the text.
        seeds: the search seeds (a trial's score is its mean over them).
        backprop: the study's ``backprop`` user attr (``mean`` on the search seeds), if stored.
        controls: the study's ``heldout_controls`` (``backprop``, ``tuned_lr``), if validated.
        multi_target: scores are ratios to backprop over several targets (backprop scores 1).
        baselines: label -> trials of baseline searches (random, TPE) on the same problem.
        top: how many of the best candidates to draw in the spread figure.
        alignment: train the chosen ``g`` once more to record gradient alignment.
        device, data_dir: for the training runs the report makes (plain backprop, alignment).
        progress: tqdm bars.

    Returns:
        The path of ``index.md``.
    """
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    data = compute(trials, spec=spec, where=where, hidden=hidden, act=act, name=name, sampler=sampler,
                   seeds=seeds, backprop=backprop, controls=controls, multi_target=multi_target,
                   baselines=baselines, top=top, alignment=alignment, device=device, data_dir=data_dir,
                   progress=progress)
    figs = draw(data, out)
    compare_md, compare_line = compare_summary(out)
    index = out / "index.md"
    index.write_text(to_markdown(data, figs, compare_md=compare_md, compare_line=compare_line))
    return index
