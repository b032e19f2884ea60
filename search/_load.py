"""Study files (TOML) -> a :class:`StudyConfig`, checked completely when loaded.

A study file overrides only what differs from the defaults (like nanoGPT's ``config/``)::

    name = "quickstart"            # default: the file's stem
    where = "act2"                 # patch site; default: the target preset's
    sites = ["act1", "act2"]       # or: one g per site, each its own omega (excludes where)
    seeds = [0, 1, 2]              # training seeds; a candidate's score is its mean AULC over them
    device = "cpu"                 # cpu, cuda, cuda:N (checked: the device must exist)
    compile = false                # torch.compile the training step

    [target]
    preset = "gaussians-mlp3"      # any name metabp.targets knows
    epochs = 2                     # every other key overrides a TargetSpec field

    [metanet]
    hidden = 1                     # g(z) = sum_k w2_k act(w1_k z + b1_k) + b2, 3*hidden+1 weights
    act = "tanh"

    [search]
    sampler = "botorch"            # botorch | random | tpe | gp | cmaes | es
    acquisition = "logei"          # logei (one proposal at a time) | qlogei (batches of q)
    q = 1
    n_initial = 8                  # start points (a Latin hypercube) before the GP takes over
    n_trials = 40                  # total budget (completed trials)
    bounds = [-5.0, 5.0]           # one box for every omega_i, or one [lo, hi] per parameter
    lr = [1e-3, 1.0]               # optional: the targets' lr joins omega in the box (log scale)
    seed = 0                       # the sampler's seed
    storage = "quickstart.journal" # Optuna storage URL or journal file; default beside the study file
    population = 8                 # sampler = "es" only: points per generation (even; q = population)
    sigma = 0.1                    # es: perturbation, a fraction of each parameter's range
    step_size = 0.1                # es: Adam step on the ES gradient, same units

    [validate]                     # optional: after the search, the top_k on held-out seeds
    seeds = [100, 101, 102, 103, 104]
    top_k = 5

Several targets: ``[[targets]]`` tables in place of ``[target]``, each with ``preset``, its
overrides and an optional ``where``; the score is then the mean over targets and seeds of
``AULC(g) / AULC(backprop)``. ``seed = 0`` is accepted for ``seeds = [0]``.

``sites`` searches one meta-network per site: omega has ``(3*hidden+1) * len(sites)`` entries,
site ``j`` owning ``omega_{jP} .. omega_{jP+P-1}`` (``P = 3*hidden+1``), and a candidate is a
``metabp.PerSite``. Every site must select activations of every target's model, no two sites the
same one. ``bounds`` is one box, ``P`` pairs (repeated per site) or one pair per omega entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from metabp.exceptions import ConfigError

from ._config import (
    MAX_HIDDEN,
    MAX_LR,
    MAX_SEED,
    StudyConfig,
    TargetEntry,
    check_bounds,
    check_int,
    check_number,
    check_seeds,
    check_sites,
)
from ._es import POPULATION

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

_TOP_KEYS = {"name", "where", "sites", "seed", "seeds", "device", "data_dir", "compile", "target", "targets",
             "metanet", "search", "validate"}
_METANET_KEYS = {"hidden", "act"}
_SEARCH_KEYS = {"sampler", "acquisition", "q", "n_initial", "n_trials", "bounds", "seed", "storage", "lr",
                "population", "sigma", "step_size"}
_VALIDATE_KEYS = {"seeds", "top_k"}
_STRING_FIELDS = ("dataset", "network", "optimizer", "init", "activation", "feedback", "trainable")
_INT_FIELDS = {"epochs": 100_000, "batch_size": 10_000_000, "train_size": 1_000_000_000}
MAX_FILE_BYTES = 1_000_000


def load_study(path: str | Path, *, check_target: bool = True, check_device: bool = True) -> StudyConfig:
    """Read and validate a study file.

    Args:
        path: the TOML file.
        check_target: also build each target's spec and model, so a bad override or patch site
            fails now rather than at the first trial.
        check_device: also check that ``device`` exists on this machine (``False`` to read the
            results of a study that trained elsewhere, e.g. on a GPU).

    Raises:
        metabp.ConfigError: naming the file, the key, the value and what is allowed.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file {str(path)!r} does not exist (or is not a file)")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"study file {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"study file {str(path)!r} is {len(raw)} bytes; a study file is a small TOML "
                          f"file (at most {MAX_FILE_BYTES} bytes)")
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"study file {str(path)!r} is not UTF-8 text (byte {exc.start}); a study file "
                          "is TOML, e.g. studies/quickstart.toml (a .bfn b-function is binary)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"study file {str(path)!r} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"study file {str(path)!r}: arrays or tables nested too deeply") from None
    cfg = study_config_from_dict(doc, path=str(path))
    if check_device:
        check_device_exists(cfg.device, f" in {path}")
    if check_target:
        check_targets(cfg)
    return cfg


