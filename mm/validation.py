"""Plain value checks for the edges of mm: options, texts, sample rates, output paths, JSON.

Every function takes the value and the ``name`` the user knows it by, and either returns
the value (normalised: an ``int`` for an integer option, a ``tuple`` for a list of
strings) or raises :class:`mm.errors.InvalidInputError` naming the input and the problem.
Pipelines, the CLI, corpus readers and the index call them before any work starts, so an
option declaration can use them as validators.

>>> check_int(3, "top_k", minimum=1)
3
>>> check_int(1.5, "top_k", minimum=1)
Traceback (most recent call last):
...
mm.errors.InvalidInputError: top_k must be an integer, got 1.5 (float)
>>> check_float(float("nan"), "temperature", minimum=0, inclusive=False)
Traceback (most recent call last):
...
mm.errors.InvalidInputError: temperature must be a finite number, got nan
>>> check_text("caf\\udce9", "the query")
Traceback (most recent call last):
...
mm.errors.InvalidInputError: the query contains a lone surrogate (U+DCE9) at character 3; it is not valid Unicode text (was it decoded with errors='surrogateescape'?)
"""

from __future__ import annotations

import math
import numbers
import os
import re
from pathlib import Path
from typing import Any

from mm.errors import InputTooLargeError, InvalidInputError

#: deepest nesting accepted in JSON read from files (manifests, corpus records, metadata)
MAX_JSON_DEPTH = 64
#: largest sample rate accepted for audio arrays (Hz); real recordings stop at 768 kHz
MAX_SAMPLE_RATE = 1_000_000
#: largest seed accepted (torch seeds are unsigned 64-bit; we keep to the signed range)
MAX_SEED = 2**63 - 1


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def check_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (not a bool, not a float such as 1.5, not a string) within the bounds.

    >>> check_int(0, "max_new_tokens", minimum=1)
    Traceback (most recent call last):
    ...
    mm.errors.InvalidInputError: max_new_tokens must be >= 1, got 0
    >>> import numpy as np; check_int(np.int64(4), "k")
    4
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidInputError(f"{name} must be an integer, got {_describe(value)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise InvalidInputError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidInputError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_float(value: Any, name: str, *, minimum: float | None = None, maximum: float | None = None,
                inclusive: bool = True) -> float:
    """A finite real number within the bounds (``inclusive=False``: strictly inside them).

    >>> check_float(0.7, "top_p", minimum=0, maximum=1, inclusive=False)
    0.7
    >>> check_float("0.5", "temperature")
    Traceback (most recent call last):
    ...
    mm.errors.InvalidInputError: temperature must be a number, got '0.5' (str)
    >>> check_float(1.0, "top_p", minimum=0, maximum=1, inclusive=False)
    Traceback (most recent call last):
    ...
    mm.errors.InvalidInputError: top_p must be < 1, got 1.0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInputError(f"{name} must be a number, got {_describe(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a finite number, got {value}")
    if minimum is not None and (value < minimum if inclusive else value <= minimum):
        raise InvalidInputError(f"{name} must be {'>=' if inclusive else '>'} {minimum:g}, got {value}")
    if maximum is not None and (value > maximum if inclusive else value >= maximum):
        raise InvalidInputError(f"{name} must be {'<=' if inclusive else '<'} {maximum:g}, got {value}")
    return value


def check_bool(value: Any, name: str) -> bool:
    """A real ``bool`` (numpy's too); 0/1 or the string "false" are refused, they hide mistakes.

    >>> check_bool("false", "do_sample")
    Traceback (most recent call last):
    ...
    mm.errors.InvalidInputError: do_sample must be True or False, got 'false' (str)
    """
    if type(value).__name__ == "bool_":
        return bool(value)
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name} must be True or False, got {_describe(value)}")
    return value


def find_surrogate(text: str) -> int:
    """Index of the first lone surrogate in ``text`` (unencodable as UTF-8), or -1.

    >>> find_surrogate("ok"), find_surrogate("a\\ud800b")
    (-1, 1)
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return -1


def check_text(value: Any, name: str, *, allow_empty: bool = False, max_chars: int | None = None) -> str:
    """A ``str`` that is valid Unicode (no lone surrogates), non-blank unless ``allow_empty``.

    >>> check_text("  ", "the message")
    Traceback (most recent call last):
    ...
    mm.errors.InvalidInputError: the message is empty; pass some text
    >>> check_text(b"hi", "the query")
    Traceback (most recent call last):
    ...
    mm.errors.InvalidInputError: the query must be a string, got b'hi' (bytes)
    """
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a string, got {_describe(value)}")
    if max_chars is not None and len(value) > max_chars:
        raise InputTooLargeError(f"{name} is {len(value):,} characters long; the limit is {max_chars:,}")
    at = find_surrogate(value)
    if at >= 0:
        raise InvalidInputError(
            f"{name} contains a lone surrogate (U+{ord(value[at]):04X}) at character {at}; it is not valid "
            f"Unicode text (was it decoded with errors='surrogateescape'?)"
        )
    if not allow_empty and not value.strip():
        raise InvalidInputError(f"{name} is empty; pass some text")
    return value


def check_optional_text(value: Any, name: str) -> str | None:
    """``None``, or a text checked by :func:`check_text` (may be empty).

    >>> check_optional_text(None, "system_prompt") is None
    True
    >>> check_optional_text(3, "system_prompt")
    Traceback (most recent call last):
    ...
    mm.errors.InvalidInputError: system_prompt must be a string, got 3 (int)
    """
    return None if value is None else check_text(value, name, allow_empty=True)


def check_strings(value: Any, name: str) -> tuple[str, ...]:
    """One string or a list/tuple of non-empty strings, returned as a tuple.

    >>> check_strings("END", "stop"), check_strings(["a", "b"], "stop")
    (('END',), ('a', 'b'))
    >>> check_strings(123, "stop")
    Traceback (most recent call last):
    ...
    mm.errors.InvalidInputError: stop must be a string or a list of strings, got 123 (int)
    """
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, list | tuple):
        raise InvalidInputError(f"{name} must be a string or a list of strings, got {_describe(value)}")
    for i, item in enumerate(value):
        check_text(item, f"{name}[{i}]")
    return tuple(value)


