"""A segment's ids and metadata as one memory-mapped file, and the id -> (segment, row) map.

Each segment stores its entries in ``seg-<uid>.entries.npy`` (a flat ``uint8`` ``.npy`` whose
first 64 bytes are a header of int64 counts, then aligned sections; :func:`encode_entries`
writes it, :func:`open_entries` maps it):

* ``keys`` / ``key_rows``: the 64-bit hashes of the ids (:func:`stable_hash`, blake2b), sorted,
  and the row of each - an id is looked up with one binary search per segment;
* ``doc_hash``: per row, the hash of the document the entry belongs to (pruning, counts);
* ``ids_off`` + ``ids``: the ids as one UTF-8 blob; ``src_off`` + ``src``: the content hash
  ``_src`` of every row; ``meta_code`` + ``meta_off`` + ``meta``: the JSON of any other metadata
  keys, dictionary-encoded (each distinct JSON text once, so filters are evaluated once per
  distinct value); ``flags`` and ``chunk``: which reserved keys a row has and its chunk number.

Opening maps the file and reads its header: nothing is parsed or loaded per entry, so opening
takes the same time whatever the size of the index (issue 18). Rows are rebuilt on access:

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "e.npy"
>>> save_entries(path, ["a", "b#1"], [{"lang": "en"}, {"_src": "h", "_doc": "b", "_chunk": 1}])
>>> ids, meta, keys, _ = open_entries(path)
>>> meta[0], meta[1], meta.document(1), meta.source(1)
({'lang': 'en'}, {'_src': 'h', '_doc': 'b', '_chunk': 1}, 'b', 'h')
>>> m = IdMap([ids], [keys], [lambda: np.array([True, True])], [2])
>>> m.get("b#1"), "c" in m, len(m), list(m)
((0, 1), False, 2, ['a', 'b#1'])
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from mm.encoders.chunking import CHUNK_KEY, CHUNK_SEP, DOC_KEY, SOURCE_KEY

from mm.errors import IndexDamagedError

_HAS_SRC, _CHUNKED, _RAW = 1, 2, 4
#: first int64 of an entries file, and its layout version
MAGIC, ENTRIES_VERSION = 0x31544e454d4d, 1  # b"MMENT1"
HEADER_BYTES = 64


def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that is the same in every process (stored on disk; ``hash()`` is salted).

    >>> stable_hash("doc-1") == stable_hash("doc-1") != stable_hash("doc-2")
    True
    """
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                          "little", signed=True)


def hash_all(texts: Any) -> np.ndarray:
    """:func:`stable_hash` of every string of ``texts`` (int64 array)."""
    return np.fromiter((stable_hash(t) for t in texts), dtype=np.int64, count=len(texts))


class Strings(Sequence):
    """An immutable list of strings stored as one UTF-8 blob and offsets (``[i]`` decodes one).

    ``blob`` may be a memory-mapped ``uint8`` array: only the bytes of the strings read are touched.
    """

    __slots__ = ("blob", "off")

    def __init__(self, blob: Any, off: np.ndarray) -> None:
        self.blob, self.off = blob, off

    @classmethod
    def build(cls, strings: list[str]) -> Strings:
        """From a list of strings (in memory)."""
        encoded = [s.encode("utf-8") for s in strings]
        off = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=off[1:])
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8), off)

    def __len__(self) -> int:
        return len(self.off) - 1

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        try:
            a, b = int(self.off[i]), int(self.off[i + 1])
            if not 0 <= a <= b <= len(self.blob):
                raise ValueError(f"offsets {a}..{b} outside the {len(self.blob)} stored bytes")
            return bytes(self.blob[a:b]).decode("utf-8")
        except (ValueError, IndexError) as exc:  # UnicodeDecodeError is a ValueError
            raise IndexDamagedError(f"a stored id or metadata value cannot be read ({exc}); the index is damaged: "
                                    f"restore it from a backup or rebuild it with `mm index build`") from exc

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))


