"""Pipeline options, declared once: name, default, the stage that uses it, and its value check.

A pipeline lists its call options as :class:`Option` objects. ``Pipeline.__call__`` checks every
given value with the option's validator, merges it over the defaults and hands each stage
(``preprocess``, ``forward``, ``postprocess``) only the options declared for that stage.

The generation options are shared by chat, vqa and the speech pipelines, with the same names and
meaning (:data:`GENERATION_OPTIONS`); audio-only sampling knobs carry an ``audio_`` prefix.

>>> opt = Option("top_k", None, "forward", optional(positive_int))
>>> opt.validate(5), opt.validate(None)
(5, None)
>>> opt.validate(1.5)
Traceback (most recent call last):
...
mm.errors.InvalidInputError: top_k must be a positive integer, got 1.5
>>> Option("stop", (), "forward", stop_strings).validate("###")
('###',)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from mm.errors import InvalidInputError, UnsupportedOptionError, choices_text

STAGES = ("preprocess", "forward", "postprocess")

#: a validator: ``check(value, name) -> normalised value``, raising InvalidInputError naming ``name``
Check = Callable[[Any, str], Any]


@dataclass(frozen=True)
class Option:
    """One option a pipeline accepts per call."""

    name: str
    default: Any = None
    stage: str = "forward"
    check: Check | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"option {self.name!r}: stage must be one of {STAGES}, got {self.stage!r}")

    def validate(self, value: Any) -> Any:
        """The checked (and normalised) value; ``None`` passes when the default is ``None``."""
        if value is None and self.default is None:
            return None
        return value if self.check is None else self.check(value, self.name)


# -- validators ---------------------------------------------------------------------------------------


def positive_int(value: Any, name: str) -> int:
    """A positive integer (bool is not an integer here).

    >>> positive_int(True, "k")
    Traceback (most recent call last):
    ...
    mm.errors.InvalidInputError: k must be a positive integer, got True
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def integer(value: Any, name: str) -> int:
    """Any integer (e.g. a seed).

    >>> integer("abc", "seed")
    Traceback (most recent call last):
    ...
    mm.errors.InvalidInputError: seed must be an integer, got 'abc'
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}")
    return int(value)


def boolean(value: Any, name: str) -> bool:
    """True or False (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name} must be True or False, got {value!r}")
    return value


def _finite(value: Any, name: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"{name} must be {what}, got {value!r}")
    return float(value)


def positive_float(value: Any, name: str) -> float:
    """A finite number > 0 (nan and inf are refused).

    >>> positive_float(float("nan"), "temperature")
    Traceback (most recent call last):
    ...
    mm.errors.InvalidInputError: temperature must be a finite number > 0, got nan
    """
    number = _finite(value, name, "a finite number > 0")
    if number <= 0:
        raise InvalidInputError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def probability(value: Any, name: str) -> float:
    """A number in (0, 1]."""
    number = _finite(value, name, "a number in (0, 1]")
    if not 0 < number <= 1:
        raise InvalidInputError(f"{name} must be a number in (0, 1], got {value!r}")
    return number


def fraction(value: Any, name: str) -> float:
    """A number in [0, 1]."""
    number = _finite(value, name, "a number in [0, 1]")
    if not 0 <= number <= 1:
        raise InvalidInputError(f"{name} must be a number in [0, 1], got {value!r}")
    return number


def stop_strings(value: Any, name: str) -> tuple[str, ...]:
    """One non-empty string or a list of them, as a tuple.

    >>> stop_strings(123, "stop")
    Traceback (most recent call last):
    ...
    mm.errors.InvalidInputError: stop must be a string or a list of non-empty strings, got 123
    """
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or any(not isinstance(s, str) or not s for s in items):
        raise InvalidInputError(f"{name} must be a string or a list of non-empty strings, got {value!r}")
    return tuple(items)


