r"""One b-function per activation site: each site backprops its own ``g``.

With sites :math:`s = 1..S` (activation modules of one network), site :math:`s` backprops
:math:`g_s` in place of :math:`\sigma'`:

.. math:: \delta^l = \big((W^{l+1})^T \delta^{l+1}\big) \odot g_{s(l)}(z^l),

where :math:`s(l)` is the site after layer :math:`l`. One :class:`PerSite` holds the map
``site -> g_s``; a site is a selector as for :func:`metabp.patch` (a module name or a glob).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from torch import Tensor, nn

from metabp._activations import activation_of
from metabp._bfunctions import BFunction
from metabp._select import select
from metabp.exceptions import PatchError

#: Most sites one PerSite holds (a network has a few dozen activations at most).
MAX_SITES = 256


class PerSite(Mapping[str, BFunction]):
    """``{site: g}``: the b-function of each activation site, e.g. ``PerSite({"act1": g1, "act2": g2})``.

    A read-only mapping (site -> :class:`~metabp.BFunction`, in the given order) with provenance in
    ``meta`` (as a b-function's). :func:`metabp.patch`, :func:`metabp.save` / :func:`metabp.load`
    and ``metabp.targets.train`` / ``train_many`` take it wherever they take one b-function.

    Example:
        >>> import metabp
        >>> g = PerSite({"act1": metabp.Scaled(0.5), "act2": metabp.Derivative("relu")})
        >>> list(g), g["act1"].c
        (['act1', 'act2'], 0.5)
    """

    kind = "per_site"

    def __init__(self, functions: Mapping[str, BFunction], *, meta: Mapping[str, Any] | None = None):
        if not isinstance(functions, Mapping):
            raise PatchError(f"PerSite(functions={functions!r}): must be a dict {{site: b-function}}")
        if not 1 <= len(functions) <= MAX_SITES:
            raise PatchError(f"PerSite(functions={dict(functions)!r}): needs 1 to {MAX_SITES} sites")
        for site, g in functions.items():
            if not isinstance(site, str) or not site:
                raise PatchError(f"PerSite: site {site!r} must be a non-empty module name or glob")
            if not isinstance(g, BFunction):
                raise PatchError(f"PerSite: {site!r} -> {g!r} is not a b-function; pass metabp.MetaNet, "
                                 "Derivative or Scaled")
        if meta is not None and not isinstance(meta, Mapping):
            raise PatchError(f"PerSite(meta={meta!r}): must be a dict of provenance, or None")
        self._functions = dict(functions)
        self.meta: dict[str, Any] = dict(meta or {})

    def __getitem__(self, site: str) -> BFunction:
        return self._functions[site]

    def __iter__(self) -> Iterator[str]:
        return iter(self._functions)

    def __len__(self) -> int:
        return len(self._functions)

    def __repr__(self) -> str:
        return f"PerSite({self._functions!r})"

    def resolve(self, model: nn.Module) -> dict[str, BFunction]:
        """Module name -> b-function for ``model``'s activations, in module order.

        Raises:
            PatchError: a site matches none of ``model``'s activations, or two sites match one.
        """
        acts = {name: m for name, m in model.named_modules() if activation_of(m) is not None}
        if not acts:
            raise PatchError(f"{type(model).__name__} has no activation modules for the sites {list(self)}")
        found: dict[str, tuple[str, BFunction]] = {}
        for site, g in self._functions.items():
            for name in select(acts, site, noun="activation", plural="activations", label="PerSite: site "):
                if name in found:
                    raise PatchError(f"PerSite: sites {found[name][0]!r} and {site!r} both select "
                                     f"activation {name!r}; give each activation one b-function")
                found[name] = (site, g)
        return {name: found[name][1] for name in acts if name in found}

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Tensors ``"{j}.{name}"`` of site ``j`` and the config ``{"sites": [{site, kind, config}]}``."""
        tensors, sites = {}, []
        for j, (site, g) in enumerate(self._functions.items()):
            own, config = g.state()
            # copies: one b-function at two sites must not give the file two views of one tensor
            tensors.update({f"{j}.{name}": t.detach().clone() for name, t in own.items()})
            sites.append({"site": site, "kind": g.kind, "config": config})
        return tensors, {"sites": sites}

    @classmethod
    def from_state(cls, tensors: dict[str, Tensor], config: dict[str, Any],
                   kinds: Mapping[str, type[BFunction]]) -> PerSite:
        """Inverse of :meth:`state`; ``kinds`` maps each site's ``kind`` to its class."""
        return cls({entry["site"]: kinds[entry["kind"]].from_state(site_tensors(tensors, j), entry["config"])
                    for j, entry in enumerate(config["sites"])})


def site_tensors(tensors: dict[str, Tensor], j: int) -> dict[str, Tensor]:
    """The tensors of site ``j`` in a :meth:`PerSite.state`, without their ``"{j}."`` prefix."""
    prefix = f"{j}."
    return {name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)}


def as_per_site(bfn: Any) -> Any:
    """A plain ``dict`` of b-functions as a :class:`PerSite`; anything else unchanged."""
    return PerSite(bfn) if isinstance(bfn, Mapping) and not isinstance(bfn, PerSite) else bfn


def is_per_site(obj: Any) -> bool:
    """Whether ``obj`` is a :class:`PerSite` (one b-function per site)."""
    return isinstance(obj, PerSite)


__all__ = ["PerSite", "as_per_site", "is_per_site", "site_tensors", "MAX_SITES"]
