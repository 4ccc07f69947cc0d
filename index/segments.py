"""Immutable on-disk segments: documents (ids, texts, metadata) plus the arrays a kind of index stores.

A segment is a set of files sharing the prefix ``seg-<uid>``:

* ``.entries.npy``   ids and metadata, memory-mapped (sorted id hashes, UTF-8 blobs, columns: :mod:`mm.index.entries`)
* ``.text.npy`` / ``.text_off.npy``   texts concatenated + offsets (memory-mapped, read per hit): each
  document's UTF-8 text deflated on its own (:func:`pack_text`: raw deflate, no header; an empty
  text is 0 bytes), so a hit inflates only its own text and merges copy bytes as they are
* kind-specific ``.npy`` arrays (memory-mapped), listed in the manifest entry's ``files``
* ``.del-<uid>.npy``  sorted rows deleted since the segment was written (tombstones), optional

Segments never change after they are committed; deleting rows writes a new
tombstone file and a new manifest. Opening a segment maps its files and reads their headers
only (tombstones are read on first use), so it costs the same whatever the segment's size.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mm.index.entries import Metadata, Strings, open_entries, save_entries, save_merged_entries, string_pieces
from mm.index.storage import load_array, new_uid, save_array, save_pieces

log = logging.getLogger(__name__)

#: zlib's level for stored texts (9 gained 0.01% over 6 on SciFact's abstracts)
TEXT_LEVEL = 6


def pack_text(text: str) -> bytes:
    """A document's stored text: its UTF-8 bytes, raw-deflated (b"" for "").

    >>> unpack_text(pack_text("héllo " * 50)) == "héllo " * 50, len(pack_text("héllo " * 50)) < 30, pack_text("")
    (True, True, b'')
    """
    data = text.encode("utf-8")
    if not data:
        return b""
    packer = zlib.compressobj(TEXT_LEVEL, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush()


def unpack_text(data: bytes) -> str:
    """The text :func:`pack_text` stored; raises ``zlib.error`` or ``UnicodeDecodeError`` on damaged bytes."""
    if not data:
        return ""
    unpacker = zlib.decompressobj(-15)
    raw = unpacker.decompress(data)
    if not unpacker.eof or unpacker.unused_data:
        raise zlib.error("the deflate stream is cut short or followed by other bytes")
    return raw.decode("utf-8")


@dataclass
class Segment:
    """A committed segment, opened read-only (arrays memory-mapped)."""

    entry: dict[str, Any]
    ids: Strings
    metadata: Metadata
    arrays: dict[str, np.ndarray]
    keys: tuple[np.ndarray, np.ndarray]  # sorted id hashes and their rows (mm.index.entries)
    tombstones: np.ndarray | None  # deleted rows (memory-mapped; the bool mask is built on first use)
    _text: np.ndarray | None = field(default=None, repr=False)
    _text_off: np.ndarray | None = field(default=None, repr=False)
    _deleted: np.ndarray | None = field(default=None, repr=False)
    _live: np.ndarray | None = field(default=None, repr=False)
    entries_data: np.ndarray | None = field(default=None, repr=False)  # the entries file's bytes (mapped)

    @property
    def name(self) -> str:
        return self.entry["name"]

    @property
    def n_docs(self) -> int:
        return len(self.ids)

    @property
    def n_live(self) -> int:
        return int(self.entry["n_docs"]) - int(self.entry.get("n_deleted", 0))

    @property
    def deleted(self) -> np.ndarray:
        """Bool per row: deleted since the segment was written (the tombstone file, read on first use)."""
        if self._deleted is None:
            self._deleted = np.zeros(self.n_docs, dtype=bool)
            if self.tombstones is not None:
                self._deleted[np.asarray(self.tombstones)] = True
        return self._deleted

    @property
    def live(self) -> np.ndarray:
        if self._live is None:
            self._live = ~self.deleted
        return self._live

    def text(self, row: int) -> str:
        """The stored text of ``row``."""
        a, b = int(self._text_off[row]), int(self._text_off[row + 1])
        try:
            return unpack_text(bytes(self._text[a:b]))
        except (zlib.error, UnicodeDecodeError) as exc:
            from mm.errors import IndexDamagedError

            why = exc.reason if isinstance(exc, UnicodeDecodeError) else f"bad deflate data: {exc}"
            raise IndexDamagedError(f"the stored text of {self.ids[row]!r} in {self.entry['files']['text']} is "
                                    f"damaged ({why}); restore the index from a backup "
                                    f"or rebuild it with `mm index build`") from exc


def open_segment(folder: Path, entry: dict[str, Any], reuse: Segment | None = None) -> Segment:
    """Open a committed segment; raises FileNotFoundError when a concurrent compaction removed it.

    ``reuse``: this segment as opened before (segments never change): only its tombstones may differ.
    """
    files = dict(entry["files"])
    deleted_file = files.pop("deleted", None)
    if reuse is not None and {k: v for k, v in reuse.entry["files"].items() if k != "deleted"} == files:
        if reuse.entry["files"].get("deleted") == deleted_file:
            return Segment(entry, reuse.ids, reuse.metadata, dict(reuse.arrays), reuse.keys, reuse.tombstones,
                           reuse._text, reuse._text_off, reuse._deleted, reuse._live, reuse.entries_data)
        return Segment(entry, reuse.ids, reuse.metadata, dict(reuse.arrays), reuse.keys,
                       _tombstones(folder, deleted_file), reuse._text, reuse._text_off,
                       entries_data=reuse.entries_data)
    tombstones = _tombstones(folder, deleted_file)
    ids, metadata, keys, data = open_entries(folder / files.pop("entries"))
    text = load_array(folder / files.pop("text"))
    text_off = load_array(folder / files.pop("text_off"))
    arrays = {key: load_array(folder / name) for key, name in files.items()}
    return Segment(entry, ids, metadata, arrays, keys, tombstones, text, text_off, entries_data=data)


def _tombstones(folder: Path, name: str | None) -> np.ndarray | None:
    return None if name is None else load_array(folder / name)


def write_segment(folder: Path, ids: list[str], texts: list[str], metadata: list[dict[str, Any]],
                  arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> dict[str, Any]:
    """Write a new segment's files (fsynced, fresh names) and return its manifest entry."""
    name = f"seg-{new_uid()}"
    files = {"entries": f"{name}.entries.npy", "text": f"{name}.text.npy", "text_off": f"{name}.text_off.npy"}
    save_entries(folder / files["entries"], ids, metadata)
    packed = [pack_text(t) for t in texts]
    offsets = np.zeros(len(packed) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in packed], out=offsets[1:])
    save_array(folder / files["text"], np.frombuffer(b"".join(packed), dtype=np.uint8))
    save_array(folder / files["text_off"], offsets)
    for key, array in arrays.items():
        files[key] = f"{name}.{key}.npy"
        save_array(folder / files[key], array)
    return {"name": name, "n_docs": len(ids), "n_deleted": 0, "files": files, **extra}


