r"""Plots of b-functions, implicit learning rates and loss curves (matplotlib, headless).

Every function draws on a fresh :class:`matplotlib.figure.Figure` with the Agg canvas (no
``pyplot``, no display, no global backend switch), writes a PNG to ``path`` and returns a
:class:`Plotted`: the path and the numbers it drew, so a caller (or a test) can check them.

The implicit learning rate (paper eq. 4) drawn by :func:`plot_implicit_lr` is

.. math:: \beta(z) = \mathrm{lr} \, \frac{g(z)}{\sigma'(z)}, \qquad \sigma'(z) \neq 0,

undefined where :math:`\sigma'(z) = 0` (:data:`metabp._implicit_lr.SCALE_NOTE` says how to read it
under SGD-like and Adam-like optimizers; :func:`optimizer_note` says it for one optimizer).

Example:
    >>> import tempfile, metabp
    >>> out = plot_implicit_lr(metabp.Scaled(0.5), "relu", lr=0.1,
    ...                        path=tempfile.mktemp(suffix=".png"))
    >>> float(out.data["beta"][-1])
    0.05
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from metabp._plot_base import Plotted, bfunction_curves, optimizer_note
from metabp._plot_bfunctions import (
    CREDIT_TOL,
    injected_credit,
    plot_bfunction,
    plot_bfunction_panels,
    plot_bfunction_spread,
    plot_bfunctions,
    plot_implicit_lr,
)
from metabp._plot_curves import (
    best_so_far,
    plot_alignment,
    plot_heldout_scatter,
    plot_loss_curves,
    plot_search_trace,
    plot_transfer,
)

__all__ = [
    "Plotted", "bfunction_curves", "optimizer_note", "plot_bfunction", "plot_bfunction_panels",
    "plot_bfunctions", "site_file_names",
    "plot_implicit_lr", "plot_bfunction_spread", "injected_credit", "CREDIT_TOL", "plot_loss_curves",
    "best_so_far", "plot_search_trace", "plot_alignment", "plot_heldout_scatter", "plot_transfer",
]


def site_file_names(sites: Iterable[str]) -> dict[str, str]:
    """Each site (a module name or a glob) as part of a file name: characters other than letters,
    digits, ``.``, ``_`` and ``-`` become ``_``; where two sites would then share a name, each name
    ends in its site's position.

    Example:
        >>> site_file_names(["act1", "features.*"])
        {'act1': 'act1', 'features.*': 'features._'}
        >>> site_file_names(["a*", "a?"])
        {'a*': 'a_0', 'a?': 'a_1'}
    """
    names = {s: re.sub(r"[^A-Za-z0-9._-]", "_", s) for s in sites}
    if len(set(names.values())) < len(names):
        names = {s: f"{n}{i}" for i, (s, n) in enumerate(names.items())}
    return names
