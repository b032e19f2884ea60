"""The output of :func:`metabp.analysis.explain`: Markdown, CSV, a PNG of g and its forms, ``.bfn`` files."""

from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path

from metabp.analysis._explain_result import AblationRow, Explanation
from metabp.analysis._forms import Form
from metabp.analysis._stats import mean_std, pm

KEPT_META = ("target", "overrides", "where", "sites", "study", "trial")  # g's provenance a form's .bfn keeps
SHARE_GOAL = 0.7  # a form "explains" g when it recovers at least this share of g's gain


def percent(share: float) -> str:
    """``share`` in percent, whole, or to two decimals where rounding would hide on which side of
    :data:`SHARE_GOAL` it lies (0.69986 is "69.99%", not "70%").

    Example:
        >>> percent(1.2), percent(0.69986), percent(0.7)
        ('120%', '69.99%', '70%')
    """
    text = f"{100 * share:.0f}%"
    return f"{100 * share:.2f}%" if text == f"{100 * SHARE_GOAL:.0f}%" and share != SHARE_GOAL else text


def _share(r: AblationRow) -> str:
    return "" if r.kind != "form" or not math.isfinite(r.share) else percent(r.share)


def _z(z: float) -> str:
    return "" if not math.isfinite(z) else f"{z:.1f}"


def slug(name: str) -> str:
    """A file name for a form: ``"3-level step"`` -> ``"3-level-step"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def verdict(result: Explanation) -> str:
    """One sentence: g's gain over the baseline and the form that recovers most of it."""
    g, base = result.row("g"), result.row("baseline")
    gain = base.aulc[0] - g.aulc[0]
    if not gain > 0:
        return (f"g has no gain over {base.label} on these seeds (AULC {g.aulc[0]:.4f} against "
                f"{base.aulc[0]:.4f}), so no share of a gain is defined.")
    best = result.best_form
    text = (f"g's gain over {base.label} is {gain:.4g} AULC (paired z = {_z(g.z)}). ")
    if best is None:
        return text + "No form has a defined share."
    held = "at least" if best.share >= SHARE_GOAL else "less than"
    return text + (f"The form that recovers most of it is the {best.label} ({best.form.text}): "
                   f"{percent(best.share)} of the gain, {held} {100 * SHARE_GOAL:.0f}%; its paired z "
                   f"against {base.label} is {_z(best.z)}.")


def _what_g(result: Explanation) -> list[str]:
    """The description: of ``g``, or of each site's ``g`` under a bold ``Site`` line (not a heading,
    so a page that drops headings keeps which site each line is about), then each site's forms."""
    if not result.sites:
        where = f" at `{result.where}`" if result.where else ""
        lines = [f"## What g is (`{result.target}`{where}, in place of {result.activation}')", ""]
        return lines + [f"- {line}" for line in result.description.lines()]
    names = ", ".join(f"`{s}`" for s in result.sites)
    lines = [f"## What g is (`{result.target}`, one g per site: {names}, each in place of "
             f"{result.activation}')"]
    for site, d in result.descriptions.items():
        lines += ["", f"**Site `{site}`**", "", *[f"- {line}" for line in d.lines()]]
    lines += ["", f"### Named forms fitted at each site on z in [-{result.zmax:g}, {result.zmax:g}]", "",
              "| form | site | fitted | RMS error | relative |", "|---|---|---|---:|---:|"]
    for site, forms in result.site_forms.items():
        lines += [f"| {f.name} | `{site}` | {f.text} | {f.rms:.4g} | {f.rel:.3f} |" for f in forms]
    return lines