class Metadata(Sequence):
    """A segment's metadata dicts, stored as columns; ``[row]`` rebuilds the dict (a fresh copy).

    Rows whose reserved keys (``_src``, ``_doc``, ``_chunk``) follow the writer's layout keep them in
    columns (``_doc`` is the chunk id without its ``#n``) and the rest as JSON; any other row is kept
    whole as JSON, exactly as stored. The JSON texts are dictionary-encoded: ``code[row]`` indexes
    ``distinct``.
    """

    __slots__ = ("chunk", "code", "distinct", "doc_hashes", "flags", "ids", "src")

    def __init__(self, ids: Strings, flags: np.ndarray, chunk: np.ndarray, src: Strings, code: np.ndarray,
                 distinct: Strings, doc_hashes: np.ndarray) -> None:
        self.ids, self.flags, self.chunk, self.src = ids, flags, chunk, src
        self.code, self.distinct = code, distinct
        self.doc_hashes = doc_hashes  # stable hash of the document of every row (pruning, document counts)

    def __len__(self) -> int:
        return len(self.flags)

    def __getitem__(self, row: Any) -> Any:
        if isinstance(row, slice):
            return [self[j] for j in range(*row.indices(len(self)))]
        row = int(row)
        flags, text = int(self.flags[row]), self.distinct[int(self.code[row])]
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

    def filter_mask(self, rows: np.ndarray, test: Callable[[dict[str, Any]], bool],
                    fields: set[str]) -> np.ndarray:
        """Bool per row of ``rows``: ``test(metadata)``, evaluated once per distinct stored JSON.

        Rows whose reserved keys are in ``fields`` (or stored whole) are rebuilt one by one.
        """
        out = np.zeros(len(rows), dtype=bool)
        if not len(rows):
            return out
        flags = np.asarray(self.flags[rows])
        reserved = bool(fields & {SOURCE_KEY, DOC_KEY, CHUNK_KEY})
        per_row = (flags & _RAW) != 0 if not reserved else np.ones(len(rows), dtype=bool)
        codes = np.asarray(self.code[rows])[~per_row]
        uniq, inverse = np.unique(codes, return_inverse=True)
        verdict = np.array([test(json.loads(t) if (t := self.distinct[int(c)]) else {}) for c in uniq], dtype=bool)
        out[~per_row] = verdict[inverse.reshape(-1)] if len(uniq) else False
        for i in np.flatnonzero(per_row):
            out[i] = test(self[rows[i]])
        return out


def sections(n: int, distinct: int, ids_bytes: int, src_bytes: int, meta_bytes: int) -> dict[str, tuple[int, Any, int]]:
    """``name -> (byte offset, dtype, count)`` of every section of an entries file (after its header).

    >>> s = sections(2, 1, 4, 0, 2)
    >>> s["keys"], s["flags"][0], s["meta"]
    ((64, <class 'numpy.int64'>, 2), 184, (190, <class 'numpy.uint8'>, 2))
    """
    layout = [("keys", np.int64, n), ("doc_hash", np.int64, n), ("ids_off", np.int64, n + 1),
              ("src_off", np.int64, n + 1), ("meta_off", np.int64, distinct + 1), ("key_rows", np.int32, n),
              ("meta_code", np.int32, n), ("chunk", np.int32, n), ("flags", np.uint8, n),
              ("ids", np.uint8, ids_bytes), ("src", np.uint8, src_bytes), ("meta", np.uint8, meta_bytes)]
    out, at = {}, HEADER_BYTES
    for name, dtype, count in layout:  # widest first: every section is aligned to its item size
        out[name] = (at, dtype, count)
        at += count * np.dtype(dtype).itemsize
    out["_end"] = (at, np.uint8, 0)
    return out


def encode_entries(ids: list[str], metadata: list[dict[str, Any]]) -> np.ndarray:
    """The bytes of an entries file (``uint8``) for a segment's ``ids`` and ``metadata``."""
    n = len(ids)
    flags = np.zeros(n, dtype=np.uint8)
    chunk = np.full(n, -1, dtype=np.int32)
    code = np.zeros(n, dtype=np.int32)
    src, docs, distinct = [""] * n, [""] * n, {"": 0}
    for i, (entry_id, meta) in enumerate(zip(ids, metadata, strict=True)):
        flags[i], src[i], rest, chunk[i] = _split(entry_id, meta)
        code[i] = distinct.setdefault(rest, len(distinct))
        doc = meta.get(DOC_KEY, entry_id)
        docs[i] = doc if isinstance(doc, str) else entry_id
    id_s, src_s, meta_s = Strings.build(ids), Strings.build(src), Strings.build(list(distinct))
    return _pack(hash_all(ids), hash_all(docs), (id_s.blob, id_s.off), (src_s.blob, src_s.off),
                 (meta_s.blob, meta_s.off), code, chunk, flags)