def study_config_from_dict(doc: Mapping[str, Any], *, path: str | None = None) -> StudyConfig:
    """Build a :class:`StudyConfig` from a parsed study document (the TOML's dict)."""
    at = f" in {path}" if path else ""
    _unknown("study file", doc, _TOP_KEYS, at)
    metanet = _table(doc, "metanet", at)
    search = _table(doc, "search", at)
    validate = _table(doc, "validate", at)
    _unknown("[metanet]", metanet, _METANET_KEYS, at)
    _unknown("[search]", search, _SEARCH_KEYS, at)
    _unknown("[validate]", validate, _VALIDATE_KEYS, at)
    for key in ("name", "where", "device", "data_dir"):
        if key in doc and not isinstance(doc[key], str):
            raise ConfigError(f"{key} = {doc[key]!r}{at}: must be a string")
    sites = _sites(doc, at)
    targets = _targets(doc, at)
    hidden = check_int("[metanet] hidden", metanet.get("hidden", 1), 1, MAX_HIDDEN, at)
    _es_batch(search, at)
    return StudyConfig(
        name=doc.get("name", Path(path).stem if path else None),
        target=targets[0].preset,
        overrides=targets[0].overrides,
        where=targets[0].where,
        targets=targets,
        seeds=_seeds(doc, at),
        device=_device(doc.get("device", "cpu"), at),
        data_dir=doc.get("data_dir"),
        compile=doc.get("compile", False),
        hidden=hidden,
        act=metanet.get("act", "tanh"),
        sites=sites,
        bounds=_bounds(search.get("bounds", [-5.0, 5.0]), 3 * hidden + 1, len(sites), at),
        sampler=_choice_str("[search] sampler", search.get("sampler", "botorch"), at),
        acquisition=_choice_str("[search] acquisition", search.get("acquisition", "logei"), at),
        q=search.get("q", 1),
        n_initial=search.get("n_initial", 8),
        n_trials=search.get("n_trials", 40),
        sampler_seed=search.get("seed", 0),
        lr_bounds=search.get("lr"),
        population=search.get("population"),
        sigma=search.get("sigma"),
        step_size=search.get("step_size"),
        storage=_storage(search.get("storage"), path, at),
        validate_seeds=check_seeds("[validate] seeds", validate.get("seeds", []), at, allow_empty=True)
        if validate else (),
        validate_top_k=validate.get("top_k", 5),
        path=path,
    )


def check_targets(cfg: StudyConfig) -> None:
    """Build each target's spec and model once: bad overrides, activation names and ``where`` or
    ``sites`` (they must select activations of the target's model) fail at load, naming the target."""
    import metabp
    from metabp.targets import build_model

    at = f" in {cfg.path}" if cfg.path else ""
    try:
        metabp.MetaNet(cfg.hidden, cfg.act)
    except (ConfigError, ValueError, KeyError) as exc:
        raise ConfigError(f"[metanet] act = {cfg.act!r}{at}: {exc}") from None
    for i, entry in enumerate(cfg.targets):
        spec = cfg.target_spec(i)
        where = spec.where if entry.where is None else entry.where
        model = build_model(spec, 0)
        try:
            if cfg.sites:  # each site selects activations, no two the same one
                metabp.PerSite({s: metabp.Derivative(spec.activation) for s in cfg.sites}).resolve(model)
                continue
            metabp.patch(model, metabp.Derivative(spec.activation), where)
        except metabp.MetabpError as exc:
            key = f"sites = {list(cfg.sites)!r}" if cfg.sites else f"where = {where!r}"
            raise ConfigError(f"{key}{at}: does not fit target {entry.preset!r}: {exc}") from None