def check_seed(value: Any, name: str = "seed") -> int | None:
    """``None`` or an integer in [0, 2**63 - 1].

    >>> check_seed("abc")
    Traceback (most recent call last):
    ...
    mm.errors.InvalidInputError: seed must be an integer, got 'abc' (str)
    """
    return None if value is None else check_int(value, name, minimum=0, maximum=MAX_SEED)


def check_sample_rate(value: Any, name: str = "sampling_rate") -> int:
    """A positive whole number of Hz up to :data:`MAX_SAMPLE_RATE` (16000.0 is fine, 16000.5 is not).

    >>> check_sample_rate(16000.0)
    16000
    >>> check_sample_rate(float("nan"))
    Traceback (most recent call last):
    ...
    mm.errors.InvalidInputError: sampling_rate must be a finite number, got nan
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInputError(f"{name} must be a number of Hz, got {_describe(value)}")
    rate = check_float(value, name, minimum=1, maximum=MAX_SAMPLE_RATE)
    if rate != int(rate):
        raise InvalidInputError(f"{name} must be a whole number of Hz, got {value}")
    return int(rate)


def check_workers(value: Any, name: str = "workers") -> int | None:
    """``None`` (pick automatically) or a positive number of worker processes.

    >>> check_workers(0)
    Traceback (most recent call last):
    ...
    mm.errors.InvalidInputError: workers must be >= 1, got 0
    """
    return None if value is None else check_int(value, name, minimum=1)


def check_input_file(path: Any, name: str) -> Path:
    """An existing, readable, non-empty regular file (odd paths - too long, NUL bytes, surrogates - are refused).

    >>> check_input_file("/nonexistent/x.wav", "audio file")
    Traceback (most recent call last):
    ...
    mm.errors.InvalidInputError: audio file '/nonexistent/x.wav' does not exist
    >>> check_input_file("a\\x00b", "image file")
    Traceback (most recent call last):
    ...
    mm.errors.InvalidInputError: image file 'a\\x00b' does not exist
    """
    if not isinstance(path, str | os.PathLike):
        raise InvalidInputError(f"{name} must be a file path, got {_describe(path)}")
    text = os.fspath(path)
    shown = repr(text if len(text) <= 200 else text[:200] + "...")
    try:
        target = Path(text).expanduser()
        exists, is_dir, is_file = target.exists(), target.is_dir(), target.is_file()
        size = target.stat().st_size if is_file else 0
    except (OSError, ValueError) as exc:  # name too long, embedded NUL, permission, a loop of links
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidInputError(f"{name} {shown} is not a usable path ({reason})") from exc
    if not exists:
        raise InvalidInputError(f"{name} {shown} does not exist")
    if is_dir:
        raise InvalidInputError(f"{name} {shown} is a directory; pass a file")
    if not is_file:
        raise InvalidInputError(f"{name} {shown} is not a regular file")
    if size == 0:
        raise InvalidInputError(f"{name} {shown} is empty (0 bytes)")
    if not os.access(target, os.R_OK):
        raise InvalidInputError(f"{name} {shown} is not readable (permission denied)")
    return target


def check_output_file(path: Any, name: str) -> Path:
    """A path a file can be written to: not a folder, and its folder exists (or can be made) and is writable.

    >>> import tempfile; folder = tempfile.mkdtemp()
    >>> check_output_file(folder, "--run")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mm.errors.InvalidInputError: --run names a folder (...); pass a file path inside it
    >>> check_output_file(folder + "/run.trec", "--run").name
    'run.trec'
    """
    if not isinstance(path, str | os.PathLike):
        raise InvalidInputError(f"{name} must be a file path, got {_describe(path)}")
    text = os.fspath(path)
    if isinstance(text, str):
        check_text(text, name)
    target = Path(text).expanduser()
    if target.is_dir():
        raise InvalidInputError(f"{name} names a folder ({str(target)!r}); pass a file path inside it")
    if target.exists() and not os.access(target, os.W_OK):
        raise InvalidInputError(f"{name}: {str(target)!r} exists and is not writable")
    parent = target.parent
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InvalidInputError(f"{name}: {str(existing)!r} is not a folder, so {str(target)!r} cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidInputError(f"{name}: the folder {str(existing)!r} is not writable; choose another place")
    return target


def json_depth_ok(text: str, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text nests no deeper than ``max_depth`` (checked before parsing, in linear time).

    Brackets inside strings are skipped, so ``"[[[["`` as a string value does not count.

    >>> json_depth_ok('{"a": [[1]]}', 3), json_depth_ok('{"a": [[1]]}', 2), json_depth_ok('"[[[["', 1)
    (True, False, True)
    """
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def check_keys(mapping: dict, required: dict[str, type | tuple[type, ...]], name: str) -> None:
    """``mapping`` holds each required key with a value of the given type(s) (bool is not an int).

    >>> check_keys({"dim": "4"}, {"dim": int}, "manifest.json")
    Traceback (most recent call last):
    ...
    mm.errors.InvalidInputError: manifest.json: 'dim' must be int, got '4' (str)
    """
    if not isinstance(mapping, dict):
        raise InvalidInputError(f"{name} must hold a JSON object, got {type(mapping).__name__}")
    for key, types in required.items():
        if key not in mapping:
            raise InvalidInputError(f"{name} lacks the field {key!r}")
        value = mapping[key]
        wanted = types if isinstance(types, tuple) else (types,)
        if (isinstance(value, bool) and bool not in wanted) or not isinstance(value, wanted):
            names = " or ".join(t.__name__ for t in wanted)
            raise InvalidInputError(f"{name}: {key!r} must be {names}, got {_describe(value)}")


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?b)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}


def parse_size(size: str | int) -> int:
    """Bytes in a ``"25mb"``-style size (b, kb, mb, gb; 1024-based) or a byte count.

    >>> parse_size("2kb"), parse_size(10)
    (2048, 10)
    >>> parse_size("lots")
    Traceback (most recent call last):
    ...
    mm.errors.InvalidInputError: size limit 'lots' not understood; use e.g. '25mb', '512kb' or a byte count
    """
    if isinstance(size, int) and not isinstance(size, bool):
        if size <= 0:
            raise InvalidInputError(f"a size limit must be positive, got {size}")
        return size
    match = _SIZE.match(str(size))
    if not match:
        raise InvalidInputError(f"size limit {size!r} not understood; use e.g. '25mb', '512kb' or a byte count")
    value = int(float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()])
    if value <= 0:
        raise InvalidInputError(f"a size limit must be positive, got {size!r}")
    return value