def _pack(id_hash: np.ndarray, doc_hash: np.ndarray, ids: tuple[np.ndarray, np.ndarray],
          src: tuple[np.ndarray, np.ndarray], meta: tuple[np.ndarray, np.ndarray], code: np.ndarray,
          chunk: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """The bytes of an entries file from its columns (``(blob, offsets)`` for each kind of string)."""
    n, order = len(id_hash), np.argsort(id_hash, kind="stable")
    lay = sections(n, len(meta[1]) - 1, len(ids[0]), len(src[0]), len(meta[0]))
    out = np.zeros(lay["_end"][0], dtype=np.uint8)
    out[:HEADER_BYTES].view(np.int64)[:7] = [MAGIC, ENTRIES_VERSION, n, len(meta[1]) - 1, len(ids[0]),
                                             len(src[0]), len(meta[0])]
    values = {"keys": id_hash[order], "doc_hash": doc_hash, "ids_off": ids[1], "src_off": src[1],
              "meta_off": meta[1], "key_rows": order, "meta_code": code, "chunk": chunk, "flags": flags,
              "ids": ids[0], "src": src[0], "meta": meta[0]}
    for name, value in values.items():
        at, dtype, count = lay[name]
        out[at:at + count * np.dtype(dtype).itemsize].view(dtype)[:] = value
    return out


def _offsets(lengths: list[np.ndarray]) -> np.ndarray:
    length = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    off = np.zeros(len(length) + 1, dtype=np.int64)
    np.cumsum(length, out=off[1:])
    return off


def string_pieces(blob: np.ndarray, off: np.ndarray, rows: np.ndarray, piece: int = 2**16,
                  piece_bytes: int = 8 * 2**20) -> Iterator[np.ndarray]:
    """The bytes of strings ``rows`` (ascending) of ``blob`` + ``off``, copied by runs of consecutive rows
    (one slice per run, at most ``piece_bytes`` at a time: no index array per byte).

    >>> s = Strings.build(["ab", "c", "", "def"])
    >>> b"".join(p.tobytes() for p in string_pieces(s.blob, s.off, np.array([0, 1, 3]), piece_bytes=2))
    b'abcdef'
    """
    rows = np.asarray(rows, dtype=np.int64)
    if not len(rows):
        return
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts, ends = rows[np.r_[0, breaks]], rows[np.r_[breaks - 1, len(rows) - 1]] + 1
    for first, last in zip(np.asarray(off[starts]).tolist(), np.asarray(off[ends]).tolist(), strict=True):
        for at in range(first, last, piece_bytes):
            yield np.array(blob[at:min(last, at + piece_bytes)], dtype=np.uint8)


def save_merged_entries(path: Path, parts: list[tuple[np.ndarray, np.ndarray]], piece: int = 2**16) -> None:
    """Write the entries file of rows of other entries files: ``parts`` = [(entries file bytes, rows to keep)].

    Columns are copied with numpy, ``piece`` rows at a time (no Python object per entry; about 50 bytes
    per entry in memory: the id hashes, their order and the string offsets); metadata JSON is deduplicated.

    >>> import tempfile
    >>> a, b = encode_entries(["x", "y"], [{"k": 1}, {}]), encode_entries(["z"], [{"k": 1}])
    >>> path = Path(tempfile.mkdtemp()) / "m.npy"
    >>> save_merged_entries(path, [(a, np.array([1])), (b, np.array([0]))])
    >>> ids, meta, _, _ = open_entries(path)
    >>> list(ids), list(meta), len(meta.distinct)
    (['y', 'z'], [{}, {'k': 1}], 2)
    """
    from mm.index.storage import save_pieces

    cols = [(entry_arrays(data), np.asarray(rows, dtype=np.int64)) for data, rows in parts]
    distinct: dict[bytes, int] = {b"": 0}
    remaps, id_hash = [], []
    for a, rows in cols:
        meta = Strings(a["meta"], a["meta_off"])
        remaps.append(np.array([distinct.setdefault(bytes(meta.blob[int(meta.off[i]):int(meta.off[i + 1])]),
                                                    len(distinct)) for i in range(len(meta))], dtype=np.int32))
        by_row = np.empty(len(a["keys"]), dtype=np.int64)
        by_row[np.asarray(a["key_rows"])] = a["keys"]
        id_hash.append(by_row[rows])
        del by_row
    hashes = np.concatenate(id_hash) if id_hash else np.zeros(0, np.int64)
    del id_hash
    order = np.argsort(hashes, kind="stable")
    keys = hashes[order]
    del hashes
    ids_off = _offsets([np.asarray(a["ids_off"])[rows + 1] - np.asarray(a["ids_off"])[rows] for a, rows in cols])
    src_off = _offsets([np.asarray(a["src_off"])[rows + 1] - np.asarray(a["src_off"])[rows] for a, rows in cols])
    meta_blob = np.frombuffer(b"".join(distinct), dtype=np.uint8)
    meta_off = _offsets([np.array([len(t) for t in distinct], dtype=np.int64)])
    n, counts = len(order), (len(distinct), int(ids_off[-1]), int(src_off[-1]), len(meta_blob))
    header = np.zeros(HEADER_BYTES // 8, dtype=np.int64)
    header[:7] = [MAGIC, ENTRIES_VERSION, n, *counts]

    def column(key: str, dtype: Any) -> Iterator[np.ndarray]:
        for i, (a, rows) in enumerate(cols):
            for s in range(0, len(rows), piece):
                values = np.asarray(a[key])[rows[s:s + piece]]
                yield (remaps[i][values] if key == "meta_code" else values).astype(dtype).view(np.uint8)

    def pieces() -> Iterator[np.ndarray]:
        yield header.view(np.uint8)
        yield keys.view(np.uint8)
        yield from column("doc_hash", np.int64)
        for array in (ids_off, src_off, meta_off, order.astype(np.int32)):
            yield array.view(np.uint8)
        yield from column("meta_code", np.int32)
        yield from column("chunk", np.int32)
        yield from column("flags", np.uint8)
        for blob in ("ids", "src"):
            for a, rows in cols:
                yield from string_pieces(a[blob], a[f"{blob}_off"], rows, piece)
        yield meta_blob

    save_pieces(path, np.uint8, (sections(n, *counts)["_end"][0],), pieces())


def save_entries(path: Path, ids: list[str], metadata: list[dict[str, Any]]) -> None:
    """Write a segment's entries file at ``path`` (a fresh name, fsynced)."""
    from mm.index.storage import save_array

    save_array(path, encode_entries(ids, metadata))


def entries_header(data: np.ndarray) -> tuple[int, int, int, int, int]:
    """``(n, distinct, ids bytes, src bytes, meta bytes)`` of an entries file; ValueError when it is not one."""
    if data.ndim != 1 or data.dtype != np.uint8 or len(data) < HEADER_BYTES:
        raise ValueError("not an entries file (too short, or not bytes)")
    head = np.asarray(data[:HEADER_BYTES]).view(np.int64)
    if int(head[0]) != MAGIC:
        raise ValueError("not an entries file (bad magic number)")
    if int(head[1]) != ENTRIES_VERSION:
        raise ValueError(f"entries layout {int(head[1])}, this mm reads {ENTRIES_VERSION}")
    counts = [int(v) for v in head[2:7]]
    if min(counts) < 0 or sections(*counts)["_end"][0] != len(data):
        raise ValueError(f"its size ({len(data):,} bytes) does not match its header {counts}")
    return counts[0], counts[1], counts[2], counts[3], counts[4]


def entry_arrays(data: np.ndarray) -> dict[str, np.ndarray]:
    """Every section of an entries file as an array view (memory-mapped when ``data`` is)."""
    lay = sections(*entries_header(data))
    return {name: data[at:at + count * np.dtype(dtype).itemsize].view(dtype)
            for name, (at, dtype, count) in lay.items() if name != "_end"}


def open_entries(path: Path) -> tuple[Strings, Metadata, tuple[np.ndarray, np.ndarray], np.ndarray]:
    """Map a segment's entries file: ``(ids, metadata, (sorted id hashes, their rows), the file's bytes)``;
    reads only the header."""
    from mm.index.storage import load_array

    try:
        data = load_array(path)
        return (*open_entries_bytes(data), data)
    except ValueError as exc:
        raise IndexDamagedError(f"{path} is damaged ({exc}); restore the index from a backup or rebuild it "
                                f"with `mm index build`") from exc


def open_entries_bytes(data: np.ndarray) -> tuple[Strings, Metadata, tuple[np.ndarray, np.ndarray]]:
    """:func:`open_entries` of an entries file's bytes (ValueError when they are not one)."""
    a = entry_arrays(data)
    ids = Strings(a["ids"], a["ids_off"])
    meta = Metadata(ids, a["flags"], a["chunk"], Strings(a["src"], a["src_off"]), a["meta_code"],
                    Strings(a["meta"], a["meta_off"]), a["doc_hash"])
    return ids, meta, (a["keys"], a["key_rows"])


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


#: with more segments than this, the first lookup merges their sorted hashes into one array
MERGE_LOOKUP_ABOVE = 8


class IdMap:
    """``id -> (segment, row)`` of the live entries, from each segment's sorted id hashes (verified against ids).

    Supports what a ``dict`` of ids did: ``in``, ``[id]``, ``get``, ``len`` and iteration (segment order).
    Building it reads nothing: a lookup binary-searches each segment's memory-mapped hashes; with
    more than :data:`MERGE_LOOKUP_ABOVE` segments the first lookup merges them (16 bytes per live entry).
    """

    def __init__(self, ids: list[Strings], keys: list[tuple[np.ndarray, np.ndarray]],
                 live: list[Callable[[], np.ndarray]], counts: list[int]) -> None:
        self._ids, self._keys, self._live, self._count = ids, keys, live, int(sum(counts))
        self._merged: tuple[np.ndarray, np.ndarray] | None = None

    def _merge(self) -> tuple[np.ndarray, np.ndarray]:
        try:
            return self._merge_all()
        except IndexError as exc:  # rows out of range in a segment too large to be checked entry by entry at open
            raise IndexDamagedError(f"an entries file holds rows out of range ({exc}); the index is damaged: restore "
                                    f"it from a backup or rebuild it with `mm index build`") from exc

    def _merge_all(self) -> tuple[np.ndarray, np.ndarray]:
        keys, locs = [], []
        for s, (seg_keys, seg_rows) in enumerate(self._keys):
            rows = np.asarray(seg_rows, dtype=np.int64)
            ok = self._live[s]()[rows]
            keys.append(np.asarray(seg_keys)[ok])
            locs.append((np.int64(s) << 32) | rows[ok])
        keys_all, locs_all = np.concatenate(keys), np.concatenate(locs)
        order = np.argsort(keys_all, kind="stable")  # equal hashes stay in segment order
        return keys_all[order], locs_all[order]

    def _candidates(self, h: int) -> Iterator[tuple[int, int]]:
        """``(segment, row)`` of live entries whose id hashes to ``h``, oldest segment first."""
        if self._merged is None and len(self._keys) > MERGE_LOOKUP_ABOVE:
            self._merged = self._merge()
        if self._merged is not None:
            keys, locs = self._merged
            lo = int(np.searchsorted(keys, h, "left"))
            while lo < len(keys) and keys[lo] == h:
                loc = int(locs[lo])
                yield loc >> 32, loc & 0xFFFFFFFF
                lo += 1
            return
        for s, (seg_keys, seg_rows) in enumerate(self._keys):
            lo = int(np.searchsorted(seg_keys, h, "left"))
            while lo < len(seg_keys) and seg_keys[lo] == h:
                row = int(seg_rows[lo])
                if not 0 <= row < len(self._ids[s]):
                    raise IndexDamagedError(f"an entries file holds row {row} of {len(self._ids[s])}; the index is "
                                            f"damaged: restore it from a backup or rebuild it with `mm index build`")
                if self._live[s]()[row]:
                    yield s, row
                lo += 1

    def get(self, entry_id: str, default: Any = None) -> Any:
        found = default
        for s, row in self._candidates(stable_hash(entry_id)):  # later segments win, like a dict filled in order
            if self._ids[s][row] == entry_id:
                found = (s, row)
        return found

    def __getitem__(self, entry_id: str) -> tuple[int, int]:
        loc = self.get(entry_id)
        if loc is None:
            raise KeyError(entry_id)
        return loc

    def __contains__(self, entry_id: object) -> bool:
        return isinstance(entry_id, str) and self.get(entry_id) is not None

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[str]:
        for seg_ids, live in zip(self._ids, self._live, strict=True):
            for row in np.flatnonzero(live()):
                yield seg_ids[row]
