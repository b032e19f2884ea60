"""Study files (TOML) -> a validated, frozen :class:`StudyConfig`.

A study file overrides only what differs from the defaults (like nanoGPT's ``config/``)::

    name = "quickstart"            # default: the file's stem
    where = "act2"                 # patch site; default: the target preset's
    seed = 0                       # training seed, the same for every candidate (common random numbers)
    device = "cpu"

    [target]
    preset = "gaussians-mlp3"      # any name metabp.targets knows
    epochs = 2                     # every other key overrides a TargetSpec field

    [metanet]
    hidden = 1                     # g(z) = sum_k w2_k act(w1_k z + b1_k) + b2, 3*hidden+1 weights
    act = "tanh"

    [search]
    sampler = "botorch"            # botorch | random | tpe | gp | cmaes
    acquisition = "logei"          # logei (one proposal at a time) | qlogei (batches of q)
    q = 1
    n_initial = 8                  # Sobol points before the GP takes over
    n_trials = 40                  # total budget (completed trials)
    bounds = [-5.0, 5.0]           # one box for every omega_i, or one [lo, hi] per parameter
    seed = 0                       # the sampler's seed
    storage = "quickstart.journal" # Optuna storage URL or journal file; default beside the study file

Everything is checked once, here; an error names the file, the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metabp.exceptions import ConfigError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

SAMPLER_NAMES = ("botorch", "random", "tpe", "gp", "cmaes")
ACQUISITIONS = ("logei", "qlogei")

_TOP_KEYS = {"name", "where", "seed", "device", "data_dir", "target", "metanet", "search"}
_METANET_KEYS = {"hidden", "act"}
_SEARCH_KEYS = {"sampler", "acquisition", "q", "n_initial", "n_trials", "bounds", "seed", "storage"}


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """One study: what to train, which meta-network, how to search. Frozen and validated.

    Attributes:
        name: the study's name in its storage.
        target: target preset name (``metabp.targets.get_target``).
        overrides: ``(key, value)`` pairs passed to ``get_target`` (sorted by key).
        where: patch site, or ``None`` for the preset's.
        seed: training seed shared by every candidate (common random numbers).
        device: torch device for training.
        data_dir: dataset directory passed to ``train`` (``None``: the targets' default).
        hidden, act: the meta-network's shape (``metabp.MetaNet(hidden, act)``).
        bounds: one ``(lo, hi)`` per meta-network weight, ``3*hidden+1`` of them.
        sampler, acquisition, q, n_initial, n_trials, sampler_seed: the search.
        storage: Optuna storage URL or journal path; ``None``: ``<study file stem>.journal`` beside it.
        path: the study file this came from (``None`` when built in code).
    """

    name: str
    target: str
    overrides: tuple[tuple[str, Any], ...] = ()
    where: str | None = None
    seed: int = 0
    device: str = "cpu"
    data_dir: str | None = None
    hidden: int = 1
    act: str = "tanh"
    bounds: tuple[tuple[float, float], ...] = ()
    sampler: str = "botorch"
    acquisition: str = "logei"
    q: int = 1
    n_initial: int = 8
    n_trials: int = 40
    sampler_seed: int = 0
    storage: str | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        where = f" in {self.path}" if self.path else ""
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"name = {self.name!r}{where}: the study name must be a non-empty string")
        if not isinstance(self.target, str) or not self.target:
            raise ConfigError(
                f"[target] preset = {self.target!r}{where}: give a target preset name, "
                'e.g. preset = "gaussians-mlp3"'
            )
        _check_int("[metanet] hidden", self.hidden, 1, where)
        if not isinstance(self.act, str):
            raise ConfigError(f"[metanet] act = {self.act!r}{where}: must be an activation name string")
        _check_int("seed", self.seed, 0, where)
        if self.sampler not in SAMPLER_NAMES:
            raise ConfigError(
                f"[search] sampler = {self.sampler!r}{where}: unknown sampler; "
                f"choose one of {', '.join(SAMPLER_NAMES)}"
            )
        if self.acquisition not in ACQUISITIONS:
            raise ConfigError(
                f"[search] acquisition = {self.acquisition!r}{where}: unknown acquisition; "
                f"choose one of {', '.join(ACQUISITIONS)}"
            )
        _check_int("[search] q", self.q, 1, where)
        if self.q > 1 and self.acquisition != "qlogei":
            raise ConfigError(
                f"[search] q = {self.q}{where} needs acquisition = \"qlogei\" "
                f"(acquisition = {self.acquisition!r} proposes one point at a time)"
            )
        _check_int("[search] n_initial", self.n_initial, 1, where)
        _check_int("[search] n_trials", self.n_trials, 1, where)
        _check_int("[search] seed", self.sampler_seed, 0, where)
        num = 3 * self.hidden + 1
        if len(self.bounds) != num:
            raise ConfigError(
                f"[search] bounds{where}: {len(self.bounds)} (lo, hi) pairs for a meta-network with "
                f"3*hidden+1 = {num} weights; give one box [lo, hi] or {num} pairs"
            )
        for i, (lo, hi) in enumerate(self.bounds):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ConfigError(
                    f"[search] bounds[{i}] = [{lo}, {hi}]{where}: need finite lo < hi"
                )

    @property
    def num_params(self) -> int:
        """Number of meta-network weights ``3*hidden+1``, the search space's dimension."""
        return 3 * self.hidden + 1

    @property
    def param_names(self) -> list[str]:
        """Optuna parameter names ``omega_0 .. omega_{P-1}``."""
        return [f"omega_{i}" for i in range(self.num_params)]

    def target_spec(self):
        """The validated ``metabp.targets.TargetSpec`` (imports the targets layer)."""
        from metabp.targets import get_target

        try:
            return get_target(self.target, **dict(self.overrides))
        except ConfigError as exc:
            where = f" in {self.path}" if self.path else ""
            raise ConfigError(f"[target]{where}: {exc}") from exc

    def default_storage(self) -> str:
        """The storage used when none is given: a journal file beside the study file."""
        if self.storage is not None:
            return self.storage
        base = Path(self.path).with_suffix(".journal") if self.path else Path(f"{self.name}.journal")
        return str(base)

    def replace(self, **changes: Any) -> StudyConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def identity(self) -> dict[str, Any]:
        """What must agree between workers sharing one study (stored with the study)."""
        return {
            "target": self.target,
            "overrides": {k: v for k, v in self.overrides},
            "where": self.where,
            "seed": self.seed,
            "hidden": self.hidden,
            "act": self.act,
            "bounds": [list(b) for b in self.bounds],
        }


def _check_int(key: str, value: Any, minimum: int, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} = {value!r}{where}: must be an integer >= {minimum}")


def _unknown(table: str, got: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(got) - allowed)
    if extra:
        raise ConfigError(
            f"{table}{where}: unknown key {extra[0]!r}; allowed keys: {', '.join(sorted(allowed))}"
        )


def _table(doc: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{key}]{where}: must be a table, got {value!r}")
    return dict(value)


def _bounds(value: Any, num: int, where: str) -> tuple[tuple[float, float], ...]:
    def pair(v: Any, label: str) -> tuple[float, float]:
        if (
            not isinstance(v, list | tuple)
            or len(v) != 2
            or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
        ):
            raise ConfigError(
                f"[search] {label} = {v!r}{where}: must be [lo, hi] numbers, e.g. [-5.0, 5.0]"
            )
        return float(v[0]), float(v[1])

    if isinstance(value, list | tuple) and value and all(isinstance(v, list | tuple) for v in value):
        if len(value) != num:
            raise ConfigError(
                f"[search] bounds{where}: {len(value)} [lo, hi] pairs for a meta-network with "
                f"3*hidden+1 = {num} weights; give one box [lo, hi] or {num} pairs"
            )
        return tuple(pair(v, f"bounds[{i}]") for i, v in enumerate(value))
    return (pair(value, "bounds"),) * num


def study_config_from_dict(doc: Mapping[str, Any], *, path: str | None = None) -> StudyConfig:
    """Build a :class:`StudyConfig` from a parsed study document (the TOML's dict)."""
    where = f" in {path}" if path else ""
    _unknown("study file", doc, _TOP_KEYS, where)
    target = _table(doc, "target", where)
    metanet = _table(doc, "metanet", where)
    search = _table(doc, "search", where)
    _unknown("[metanet]", metanet, _METANET_KEYS, where)
    _unknown("[search]", search, _SEARCH_KEYS, where)
    if "preset" not in target:
        raise ConfigError(f"[target]{where}: missing key 'preset' (a target name, e.g. \"gaussians-mlp3\")")
    preset = target.pop("preset")
    hidden = metanet.get("hidden", 1)
    _check_int("[metanet] hidden", hidden, 1, where)
    name = doc.get("name", Path(path).stem if path else None)
    storage = search.get("storage")
    if storage is not None and not isinstance(storage, str):
        raise ConfigError(f"[search] storage = {storage!r}{where}: must be a URL or file path string")
    if storage is not None and path and "://" not in storage and not storage.startswith(":"):
        storage = str(Path(path).parent / storage)  # relative journal paths are relative to the study file
    data_dir = doc.get("data_dir")
    for key in ("where", "device", "data_dir"):
        if key in doc and not isinstance(doc[key], str):
            raise ConfigError(f"{key} = {doc[key]!r}{where}: must be a string")
    return StudyConfig(
        name=name,
        target=preset,
        overrides=tuple(sorted(target.items())),
        where=doc.get("where"),
        seed=doc.get("seed", 0),
        device=doc.get("device", "cpu"),
        data_dir=data_dir,
        hidden=hidden,
        act=metanet.get("act", "tanh"),
        bounds=_bounds(search.get("bounds", [-5.0, 5.0]), 3 * hidden + 1, where),
        sampler=search.get("sampler", "botorch"),
        acquisition=search.get("acquisition", "logei"),
        q=search.get("q", 1),
        n_initial=search.get("n_initial", 8),
        n_trials=search.get("n_trials", 40),
        sampler_seed=search.get("seed", 0),
        storage=storage,
        path=path,
    )


def load_study(path: str | Path, *, check_target: bool = True) -> StudyConfig:
    """Read and validate a study file.

    Args:
        path: the TOML file.
        check_target: also build the target spec, so a bad ``[target]`` override fails now.

    Raises:
        metabp.ConfigError: naming the file, the key, the value and what is allowed.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file {str(path)!r} does not exist")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"study file {str(path)!r} is not valid TOML: {exc}") from exc
    cfg = study_config_from_dict(doc, path=str(path))
    if check_target:
        try:
            import metabp.targets  # noqa: F401
        except ImportError:  # targets layer absent: checked when the study runs
            return cfg
        cfg.target_spec()
    return cfg