def merge_segments(folder: Path, segments: list[Segment], row_arrays: tuple[str, ...],
                   extra: dict[str, Any], piece: int = 2**16) -> dict[str, Any] | None:
    """Write one segment holding the live rows of ``segments`` (entries, texts and the per-row ``row_arrays``
    copied with numpy ``piece`` rows at a time: no Python object per entry, memory ~50 bytes per entry);
    its manifest entry, ``None`` if no row is live."""
    parts = [(seg, np.flatnonzero(seg.live)) for seg in segments]
    n = sum(len(rows) for _, rows in parts)
    if not n:
        return None
    name = f"seg-{new_uid()}"
    files = {"entries": f"{name}.entries.npy", "text": f"{name}.text.npy", "text_off": f"{name}.text_off.npy"}
    save_merged_entries(folder / files["entries"], [(seg.entries_data, rows) for seg, rows in parts], piece)
    off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.concatenate([np.asarray(seg._text_off)[rows + 1] - np.asarray(seg._text_off)[rows]
                              for seg, rows in parts]), out=off[1:])
    save_pieces(folder / files["text"], np.uint8, (int(off[-1]),),
                (p for seg, rows in parts for p in string_pieces(seg._text, seg._text_off, rows, piece)))
    save_array(folder / files["text_off"], off)
    for key in row_arrays:
        files[key] = f"{name}.{key}.npy"
        first = segments[0].arrays[key]
        save_pieces(folder / files[key], first.dtype, (n, *first.shape[1:]),
                    (np.asarray(seg.arrays[key][rows[s:s + piece]]) for seg, rows in parts
                     for s in range(0, len(rows), piece)))
    return {"name": name, "n_docs": n, "n_deleted": 0, "files": files, **extra}


def with_tombstones(folder: Path, entry: dict[str, Any], deleted: np.ndarray) -> dict[str, Any] | None:
    """A copy of ``entry`` whose deleted rows are ``deleted`` (bool mask); ``None`` if nothing is left."""
    rows = np.flatnonzero(deleted).astype(np.int32)
    if len(rows) == entry["n_docs"]:
        return None
    entry = {**entry, "files": dict(entry["files"]), "n_deleted": len(rows)}
    name = f"{entry['name']}.del-{new_uid()}.npy"
    save_array(folder / name, rows)
    entry["files"]["deleted"] = name
    return entry


def read_rows(array: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of a (memory-mapped) array, read with a plain file read.

    Streaming passes over a large index (training, re-encoding) read this way so the
    pages they touch do not stay mapped into the process (its resident memory stays small).

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.npy"
    >>> save_array(path, np.arange(12, dtype=np.float16).reshape(6, 2))
    >>> read_rows(load_array(path), 2, 4).tolist()
    [[4.0, 5.0], [6.0, 7.0]]
    """
    where = _file_position(array)
    if where is None:
        return np.asarray(array[start:stop])
    row = int(np.prod(array.shape[1:], dtype=np.int64))
    count = max(0, min(stop, len(array)) - start) * row
    out = np.fromfile(where[0], dtype=array.dtype, count=count, offset=where[1] + start * row * array.dtype.itemsize)
    return out.reshape(-1, *array.shape[1:])


def _file_position(array: np.ndarray) -> tuple[str, int] | None:
    """``(file, byte offset)`` of a C-contiguous array mapped from a file (also a slice or view of one)."""
    root = array
    while isinstance(root.base, np.ndarray):
        root = root.base
    if not isinstance(root, np.memmap) or root.filename is None or not array.flags.c_contiguous:
        return None
    delta = array.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    return root.filename, root.offset + delta
