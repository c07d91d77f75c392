"""Typed exceptions. Each message is one sentence: the thing, the value, the fix."""

from __future__ import annotations


class LitItpoError(Exception):
    """Base class of every error lit_itpo raises on purpose."""


class DatasetNotFoundError(LitItpoError, FileNotFoundError):
    """A Minari dataset id is not in the local Minari cache."""


class DatasetFormatError(LitItpoError, ValueError):
    """A dataset is unreadable, empty, non-finite or disagrees with its own metadata."""


class DivergenceError(LitItpoError, FloatingPointError):
    """Training produced a non-finite loss (a learning rate or reward scale too large for the
    data, or extreme values in it)."""


class EnvSpecError(LitItpoError, ValueError):
    """An environment cannot be made or has spaces lit_itpo cannot use."""


class ConfigError(LitItpoError, ValueError):
    """A configuration value is out of range or inconsistent."""


class CheckpointError(LitItpoError, ValueError):
    """A checkpoint is of the wrong stage, dataset or shape."""


class StorageError(LitItpoError, OSError):
    """A file could not be written (a full disk, a quota, no permission); what was there before
    is kept and nothing partial is left."""

    @classmethod
    def writing(cls, path, exc: OSError, kept: str = "") -> StorageError:
        """The error for a failed write of ``path``: the file, the OS's reason (``No space left
        on device``) and the fix; ``kept`` says what else stayed as it was. The CLI adds the
        command that resumes (nothing partial is left, so the same command goes on)."""
        return cls(
            f"writing {path} failed ({exc.strerror or exc}); nothing partial is left{kept}: free "
            "space there or make its folder writable"
        )
