"""Metadata filters evaluated at query time.

A filter is a dict ``{field: condition}``; every field must match (AND). A condition is

* a scalar (str, int, float, bool, None): equality; if the document's value is a
  list, the scalar must be one of its items;
* a list: the document's value (or one of its items) is in the list (``in``);
* a dict of operators: ``$eq``, ``$ne``, ``$in``, ``$nin``, ``$gt``, ``$gte``,
  ``$lt``, ``$lte``, ``$exists`` (bool).

A document lacking the field matches only ``$ne``, ``$nin`` and ``$exists: false``.

>>> matches({"lang": "en", "year": 2020}, {"lang": ["en", "de"], "year": {"$gte": 2019}})
True
>>> matches({"tags": ["a", "b"]}, {"tags": "b"})
True
>>> matches({"lang": "fr"}, {"lang": "en"})
False
"""

from __future__ import annotations

from typing import Any

from mm.errors import InvalidInputError

_SCALARS = (str, int, float, bool, type(None))
_OPS = {"$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists"}


def validate_filters(filters: Any) -> dict[str, Any] | None:
    """Check a filter's shape; :class:`InvalidInputError` naming the bad part."""
    if filters is None:
        return None
    if not isinstance(filters, dict):
        raise InvalidInputError(f"filters must be a dict {{field: value}}, got {type(filters).__name__}")
    for field, cond in filters.items():
        if not isinstance(field, str) or not field:
            raise InvalidInputError(f"filter field names must be non-empty strings, got {field!r}")
        if isinstance(cond, dict):
            if not cond:
                raise InvalidInputError(f"filter on {field!r} has an empty operator dict")
            for op, value in cond.items():
                if op not in _OPS:
                    raise InvalidInputError(
                        f"unknown filter operator {op!r} on {field!r}; valid: {', '.join(sorted(_OPS))}")
                if op in ("$in", "$nin") and not isinstance(value, list):
                    raise InvalidInputError(f"filter {field!r}: {op} needs a list, got {value!r}")
                if op == "$exists" and not isinstance(value, bool):
                    raise InvalidInputError(f"filter {field!r}: $exists needs true/false, got {value!r}")
                if op in ("$gt", "$gte", "$lt", "$lte") and not isinstance(value, (int, float, str)):
                    raise InvalidInputError(f"filter {field!r}: {op} needs a number or string, got {value!r}")
        elif isinstance(cond, list):
            if not all(isinstance(v, _SCALARS) for v in cond):
                raise InvalidInputError(f"filter {field!r}: an `in` list may only hold scalars, got {cond!r}")
        elif not isinstance(cond, _SCALARS):
            raise InvalidInputError(f"filter {field!r}: unsupported condition {cond!r}")
    return filters


def _values(meta: dict[str, Any], field: str) -> list[Any] | None:
    if field not in meta:
        return None
    value = meta[field]
    return list(value) if isinstance(value, list) else [value]


def _compare(op: str, a: Any, b: Any) -> bool:
    try:
        if op == "$gt":
            return a > b
        if op == "$gte":
            return a >= b
        if op == "$lt":
            return a < b
        return a <= b
    except TypeError:  # e.g. comparing a string field with a number: no match
        return False


def _match_cond(values: list[Any] | None, cond: Any) -> bool:
    if isinstance(cond, dict):
        for op, target in cond.items():
            if op == "$exists":
                ok = (values is not None) == target
            elif op == "$ne":
                ok = values is None or target not in values
            elif op == "$nin":
                ok = values is None or not any(v in target for v in values)
            elif values is None:
                ok = False
            elif op == "$eq":
                ok = target in values
            elif op == "$in":
                ok = any(v in target for v in values)
            else:
                ok = any(_compare(op, v, target) for v in values)
            if not ok:
                return False
        return True
    if values is None:
        return False
    if isinstance(cond, list):
        return any(v in cond for v in values)
    return cond in values


def fields_of(filters: dict[str, Any] | None) -> set[str]:
    """The metadata fields a filter reads.

    >>> sorted(fields_of({"lang": "en", "_doc": {"$exists": True}}))
    ['_doc', 'lang']
    """
    return set(filters or ())


def matches(meta: dict[str, Any], filters: dict[str, Any] | None) -> bool:
    """Whether a document's metadata satisfies ``filters``."""
    if not filters:
        return True
    return all(_match_cond(_values(meta, field), cond) for field, cond in filters.items())
