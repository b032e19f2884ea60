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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metabp.analysis._report_data import ReportRequest, compute
from metabp.analysis._report_figures import draw
from metabp.analysis._report_text import compare_summary, to_markdown


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`report` wrote: ``index`` (``index.md``) and the ``figures`` it links (PNGs)."""

    index: Path
    figures: list[Path]


def report(trials: Sequence[Any], request: ReportRequest, output: str | os.PathLike) -> ReportFiles:
    """Write ``output/index.md`` and its figures for a finished (or running) study.

    Args:
        trials: the study's Optuna trials (params ``omega_i`` and optionally ``lr``, value = score,
            user attrs ``step_losses``, ``diverged``, ``test_accuracy``, ``heldout_aulc``).
        request: the target, the study's setup and stored scores, and what to compute
            (:class:`~metabp.analysis.ReportRequest`).
        output: folder to write into (created).

    Returns:
        The paths of ``index.md`` and of the PNGs written beside it.
    """
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    data = compute(trials, request)
    figs = draw(data, out)
    compare_md, compare_line = compare_summary(out)
    index = out / "index.md"
    index.write_text(to_markdown(data, figs, compare_md=compare_md, compare_line=compare_line))
    return ReportFiles(index, [f.path for f in figs.values()])
