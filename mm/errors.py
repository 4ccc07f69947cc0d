"""The one exception hierarchy of mm.

Every error a user can cause (bad input, a missing model, an option a pipeline
does not know) is an :class:`MMError`. Messages say what was wrong, what was
expected and what to do about it.

>>> from mm.errors import MMError, InvalidInputError
>>> issubclass(InvalidInputError, MMError) and issubclass(InvalidInputError, ValueError)
True
"""

from __future__ import annotations

from collections.abc import Iterable


class MMError(Exception):
    """Base class of every error mm raises on purpose."""


class InvalidInputError(MMError, ValueError):
    """The input (file, array, text, option value) is malformed, empty or unsupported."""


class InputTooLargeError(InvalidInputError):
    """The input is larger than a documented limit."""


class ContextLengthError(InputTooLargeError):
    """A prompt (with the tokens to generate) does not fit the model's context."""


class ModelNotFoundError(MMError, FileNotFoundError):
    """A model id or directory could not be resolved to a usable checkpoint."""


class CheckpointError(MMError):
    """A checkpoint exists but its files do not match what the model needs."""


class UnknownTaskError(MMError, ValueError):
    """`mm.pipeline()` was asked for a task that is not registered."""


class UnsupportedOptionError(MMError, TypeError):
    """An option was given that the pipeline or function does not support."""


class MissingDependencyError(MMError, ImportError):
    """An optional dependency (an extra) is not installed."""


class IndexFormatError(MMError):
    """A folder is not an mm index, or one of an incompatible format version."""


class IndexDamagedError(IndexFormatError):
    """An index folder's files disagree with its manifest (missing, truncated, wrong shape, out of range)."""


class IndexReadOnlyError(MMError, PermissionError):
    """The index folder cannot be written by this process (permissions, a read-only file system)."""


class IndexWriteError(MMError, OSError):
    """Writing to an index failed (disk full, a file-size limit, an I/O error); the folder still holds its
    last committed state, and retrying once the cause is fixed finishes the write."""


class IndexLockedError(MMError):
    """Another writer holds the index lock."""


def choices_text(choices: Iterable[str]) -> str:
    """Format valid choices for an error message.

    >>> choices_text(["b", "a"])
    "'a', 'b'"
    """
    return ", ".join(repr(c) for c in sorted(choices))


def check_options(given: Iterable[str], allowed: Iterable[str], where: str) -> None:
    """Raise :class:`UnsupportedOptionError` if ``given`` has a name not in ``allowed``.

    >>> check_options(["k"], ["k", "filters"], "search()")
    >>> check_options(["kk"], ["k"], "search()")
    Traceback (most recent call last):
    ...
    mm.errors.UnsupportedOptionError: search() got unsupported option(s) 'kk'; valid options: 'k'
    """
    allowed = set(allowed)
    unknown = [name for name in given if name not in allowed]
    if unknown:
        raise UnsupportedOptionError(
            f"{where} got unsupported option(s) {choices_text(unknown)}; valid options: {choices_text(allowed)}"
        )


def require(module: str, extra: str) -> object:
    """Import an optional dependency or explain which extra to install.

    >>> require("json", "core").__name__
    'json'
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module!r} is not installed; it is needed for this feature. Install it with: pip install 'mm[{extra}]'"
        ) from exc