def text(value: Any, name: str) -> str:
    """A string."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a string, got {value!r}")
    return value


def optional(check: Check) -> Check:
    """``check`` that also lets ``None`` through."""

    def run(value: Any, name: str) -> Any:
        return None if value is None else check(value, name)

    return run


def one_of(*choices: Any) -> Check:
    """A value from ``choices``.

    >>> one_of("a", "b")("c", "mode")
    Traceback (most recent call last):
    ...
    mm.errors.InvalidInputError: mode must be one of 'a', 'b', got 'c'
    """

    def run(value: Any, name: str) -> Any:
        if value not in choices:
            raise InvalidInputError(f"{name} must be one of {choices_text(map(str, choices))}, got {value!r}")
        return value

    return run


# -- the shared generation options ----------------------------------------------------------------------

GENERATION_OPTIONS: tuple[Option, ...] = (
    Option("max_new_tokens", 256, "forward", positive_int, "most tokens (speech: steps) to generate"),
    Option("do_sample", False, "forward", boolean, "sample instead of greedy decoding"),
    Option("temperature", None, "forward", optional(positive_float), "sampling temperature (do_sample=True)"),
    Option("top_k", None, "forward", optional(positive_int), "keep the k most likely tokens (do_sample=True)"),
    Option("top_p", None, "forward", optional(probability), "nucleus sampling mass (do_sample=True)"),
    Option("seed", None, "forward", optional(integer), "seed of this call's own torch.Generator"),
    Option("stop", (), "forward", stop_strings, "strings that end the text (the text is cut before them)"),
)
#: the system turn of a chat-style prompt (chat, vqa)
SYSTEM_PROMPT = Option("system_prompt", None, "preprocess", optional(text),
                       "replaces any system message of the conversation")
#: sampling knobs that apply only with ``do_sample=True``
SAMPLING_KNOBS = ("temperature", "top_k", "top_p", "audio_temperature", "audio_top_k")


def options(*groups: Iterable[Option], **defaults: Any) -> tuple[Option, ...]:
    """Concatenate option groups, overriding the defaults named in ``defaults``.

    >>> [o.default for o in options(GENERATION_OPTIONS, max_new_tokens=8) if o.name == "max_new_tokens"]
    [8]
    """
    out = [opt for group in groups for opt in group]
    names = [opt.name for opt in out]
    if len(set(names)) != len(names):
        raise ValueError(f"an option is declared twice: {sorted(n for n in names if names.count(n) > 1)}")
    unknown = set(defaults) - set(names)
    if unknown:
        raise ValueError(f"defaults for undeclared options: {sorted(unknown)}")
    return tuple(replace(opt, default=defaults[opt.name]) if opt.name in defaults else opt for opt in out)


def as_options(declared: Iterable[Option] | Mapping[str, Any]) -> dict[str, Option]:
    """``{name: Option}``; a plain ``{name: default}`` dict declares unchecked ``forward`` options."""
    if isinstance(declared, Mapping):
        return {name: Option(name, default, "forward") for name, default in declared.items()}
    return {opt.name: opt for opt in declared}


def resolve(given: Mapping[str, Any], declared: Mapping[str, Option], where: str,
            defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Check ``given`` against ``declared`` and merge it over ``defaults`` and the declared defaults."""
    unknown = [name for name in given if name not in declared]
    if unknown:
        raise UnsupportedOptionError(f"{where} got unsupported option(s) {choices_text(unknown)}; valid options: "
                                     f"{choices_text(declared)}")
    merged = {name: opt.default for name, opt in declared.items()}
    merged.update(defaults or {})
    merged.update({name: declared[name].validate(value) for name, value in given.items()})
    return merged


def check_sampling(values: Mapping[str, Any]) -> None:
    """Refuse sampling knobs without ``do_sample=True`` (they would be ignored otherwise).

    >>> check_sampling({"do_sample": False, "temperature": 0.7})
    Traceback (most recent call last):
    ...
    mm.errors.InvalidInputError: temperature only apply when sampling; pass do_sample=True or drop them
    """
    if values.get("do_sample"):
        return
    given = [k for k in SAMPLING_KNOBS if values.get(k) is not None]
    if given:
        raise InvalidInputError(f"{', '.join(given)} only apply when sampling; pass do_sample=True or drop them")


def by_stage(values: Mapping[str, Any], declared: Mapping[str, Option]) -> dict[str, dict[str, Any]]:
    """Split resolved ``values`` into ``{stage: {name: value}}``."""
    out: dict[str, dict[str, Any]] = {stage: {} for stage in STAGES}
    for name, value in values.items():
        out[declared[name].stage][name] = value
    return out


def table(declared: Iterable[Option] | Mapping[str, Any]) -> list[tuple[str, Any, str, str]]:
    """``(name, default, stage, doc)`` rows (for docs and ``--help`` texts).

    >>> table(GENERATION_OPTIONS)[0]
    ('max_new_tokens', 256, 'forward', 'most tokens (speech: steps) to generate')
    """
    return [(o.name, o.default, o.stage, o.doc) for o in as_options(declared).values()]
