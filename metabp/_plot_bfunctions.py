r"""Plots of b-functions: ``g(z)`` beside ``sigma'(z)``, several ``g`` at once, their spread, and
the implicit learning rate :math:`\beta(z) = \mathrm{lr}\, g(z)/\sigma'(z)`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from torch import Tensor

from metabp._activations import get_activation
from metabp._bfunctions import ActivationLike, BFunction
from metabp._plot_base import (
    Plotted,
    bfunction_curves,
    figure,
    grid,
    optimizer_note,
    save,
    set_title,
    suptitle,
)
from metabp.exceptions import ConfigError

# Where sigma'(z) = 0, g counts as injecting credit when |g(z)| exceeds this fraction of max |g|
# over the plotted z; below it the unit gets (almost) no credit, as under backprop.
CREDIT_TOL = 0.01


def plot_bfunction(
    bfn: BFunction,
    activation: ActivationLike = "relu",
    path: str | os.PathLike = "bfunction.png",
    *,
    z: Tensor | None = None,
    label: str | None = None,
    title: str | None = None,
) -> Plotted:
    """``g(z)`` beside the ``sigma'(z)`` it replaces, on one axis.

    Args:
        bfn: the b-function ``g``.
        activation: the ``sigma`` it replaces (drawn dashed as ``sigma'``).
        path: PNG to write.
        z: pre-activations, 1-D; default ``linspace(-4, 4, 401)``.
        label: legend text for ``g``; default ``g(z)``.
        title: figure title; default the ``repr`` of ``bfn``.

    Returns:
        :class:`Plotted` with data ``z``, ``g``, ``dsigma``.
    """
    act = get_activation(activation)
    data = bfunction_curves(bfn, act, z=z)
    data.pop("beta")
    fig, (ax,) = figure()
    ax.plot(data["z"], data["g"], lw=2, label=label or "g(z)")
    ax.plot(data["z"], data["dsigma"], "k--", lw=1, label=f"{act.name}'(z) (replaced)")
    ax.axhline(0, color="0.8", lw=0.8)
    ax.set(xlabel="pre-activation z", ylabel="g(z)")
    set_title(ax, title or f"b-function g = {bfn!r}")
    ax.legend(fontsize=8, loc="best")
    return Plotted(save(fig, path), data)


def plot_bfunctions(
    bfns: Mapping[str, BFunction],
    activation: ActivationLike = "relu",
    path: str | os.PathLike = "bfunctions.png",
    *,
    z: Tensor | None = None,
    title: str | None = None,
    styles: Mapping[str, dict] | None = None,
) -> Plotted:
    """Several b-functions on one axis (paper Fig. 1a), labelled by the mapping's keys.

    ``styles`` maps a label to extra ``Axes.plot`` keywords (e.g. ``{"ls": "--"}``).

    Returns:
        :class:`Plotted` with data ``z`` and one array of ``g(z)`` per key.
    """
    if not bfns:
        raise ConfigError("bfns is empty; give at least one {label: b-function}")
    act = get_activation(activation)
    zz = grid(z)
    fig, (ax,) = figure()
    data = {"z": zz.numpy(), **_draw_bfunctions(ax, bfns, act, zz, styles)}
    set_title(ax, title or f"b-functions in place of {act.name}'")
    return Plotted(save(fig, path), data)


def _draw_bfunctions(ax, bfns: Mapping[str, BFunction], act, zz: Tensor,
                     styles: Mapping[str, dict] | None) -> dict[str, np.ndarray]:
    """Draw each ``g(z)`` of ``bfns`` on ``ax`` with a legend; label -> ``g(z)``."""
    data = {}
    for label, g in bfns.items():
        data[label] = g(zz, act).double().numpy()
        ax.plot(zz.numpy(), data[label], label=label, **{"lw": 1.6, **(styles or {}).get(label, {})})
    ax.axhline(0, color="0.8", lw=0.8)
    ax.set(xlabel="pre-activation z", ylabel="g(z)")
    ax.legend(fontsize=8)
    return data


def plot_bfunction_panels(
    panels: Mapping[str, Mapping[str, BFunction]],
    activation: ActivationLike = "relu",
    path: str | os.PathLike = "bfunction_panels.png",
    *,
    z: Tensor | None = None,
    title: str | None = None,
    styles: Mapping[str, dict] | None = None,
) -> Plotted:
    """One axis per panel (e.g. one per activation site), each as :func:`plot_bfunctions`.

    Returns:
        :class:`Plotted` with data ``z`` and ``"{panel}/{label}"`` -> ``g(z)``.
    """
    if not panels or not all(panels.values()):
        raise ConfigError("panels is empty or has an empty panel; give {panel: {label: b-function}}")
    act = get_activation(activation)
    zz = grid(z)
    fig, axes = figure(len(panels))
    data: dict[str, np.ndarray] = {"z": zz.numpy()}
    for ax, (name, bfns) in zip(axes, panels.items(), strict=True):
        drawn = _draw_bfunctions(ax, bfns, act, zz, styles)
        data.update({f"{name}/{label}": v for label, v in drawn.items()})
        set_title(ax, name)
    suptitle(fig, title or f"b-functions in place of {act.name}'")
    return Plotted(save(fig, path), data)


def injected_credit(g: np.ndarray, dsigma: np.ndarray) -> np.ndarray:
    """Where ``sigma' = 0`` but ``|g|`` exceeds ``CREDIT_TOL`` of ``max |g|``: credit backprop would
    not give (a boolean mask over the points)."""
    scale = float(np.nanmax(np.abs(g))) if g.size else 0.0
    return (dsigma == 0) & (np.abs(g) > CREDIT_TOL * scale) if scale > 0 else np.zeros(g.shape, bool)


def plot_implicit_lr(
    bfn: BFunction,
    activation: ActivationLike = "relu",
    lr: float = 1.0,
    path: str | os.PathLike = "implicit_lr.png",
    *,
    z: Tensor | None = None,
    optimizer: str | None = None,
    title: str | None = None,
) -> Plotted:
    r"""Two panels: ``g(z)`` with ``sigma'(z)``, and the implicit learning rate ``beta(z)``.

    :math:`\beta(z) = \mathrm{lr}\, g(z) / \sigma'(z)` is drawn where :math:`\sigma'(z) \neq 0`,
    with the plain ``lr`` as a dotted line. Where :math:`\sigma'(z) = 0` it does not exist: a
    red band marks where ``g`` is non-negligible there (``|g| > CREDIT_TOL * max|g|``, credit
    plain backprop would not give); a grey strip along the bottom marks the rest of the
    :math:`\sigma'(z) = 0` points, where ``g`` is about 0 as under backprop.

    Args:
        bfn: the b-function ``g``.
        activation: the ``sigma`` it replaces.
        lr: the optimizer's learning rate.
        path: PNG to write.
        z: pre-activations, 1-D; default ``linspace(-4, 4, 401)``.
        optimizer: the optimizer's name; the title then says whether a constant factor in ``g``
            cancels (scale-invariant, Adam-like) or is a learning rate (SGD-like).
        title: first line of the figure title; default the ``repr`` of ``bfn``.

    Returns:
        :class:`Plotted` with data ``z``, ``g``, ``dsigma``, ``beta`` and ``injected`` (the
        boolean mask of the red band).
    """
    act = get_activation(activation)
    data = bfunction_curves(bfn, act, lr=lr, z=z)
    zz, g, d, beta = data["z"], data["g"], data["dsigma"], data["beta"]
    data["injected"] = injected = injected_credit(g, d)
    quiet = (d == 0) & ~injected
    fig, (ax_g, ax_b) = figure(2, height=4.4)  # room for the beta legend below its axes
    ax_g.plot(zz, g, lw=2, label="g(z)")
    ax_g.plot(zz, d, "k--", lw=1, label=f"{act.name}'(z) (replaced)")
    ax_g.axhline(0, color="0.8", lw=0.8)
    ax_g.set(xlabel="pre-activation z", ylabel="factor in the backward pass")
    set_title(ax_g, "b-function")
    ax_g.legend(fontsize=8)

    ax_b.plot(zz, beta, lw=2, color="C2", label=r"$\beta(z)$ = lr $\cdot$ g(z) / " + f"{act.name}'(z)")
    ax_b.axhline(lr, color="k", ls=":", lw=1, label=f"lr = {lr:g}")
    xaxis = ax_b.get_xaxis_transform()
    if injected.any():
        ax_b.fill_between(zz, 0, 1, where=injected, transform=xaxis, color="C3", alpha=0.15,
                          label=f"{act.name}' = 0, g != 0: " + r"$\beta$ undefined, credit injected")
    if quiet.any():
        ax_b.fill_between(zz, 0, 0.04, where=quiet, transform=xaxis, color="0.6",
                          label=f"{act.name}' = 0, g ~ 0: " + r"$\beta$ undefined, no credit")
    ax_b.set(xlabel="pre-activation z", ylabel=r"implicit learning rate $\beta(z)$")
    set_title(ax_b, "implicit learning rate")
    ax_b.legend(fontsize=7, ncols=2, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    suptitle(fig, f"{title or repr(bfn)}\n{optimizer_note(optimizer)}")
    return Plotted(save(fig, path), data)


def plot_bfunction_spread(
    bfns: Sequence[BFunction],
    activation: ActivationLike = "relu",
    path: str | os.PathLike = "spread.png",
    *,
    z: Tensor | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Plotted:
    """The spread of several candidates' ``g(z)``: each curve thin, their median and 10-90% band.

    Use it for the top candidates of a study: a tight band says the search agrees on a shape.

    Returns:
        :class:`Plotted` with data ``z``, ``curves`` (``k x n``), ``median``, ``q10``, ``q90``.
    """
    if len(bfns) == 0:
        raise ConfigError("bfns is empty; give at least one b-function")
    act = get_activation(activation)
    zz = grid(z)
    curves = np.stack([g(zz, act).double().numpy() for g in bfns])
    data = {"z": zz.numpy(), "curves": curves, "median": np.median(curves, 0),
            "q10": np.quantile(curves, 0.1, 0), "q90": np.quantile(curves, 0.9, 0)}
    fig, (ax,) = figure(width=5.5, height=4.0)
    ax.fill_between(data["z"], data["q10"], data["q90"], color="C0", alpha=0.2, label="10-90%")
    for i, c in enumerate(curves):
        ax.plot(data["z"], c, color="C0", lw=0.6, alpha=0.5,
                label=(labels[i] if labels is not None and i < 3 else None))
    ax.plot(data["z"], data["median"], color="C0", lw=2, label="median")
    ax.plot(data["z"], act.derivative(zz).numpy(), "k--", lw=1, label=f"{act.name}'(z)")
    ax.axhline(0, color="0.8", lw=0.8)
    ax.set(xlabel="pre-activation z", ylabel="g(z)")
    set_title(ax, title or f"top {len(bfns)} candidates")
    ax.legend(fontsize=8)
    return Plotted(save(fig, path), data)