def to_markdown(result: Explanation) -> str:
    """What g is, the forms fitted to it and what each recovers when trained."""
    zmax = result.zmax
    each = (" Each form row trains that form fitted at every site (RMS error pooled over the sites)."
            if result.sites else "")
    lines = [*_what_g(result), "",
             f"### Named forms fitted on z in [-{zmax:g}, {zmax:g}], trained on held-out seeds", "",
             f"Every form and g train at g's lr ({result.lr!r}) on the held-out seeds "
             f"{', '.join(map(str, result.seeds))}, paired by seed with the baseline.{each} RMS error: of "
             "form - g on the grid (relative: over the RMS of g). Share of g's gain = "
             "(AULC baseline - AULC form) / (AULC baseline - AULC g), mean AULCs; z: the paired "
             "difference against the baseline (and against g) in standard errors, negative: lower AULC.", "",
             "**Verdict.** " + verdict(result), "",
             "| row | fitted | RMS error | relative | lr | AULC (mean ± std) | share of g's gain "
             "| z vs baseline | z vs g | test acc | file |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in result.rows:
        f = r.form
        fitted = f.text if f is not None else ("the b-function explained" if r.kind == "g"
                                               else f"backprop, {r.optimizer}")
        err = (f"{f.rms:.4g}", f"{f.rel:.3f}") if f is not None else ("", "")
        file = f"`forms/{slug(r.label)}.bfn`" if f is not None else ""
        lines.append(f"| {r.label} | {fitted} | {err[0]} | {err[1]} | {r.lr!r} | {pm(r.aulc)} | "
                     f"{_share(r)} | {_z(r.z)} | {_z(r.z_g)} | {pm(mean_std(r.test_accuracy), '.3f')} | "
                     f"{file} |")
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ["row", "kind", "fitted", "params", "rms_error", "relative_error", "optimizer", "lr",
               "aulc_mean", "aulc_std", "share_of_gain", "z_vs_baseline", "z_vs_g", "seeds", "aulc_per_seed"]


def _csv_line(result: Explanation, r: AblationRow, f_: Form | None) -> list:
    return [r.label, r.kind, f_.text if f_ else "", repr(f_.params) if f_ else "", f_.rms if f_ else "",
            f_.rel if f_ else "", r.optimizer, repr(r.lr), *r.aulc, r.share, r.z, r.z_g,
            " ".join(map(str, result.seeds)), " ".join(repr(a) for a in r.aulcs)]


def _write_csv(result: Explanation, path: Path) -> None:
    """One line per row; for one g per site a last column ``site``: ``all`` on each row's line (a
    form set's pooled error), then a line per site for each form row (that site's fitted form)."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS + (["site"] if result.sites else []))
        for r in result.rows:
            if not result.sites:
                w.writerow(_csv_line(result, r, r.form))
                continue
            w.writerow([*_csv_line(result, r, r.form), "all"])
            for site in result.sites if r.form is not None else ():
                form = next(x for x in result.site_forms[site] if x.name == r.form.name)
                w.writerow([*_csv_line(result, r, form), site])


def _png(result: Explanation, path: Path) -> Path:
    """g with its fitted forms over it: one axis, or one panel per site."""
    import torch

    from metabp.plots import plot_bfunction_panels, plot_bfunctions

    zmax = result.zmax * 1.25
    z = torch.linspace(-zmax, zmax, 801, dtype=torch.float64)
    styles = {"g": {"lw": 3.0, "color": "k"}}
    title = f"{result.target}: g and the simple forms fitted to it"  # numbers: in explain.md
    if not result.sites:
        curves = {"g": result.g, **{f.name: f.bfn for f in result.forms}}
        return plot_bfunctions(curves, result.activation, path, z=z, styles=styles, title=title).path
    panels = {f"site {s}": {"g": result.g[s], **{f.name: f.bfn for f in result.site_forms[s]}}
              for s in result.sites}
    return plot_bfunction_panels(panels, result.activation, path, z=z, styles=styles,
                                 title=title + " at each site").path


def write(result: Explanation, output: str | os.PathLike) -> dict[str, Path]:
    """``explain.md``, ``explain.csv``, ``explain.png`` and ``forms/<form>.bfn`` into ``output``
    (for one g per site, each ``.bfn`` holds the form fitted at every site, as a ``PerSite``)."""
    import metabp

    out = Path(output)
    (out / "forms").mkdir(parents=True, exist_ok=True)
    md = out / "explain.md"
    md.write_text(result.markdown + "\n![g and its forms](explain.png)\n")
    path_csv = out / "explain.csv"
    _write_csv(result, path_csv)
    keep = {k: result.g_meta[k] for k in KEPT_META if k in result.g_meta}
    for f in result.forms:
        meta = {**keep, "form": f.name, "fitted": f.text, "lr": result.lr}
        metabp.save(f.bfn, out / "forms" / f"{slug(f.name)}.bfn", meta=meta)
    png = _png(result, out / "explain.png")
    return {"markdown": md, "csv": path_csv, "png": png, "forms": out / "forms"}