def _sites(doc: Mapping[str, Any], at: str) -> tuple[str, ...]:
    """``sites``, checked; ``where`` (top level or in a ``[[targets]]`` table) may not be beside it."""
    if "sites" not in doc:
        return ()
    sites = check_sites(doc["sites"], at)
    tables = doc.get("targets") if isinstance(doc.get("targets"), list) else [doc.get("target")]
    for i, t in enumerate(tables):
        if isinstance(t, dict) and "where" in t:
            label = "[target]" if "target" in doc else f"[[targets]] #{i + 1}"
            raise ConfigError(f"{label} where = {t['where']!r} and sites = {list(sites)!r}{at}: give one "
                              "of them (sites: one g per site for every target)")
    if "where" in doc:
        raise ConfigError(f"where = {doc['where']!r} and sites = {list(sites)!r}{at}: give one of them "
                          "(where: one g shared by the sites it selects; sites: one g per site)")
    return sites


def _targets(doc: Mapping[str, Any], at: str) -> tuple[TargetEntry, ...]:
    if "target" in doc and "targets" in doc:
        raise ConfigError(f"study file{at}: give either [target] or [[targets]] tables, not both")
    if "targets" in doc:
        tables = doc["targets"]
        if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
            raise ConfigError(f"targets{at}: must be one or more [[targets]] tables, each with a preset")
        if len(tables) > 32:
            raise ConfigError(f"[[targets]]{at}: {len(tables)} tables; at most 32")
        return tuple(_target(dict(t), f"[[targets]] #{i + 1}", doc.get("where"), at)
                     for i, t in enumerate(tables))
    return (_target(_table(doc, "target", at), "[target]", doc.get("where"), at),)


def _target(table: dict[str, Any], label: str, where: Any, at: str) -> TargetEntry:
    if "preset" not in table:
        raise ConfigError(f"{label}{at}: missing key 'preset' (a target name, e.g. \"gaussians-mlp3\")")
    preset = table.pop("preset")
    where = table.pop("where", where)
    if not isinstance(preset, str) or not preset:
        raise ConfigError(f"{label} preset = {preset!r}{at}: must be a target preset name string")
    if where is not None and not isinstance(where, str):
        raise ConfigError(f"{label} where = {where!r}{at}: must be an activation name such as 'act2'")
    from metabp.targets import TargetSpec

    allowed = sorted(f.name for f in fields(TargetSpec) if f.name != "name") + ["where"]
    for key, value in table.items():
        if key not in allowed:
            raise ConfigError(f"{label} {key} = {value!r}{at}: unknown key {key!r}; allowed keys: "
                              f"{', '.join(['preset', *allowed])}")
        table[key] = _override(f"{label} {key}", key, value, at)
    return TargetEntry(preset, tuple(sorted(table.items())), where)


def _override(label: str, key: str, value: Any, at: str) -> Any:
    """One ``[target]`` override, type- and range-checked (the spec checks names and choices)."""
    if key in _STRING_FIELDS:
        if not isinstance(value, str):
            raise ConfigError(f"{label} = {value!r}{at}: must be a string")
    elif key in _INT_FIELDS:
        check_int(label, value, 1, _INT_FIELDS[key], at)
    elif key == "lr":
        value = check_number(label, value, at, lo=0.0, hi=MAX_LR)
    elif key in ("max_loss", "width"):
        value = check_number(label, value, at, lo=0.0, hi=1e6 if key == "max_loss" else 16.0)
    elif key == "bias":
        if not isinstance(value, bool):
            raise ConfigError(f"{label} = {value!r}{at}: must be true or false")
    elif key == "hidden":
        if not isinstance(value, list) or not 1 <= len(value) <= 16:
            raise ConfigError(f"{label} = {value!r}{at}: must be a list of 1 to 16 widths, e.g. [32, 32]")
        value = tuple(check_int(label, h, 1, 8192, at) for h in value)
    return value


