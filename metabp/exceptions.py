"""The exceptions metabp raises. Every message names the argument, its value and the fix."""

from __future__ import annotations


class MetabpError(Exception):
    """Base class of every error metabp raises on purpose."""


class PatchError(MetabpError, ValueError):
    """A model cannot be patched as asked (not a module, unknown or malformed ``where=``,
    unsupported module)."""


class ArtifactError(MetabpError, ValueError):
    """A ``.bfn`` file is missing, truncated, corrupted, of an unknown kind or version, holds a
    value out of range, or cannot be written; the message names the file and the field."""


class ConfigError(MetabpError, ValueError):
    """A study file, target preset or option has a wrong key or value."""


class DataError(MetabpError, FileNotFoundError):
    """A dataset's files are missing or malformed; the message says where to put which files."""


__all__ = ["MetabpError", "PatchError", "ArtifactError", "ConfigError", "DataError"]
