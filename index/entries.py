"""Compact in-memory columns of a segment's ids and metadata, and the id -> (segment, row) map.

An open index keeps, per entry, no Python objects: ids are one UTF-8 blob plus offsets
(:class:`Strings`), metadata a few numpy columns (:class:`Metadata`: the content hash ``_src``, the
chunk number, and the JSON of whatever else a document carries, usually nothing), and the id map
sorted 64-bit hashes (:class:`IdMap`). About 100 bytes per entry instead of ~550 for lists of
strings and dicts, so opening and writing to a large index costs little memory (issue 12).

Rows are rebuilt on access, so callers see the same ``list``/``dict`` values as before:

>>> ids = Strings.build(["a", "b#1"])
>>> meta = Metadata.build(ids, [{"lang": "en"}, {"_src": "h", "_doc": "b", "_chunk": 1}])
>>> meta[0], meta[1], meta.document(1), meta.source(1)
({'lang': 'en'}, {'_src': 'h', '_doc': 'b', '_chunk': 1}, 'b', 'h')
>>> m = IdMap([ids], [np.array([True, True])])
>>> m.get("b#1"), "c" in m, len(m), list(m)
((0, 1), False, 2, ['a', 'b#1'])
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from mm.encoders.chunking import CHUNK_KEY, CHUNK_SEP, DOC_KEY, SOURCE_KEY

_HAS_SRC, _CHUNKED, _RAW = 1, 2, 4


class Strings(Sequence):
    """An immutable list of strings stored as one UTF-8 blob and offsets (``[i]`` decodes one)."""

    __slots__ = ("blob", "hashes", "off")

    def __init__(self, blob: bytes, off: np.ndarray, hashes: np.ndarray) -> None:
        self.blob, self.off, self.hashes = blob, off, hashes

    @classmethod
    def build(cls, strings: list[str], hashed: bool = True) -> Strings:
        """From a list of strings; ``hashed``: also keep each string's ``hash()`` (for :class:`IdMap`)."""
        encoded = [s.encode("utf-8") for s in strings]
        off = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=off[1:])
        hashes = np.fromiter((hash(s) for s in strings), dtype=np.int64, count=len(strings)) if hashed \
            else np.zeros(0, dtype=np.int64)
        return cls(b"".join(encoded), off, hashes)

    def __len__(self) -> int:
        return len(self.off) - 1

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        return self.blob[self.off[i]:self.off[i + 1]].decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    @property
    def nbytes(self) -> int:
        return len(self.blob) + self.off.nbytes + self.hashes.nbytes


class Metadata(Sequence):
    """A segment's metadata dicts, stored as columns; ``[row]`` rebuilds the dict (a fresh copy).

    Rows whose reserved keys (``_src``, ``_doc``, ``_chunk``) follow the writer's layout keep them in
    columns (``_doc`` is the chunk id without its ``#n``) and the rest as JSON; any other row is kept
    whole as JSON, exactly as stored.
    """

    __slots__ = ("chunk", "doc_hashes", "flags", "ids", "rest", "src")

    def __init__(self, ids: Strings, flags: np.ndarray, chunk: np.ndarray, src: Strings, rest: Strings,
                 doc_hashes: np.ndarray) -> None:
        self.ids, self.flags, self.chunk, self.src, self.rest = ids, flags, chunk, src, rest
        self.doc_hashes = doc_hashes  # hash of the document of every row (pruning, document counts)

    @classmethod
    def build(cls, ids: Strings, metadata: list[dict[str, Any]]) -> Metadata:
        n = len(metadata)
        flags = np.zeros(n, dtype=np.uint8)
        chunk = np.full(n, -1, dtype=np.int32)
        src, rest, docs = [""] * n, [""] * n, [""] * n
        for i, (entry_id, meta) in enumerate(zip(ids, metadata, strict=True)):
            flags[i], src[i], rest[i], chunk[i] = _split(entry_id, meta)
            doc = meta.get(DOC_KEY, entry_id)
            docs[i] = doc if isinstance(doc, str) else entry_id
        doc_hashes = np.fromiter((hash(d) for d in docs), dtype=np.int64, count=n)
        return cls(ids, flags, chunk, Strings.build(src, hashed=False), Strings.build(rest, hashed=False),
                   doc_hashes)

    def __len__(self) -> int:
        return len(self.flags)

    def __getitem__(self, row: Any) -> Any:
        if isinstance(row, slice):
            return [self[j] for j in range(*row.indices(len(self)))]
        row = int(row)
        flags, text = int(self.flags[row]), self.rest[row]
        meta = json.loads(text) if text else {}
        if flags & _RAW:
            return meta
        if flags & _HAS_SRC:
            meta[SOURCE_KEY] = self.src[row]
        if flags & _CHUNKED:
            meta[DOC_KEY] = self.ids[row].rpartition(CHUNK_SEP)[0]
            meta[CHUNK_KEY] = int(self.chunk[row])
        return meta

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    def source(self, row: int) -> str:
        """The content hash ``_src`` of ``row`` (``""`` when it has none)."""
        flags = int(self.flags[row])
        if flags & _RAW:
            value = self[row].get(SOURCE_KEY, "")
            return value if isinstance(value, str) else ""
        return self.src[row] if flags & _HAS_SRC else ""

    def document(self, row: int) -> str:
        """The document ``row`` belongs to (``_doc`` of a chunk, else the entry's own id)."""
        flags = int(self.flags[row])
        if flags & _CHUNKED:
            return self.ids[row].rpartition(CHUNK_SEP)[0]
        if flags & _RAW:
            value = self[row].get(DOC_KEY, self.ids[row])
            return value if isinstance(value, str) else self.ids[row]
        return self.ids[row]

    @property
    def nbytes(self) -> int:
        return self.flags.nbytes + self.chunk.nbytes + self.src.nbytes + self.rest.nbytes + self.doc_hashes.nbytes