def _seeds(doc: Mapping[str, Any], at: str) -> tuple[int, ...]:
    if "seed" in doc and "seeds" in doc:
        raise ConfigError(f"seed = {doc['seed']!r} and seeds = {doc['seeds']!r}{at}: give one of them "
                          "(seeds = [0, 1, 2] scores every candidate on three seeds)")
    if "seed" in doc:
        return (check_int("seed", doc["seed"], 0, MAX_SEED, at),)
    return check_seeds("seeds", doc.get("seeds", [0]), at)


def _device(value: str, at: str) -> str:
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device = {value!r}{at}: must be cpu, cuda or cuda:N (or mps)")
    return value


def check_device_exists(value: str, at: str = "") -> None:
    """A ConfigError unless the torch device ``value`` exists on this machine."""
    import torch

    dev = torch.device(value)
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (dev.index or 0) >= n:
            raise ConfigError(f"device = {value!r}{at}: this machine has {n} CUDA device(s); "
                              'use device = "cpu"')
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device = {value!r}{at}: MPS is not available here; use device = \"cpu\"")


def _storage(value: Any, path: str | None, at: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"[search] storage = {value!r}{at}: must be an Optuna storage URL or a journal "
                          'file path, e.g. "quickstart.journal"')
    if path and "://" not in value and not value.startswith(":") and value != "memory":
        value = str(Path(path).parent / value)  # relative journal paths are relative to the study file
    if "://" not in value and Path(value).is_dir():
        raise ConfigError(f"[search] storage = {value!r}{at}: is a directory; give a journal file path")
    return value


def _es_batch(search: Mapping[str, Any], at: str) -> None:
    """With ``sampler = "es"`` a batch is one population: a ``q`` that differs is an error."""
    population = search.get("population", POPULATION)
    if search.get("sampler") == "es" and "q" in search and search["q"] not in (1, population):
        raise ConfigError(f"[search] q = {search['q']!r}{at}: with sampler = \"es\" a batch is one "
                          f"population ({population!r}); leave q out")


def _choice_str(key: str, value: Any, at: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key} = {value!r}{at}: must be a string")
    return value


def _unknown(table: str, got: Mapping[str, Any], allowed: set[str], at: str) -> None:
    extra = sorted(set(got) - allowed)
    if extra:
        raise ConfigError(f"{table}{at}: unknown key {extra[0]!r}; "
                          f"allowed keys: {', '.join(sorted(allowed))}")


def _table(doc: Mapping[str, Any], key: str, at: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{key}]{at}: must be a table, got {value!r}")
    return dict(value)


def _bounds(value: Any, per_site: int, sites: int, at: str) -> tuple[tuple[float, float], ...]:
    def pair(v: Any, label: str) -> tuple[float, float]:
        if not isinstance(v, list | tuple) or len(v) != 2:
            raise ConfigError(f"[search] {label} = {v!r}{at}: must be [lo, hi] numbers, e.g. [-5.0, 5.0]")
        lo = check_number(f"[search] {label}[0]", v[0], at, lo=-1e6, hi=1e6, lo_open=False)
        hi = check_number(f"[search] {label}[1]", v[1], at, lo=-1e6, hi=1e6, lo_open=False)
        return lo, hi

    if isinstance(value, list | tuple) and value and all(isinstance(v, list | tuple) for v in value):
        pairs = check_bounds(value, per_site, sites, at)
        return tuple(pair(v, f"bounds[{i}]") for i, v in enumerate(pairs))
    return (pair(value, "bounds"),) * (per_site * max(1, sites))
