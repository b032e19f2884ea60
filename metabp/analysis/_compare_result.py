"""The result of :func:`metabp.analysis.compare`: its rows, the paired differences, the verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metabp import SCALE_INVARIANT
from metabp.analysis._stats import Paired, in_words, mean_std, paired


@dataclass
class MethodResult:
    """One row of the comparison: a method, its settings and its runs over the held-out seeds.

    Attributes:
        label: row name, e.g. ``"best g (trial 7)"``, ``"adam (tuned lr)"``.
        kind: ``plain``, ``bfn``, ``control`` (lr tuned alone) or ``baseline``.
        optimizer, lr: what it trained with (after tuning).
        runs: one ``metabp.targets.Run`` per evaluation seed, in seed order.
        tuning_runs: trials spent tuning it (0 when nothing was tuned).
        note: e.g. the searched lr range.
    """

    label: str
    kind: str
    optimizer: str
    lr: float
    runs: list[Any] = field(default_factory=list)
    tuning_runs: int = 0
    note: str = ""

    @property
    def aulcs(self) -> list[float]:
        return [r.aulc for r in self.runs]

    @property
    def aulc(self) -> tuple[float, float]:
        """(mean, std) of the AULC over seeds."""
        return mean_std(self.aulcs)

    @property
    def final_loss(self) -> tuple[float, float]:
        """(mean, std) of the last training-step loss over the seeds that did not diverge."""
        return mean_std([r.step_losses[-1] for r in self.runs if r.step_losses and not r.diverged])

    @property
    def test_accuracy(self) -> tuple[float, float]:
        return mean_std([r.test_accuracy for r in self.runs])

    @property
    def diverged(self) -> int:
        return sum(bool(r.diverged) for r in self.runs)


@dataclass
class Comparison:
    """The result of :func:`compare`: rows sorted by mean AULC, and the files written."""

    rows: list[MethodResult]
    optimizer: str
    seeds: list[int]
    budget: int
    tune_seeds: list[int] = field(default_factory=list)
    target: str = "target"
    where: str | None = None
    markdown: str = ""
    files: dict[str, Path] = field(default_factory=dict)
    sweep: Any = None  # a metabp.analysis._lr_sweep.LrSweep when compare ran one
    sites: list[str] = field(default_factory=list)  # the sites of a PerSite g (one g per site)

    @property
    def scale_invariant(self) -> bool:
        return self.optimizer in SCALE_INVARIANT

    def row(self, label: str) -> MethodResult:
        for r in self.rows:
            if r.label == label:
                return r
        raise KeyError(f"no row {label!r}; rows: {', '.join(r.label for r in self.rows)}")

    def kind(self, kind: str) -> MethodResult | None:
        """The first row of ``kind`` (``bfn``, ``control``, ``plain``), or None."""
        return next((r for r in self.rows if r.kind == kind), None)

    def versus(self, a: MethodResult, b: MethodResult) -> Paired:
        """Paired difference of the AULCs of rows ``a`` and ``b`` over the held-out seeds."""
        return paired(a.aulcs, b.aulcs)

    def verdict(self) -> list[str]:
        """Sentences: the winner on the held-out seeds, and ``g`` against "lr tuned alone", the best
        other row and plain backprop, each by the paired difference in standard errors."""
        best = self.rows[0]
        out = [f"On the held-out seeds the lowest mean AULC is {best.label}'s ({best.aulc[0]:.4f})."]
        g = self.kind("bfn")
        if g is None:
            return out
        others = [r for r in self.rows if r is not g]
        control, plain = self.kind("control"), self.kind("plain")
        rivals: list[MethodResult] = []
        for r in (control, others[0], plain):
            if r is not None and all(r is not q for q in rivals):
                rivals.append(r)
        out += [in_words(self.versus(g, r), g.label, r.label) for r in rivals]
        return out