def _split(entry_id: str, meta: dict[str, Any]) -> tuple[int, str, str, int]:
    """``(flags, _src, JSON of the other keys, chunk)`` of one metadata dict."""
    keys = list(meta)
    flags, src, chunk = 0, "", -1
    tail = keys[-3:] if keys[-3:] == [SOURCE_KEY, DOC_KEY, CHUNK_KEY] else keys[-2:] \
        if keys[-2:] == [DOC_KEY, CHUNK_KEY] else keys[-1:] if keys[-1:] == [SOURCE_KEY] else []
    if DOC_KEY in tail:
        c = meta[CHUNK_KEY]
        if type(c) is not int or c < 0 or c >= 2**31 or f"{meta[DOC_KEY]}{CHUNK_SEP}{c}" != entry_id:
            tail = []  # not the writer's chunk layout: keep the row whole
        else:
            flags, chunk = flags | _CHUNKED, c
    if tail and tail[0] == SOURCE_KEY:
        if isinstance(meta[SOURCE_KEY], str):
            flags, src = flags | _HAS_SRC, meta[SOURCE_KEY]
        else:
            flags, chunk, tail = 0, -1, []
    if any(k in (SOURCE_KEY, DOC_KEY, CHUNK_KEY) for k in keys[:len(keys) - len(tail)]):
        return _RAW, "", _dumps(meta), -1  # reserved keys elsewhere: keep exactly as stored
    rest = {k: meta[k] for k in keys[:len(keys) - len(tail)]}
    return flags, src, _dumps(rest) if rest else "", chunk


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class IdMap:
    """``id -> (segment, row)`` of the live entries, as sorted 64-bit hashes (verified against the ids).

    Supports what a ``dict`` of ids did: ``in``, ``[id]``, ``get``, ``len`` and iteration (segment order).
    """

    def __init__(self, ids: list[Strings], live: list[np.ndarray]) -> None:
        self._ids = ids
        self._live = live
        keys, locs = [], []
        for s, (seg_ids, mask) in enumerate(zip(ids, live, strict=True)):
            rows = np.flatnonzero(mask)
            keys.append(seg_ids.hashes[rows])
            locs.append((np.int64(s) << 32) | rows.astype(np.int64))
        keys_all = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
        locs_all = np.concatenate(locs) if locs else np.zeros(0, dtype=np.int64)
        order = np.argsort(keys_all, kind="stable")
        self._keys, self._locs = keys_all[order], locs_all[order]

    def get(self, entry_id: str, default: Any = None) -> Any:
        h = hash(entry_id)
        lo = int(np.searchsorted(self._keys, h, "left"))
        found = default
        while lo < len(self._keys) and self._keys[lo] == h:  # later segments win, like a dict filled in order
            loc = int(self._locs[lo])
            s, row = loc >> 32, loc & 0xFFFFFFFF
            if self._ids[s][row] == entry_id:
                found = (s, row)
            lo += 1
        return found

    def __getitem__(self, entry_id: str) -> tuple[int, int]:
        loc = self.get(entry_id)
        if loc is None:
            raise KeyError(entry_id)
        return loc

    def __contains__(self, entry_id: object) -> bool:
        return isinstance(entry_id, str) and self.get(entry_id) is not None

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        for seg_ids, mask in zip(self._ids, self._live, strict=True):
            for row in np.flatnonzero(mask):
                yield seg_ids[row]

    @property
    def nbytes(self) -> int:
        return self._keys.nbytes + self._locs.nbytes
