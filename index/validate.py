"""Check an index folder before it is opened: manifest schema, files, array shapes, id ranges, texts.

:func:`validate_index` reads the committed ``manifest.json`` defensively (size, nesting depth,
the type of every field), then every file it names: the file must exist inside the folder,
each ``.npy`` header must parse and the file size must match its shape (a 0-byte or truncated
file is caught), shapes must agree with the document and token counts, and stored ids,
tombstones, centroid ids and inverted lists must be in range. Any problem raises
:class:`mm.errors.IndexDamagedError` naming the file and how to recover. Each kind of
segment has its own small check function (:data:`SEGMENT_CHECKS`), so a new on-disk layout
only replaces its own function.

>>> import tempfile, numpy as np, pathlib
>>> from mm.index import create_index
>>> path = pathlib.Path(tempfile.mkdtemp()) / "idx"
>>> _ = create_index(path, kind="dense", dim=4, encoder_info={}).add(["a"], np.ones((1, 4), np.float32))
>>> validate_index(path)["kind"]
'dense'
>>> vectors = next(path.glob("seg-*.vectors.npy"))
>>> _ = vectors.write_bytes(vectors.read_bytes()[:-4])  # lose the last float
>>> validate_index(path)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
mm.errors.IndexDamagedError: ...vectors.npy is truncated: ...
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from mm.index.segments import unpack_text

from mm.errors import IndexDamagedError, IndexFormatError
from mm.validation import MAX_JSON_DEPTH, json_depth_ok

#: largest manifest.json read (bytes); larger ones are refused as damaged
MAX_MANIFEST_BYTES = 64 * 2**20
#: stored texts up to this size are inflated and checked for valid UTF-8 when the index opens (larger: per hit)
MAX_TEXT_CHECK_BYTES = 256 * 2**20
#: inflating a packed text byte is charged to the check budget as this many bytes (one document at a time
#: through zlib costs about that much more than checking the other files' bytes)
INFLATE_COST = 16
#: bytes of per-entry files (entries, texts) whose every entry is checked when an index opens; past this
#: budget a segment's files get the structural checks only (header, sizes, first and last offsets) and a
#: damaged entry is reported when it is read (IndexDamagedError), so opening takes the same time at any size.
#: ``validate_index(path, deep_bytes=None)`` checks everything.
OPEN_CHECK_BYTES = 32 * 2**20
#: elements (and bytes, for UTF-8 checks) read at a time when checking per-entry files: memory at open is
#: bounded by these, whatever the size of the index
PIECE = 2**20
PIECE_BYTES = 8 * 2**20
#: a file name an index writes itself: no folder part, no '..'
SAFE_NAME = re.compile(r"^(seg|codec)-[0-9a-f]+[A-Za-z0-9_.\-]*\.(npy|json)$")

RECOVER = ("restore the folder from a backup, or rebuild it with `mm index build CORPUS --index DIR` "
           "(`--resume` keeps what is still valid only when the manifest is intact)")


def _damaged(where: Path | str, problem: str) -> IndexDamagedError:
    return IndexDamagedError(f"{where} {problem}; the index is damaged: {RECOVER}")


def _need(mapping: dict, key: str, types: tuple[type, ...], where: str) -> Any:
    """``mapping[key]`` of one of ``types`` (bool is never accepted as a number)."""
    if not isinstance(mapping, dict) or key not in mapping:
        raise _damaged(where, f"lacks the field {key!r}")
    value = mapping[key]
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        names = " or ".join(t.__name__ for t in types)
        raise _damaged(where, f"field {key!r} must be {names}, got {type(value).__name__}")
    return value


def _count(mapping: dict, key: str, where: str, minimum: int = 0) -> int:
    value = _need(mapping, key, (int,), where)
    if value < minimum:
        raise _damaged(where, f"field {key!r} must be >= {minimum}, got {value}")
    return value


# -- manifest -------------------------------------------------------------------------------------
def read_manifest_safely(path: Path) -> dict[str, Any]:
    """Parse ``manifest.json`` with size and depth limits, then the format check of :mod:`storage`."""
    from mm.index.storage import MANIFEST, read_manifest

    file = path / MANIFEST
    if file.is_file():
        size = file.stat().st_size
        if size == 0:
            raise _damaged(file, "is empty (0 bytes)")
        if size > MAX_MANIFEST_BYTES:
            raise _damaged(file, f"is {size:,} bytes, more than a manifest can be ({MAX_MANIFEST_BYTES:,})")
        try:
            text = file.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _damaged(file, f"is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
        if not json_depth_ok(text):
            raise _damaged(file, f"nests deeper than {MAX_JSON_DEPTH} levels")
    return read_manifest(path)


def check_manifest(manifest: dict[str, Any], where: str) -> None:
    """Schema of the manifest: field types, kind, dim, config, codec and segment entries."""
    from mm.index.codec import SCHEMES

    kind = _need(manifest, "kind", (str,), where)
    if kind not in SEGMENT_CHECKS:
        raise IndexFormatError(f"{where}: unknown index kind {kind!r}; valid kinds: {', '.join(SEGMENT_CHECKS)}")
    _count(manifest, "dim", where, minimum=1)
    _need(manifest, "encoder_info", (dict,), where)
    config = _need(manifest, "config", (dict,), where)
    _count(manifest, "generation", where)
    segments = _need(manifest, "segments", (list,), where)
    if kind == "multivector":
        cfg = f"{where} (config)"
        _check_nbits(config, cfg)
        if _need(config, "codec", (str,), cfg) not in SCHEMES:
            raise _damaged(cfg, f"codec must be one of {', '.join(SCHEMES)}, got {config['codec']!r}")
        _need(config, "keep_originals", (bool,), cfg)
        _count(config, "train_tokens", cfg, minimum=1)
        if "max_segment_tokens" in config:  # indexes created before the cap existed use the default
            _count(config, "max_segment_tokens", cfg, minimum=1)
        factor = _need(config, "centroids_factor", (int, float), cfg)
        if not np.isfinite(factor) or factor <= 0:
            raise _damaged(cfg, f"centroids_factor must be a positive number, got {factor}")
        _need(config, "seed", (int,), cfg)
        codec = manifest.get("codec")
        if codec is not None:
            _check_codec_entry(codec, f"{where} (codec)")
    elif manifest.get("codec") is not None:
        raise _damaged(where, "names a codec, but a dense index has none")
    names: set[str] = set()
    for i, entry in enumerate(segments):
        at = f"{where} (segment {i})"
        if not isinstance(entry, dict):
            raise _damaged(at, f"must be an object, got {type(entry).__name__}")
        name = _need(entry, "name", (str,), at)
        if name in names:
            raise _damaged(at, f"repeats the segment name {name!r}")
        names.add(name)
        n_docs = _count(entry, "n_docs", at, minimum=1)
        n_deleted = _count(entry, "n_deleted", at)
        if n_deleted >= n_docs:
            raise _damaged(at, f"has {n_deleted} deleted of {n_docs} documents (a fully deleted segment is dropped)")
        _check_file_names(_need(entry, "files", (dict,), at), at, ("entries", "text", "text_off"))
        if kind == "multivector":
            _need(entry, "compressed", (bool,), at)
            _count(entry, "n_tokens", at)
            if entry["compressed"] and codec is None:
                raise _damaged(at, "is compressed, but the manifest has no codec")


def _check_nbits(entry: dict, where: str) -> None:
    """``nbits``: average residual bits per dimension, 1 to 4 (fractions allowed; see mm.index.codec)."""
    nbits = _need(entry, "nbits", (int, float), where)
    if isinstance(nbits, bool) or not np.isfinite(nbits) or not 1 <= nbits <= 4:
        raise _damaged(where, f"nbits must be a number from 1 to 4, got {nbits}")


def _check_codec_entry(codec: Any, where: str) -> None:
    if not isinstance(codec, dict):
        raise _damaged(where, f"must be an object or null, got {type(codec).__name__}")
    files = _need(codec, "files", (dict,), where)
    _check_file_names(files, where, ("centroids",))
    _check_nbits(codec, where)
    _need(codec, "normalize", (bool,), where)
    _count(codec, "n_centroids", where, minimum=1)


def _check_file_names(files: dict, where: str, required: tuple[str, ...]) -> None:
    for key in required:
        if key not in files:
            raise _damaged(where, f"names no {key!r} file")
    for key, name in files.items():
        if not isinstance(name, str) or not SAFE_NAME.match(name):
            raise _damaged(where, f"names an invalid file for {key!r}: {name!r} (index files are plain "
                                  f"seg-*/codec-* names inside the folder)")


# -- files ----------------------------------------------------------------------------------------
def npy_header(file: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an ``.npy`` file from its header; the file size must match them exactly."""
    if not file.is_file():
        raise FileNotFoundError(file)  # the caller retries: a concurrent compaction may have removed it
    size = file.stat().st_size
    if size == 0:
        raise _damaged(file, "is empty (0 bytes)")
    try:
        with open(file, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in reader:
                raise ValueError(f"unsupported .npy version {version}")
            shape, _fortran, dtype = reader[version](fh)
            offset = fh.tell()
    except Exception as exc:  # numpy parses the header with ast/tokenize: ValueError, SyntaxError, TokenError...
        raise _damaged(file, f"is not a readable .npy file ({type(exc).__name__}: {str(exc)[:120]})") from exc
    if dtype.hasobject:
        raise _damaged(file, "holds Python objects, which an index never writes")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size != expected:
        state = "truncated" if size < expected else "longer than its header says"
        raise _damaged(file, f"is {state}: {size:,} bytes, its header ({dtype}, shape {shape}) needs {expected:,}")
    return tuple(int(n) for n in shape), dtype


class _Files:
    """The files of one manifest entry: header checks, loads, and messages naming the file."""

    def __init__(self, folder: Path, files: dict[str, str], where: str = "manifest.json") -> None:
        self.folder, self.files, self.where = folder, files, where

    def path(self, key: str) -> Path:
        if key not in self.files:
            raise _damaged(self.folder / self.where, f"a segment names no {key!r} file")
        return self.folder / self.files[key]

    def shape(self, key: str, kinds: str, ndim: int) -> tuple[int, ...]:
        shape, dtype = npy_header(self.path(key))
        if dtype.kind not in kinds:
            raise _damaged(self.path(key), f"has dtype {dtype}, expected {_KIND_NAMES[kinds]}")
        if len(shape) != ndim:
            raise _damaged(self.path(key), f"has shape {shape}, expected {ndim} dimension(s)")
        return shape

    def expect(self, key: str, kinds: str, shape: tuple[int | None, ...]) -> tuple[int, ...]:
        got = self.shape(key, kinds, len(shape))
        if any(want is not None and want != n for want, n in zip(shape, got, strict=True)):
            wanted = tuple("*" if n is None else n for n in shape)
            raise _damaged(self.path(key), f"has shape {got}, expected {wanted}")
        return got

    def load(self, key: str) -> np.ndarray:
        return np.load(self.path(key), mmap_mode="r", allow_pickle=False)

    def in_range(self, key: str, low: int, high: int, what: str) -> None:
        array = self.load(key)
        if array.size and (int(array.min()) < low or int(array.max()) >= high):
            raise _damaged(self.path(key), f"holds {what} outside [{low}, {high}): min {int(array.min())}, "
                                           f"max {int(array.max())}")

    def offsets(self, key: str, n: int, total: int | None, every: bool = True) -> np.ndarray:
        """An offsets array of n+1 entries: starts at 0, never decreases (checked when ``every``), ends at ``total``."""
        self.expect(key, "iu", (n + 1,))
        off = self.load(key)
        if off[0] != 0 or (every and any((np.diff(values) < 0).any() for _, values in _pieces(off))) or \
                (total is not None and int(off[-1]) != total):
            raise _damaged(self.path(key), f"is not a valid offsets array (must rise from 0 to {total})")
        return off


_KIND_NAMES = {"iu": "integers", "f": "floats", "u": "unsigned integers", "fiu": "numbers"}


def check_utf8(array: np.ndarray, piece: int = 8 * 2**20) -> tuple[int, str] | None:
    """``(offset, reason)`` of the first invalid UTF-8 in a (memory-mapped) byte array, or ``None``.

    Decodes in pieces read from the array's file, so memory stays bounded whatever the size.

    >>> check_utf8(np.frombuffer("héllo".encode(), dtype=np.uint8), piece=2) is None
    True
    >>> check_utf8(np.frombuffer(b"okay\\xff", dtype=np.uint8), piece=3)
    (4, 'invalid start byte')
    """
    import codecs

    from mm.index.segments import read_rows

    decoder = codecs.getincrementaldecoder("utf-8")()
    for start in range(0, max(len(array), 1), piece):
        data = bytes(read_rows(array, start, start + piece))
        base = start - len(decoder.getstate()[0])  # bytes of a character cut at the previous piece's end
        try:
            decoder.decode(data, final=start + piece >= len(array))
        except UnicodeDecodeError as exc:
            return base + exc.start, exc.reason
    return None


def _pieces(array: np.ndarray, piece: int | None = None):
    """``(start, values)`` pieces of a (memory-mapped) 1-D array read with plain file reads; each piece
    also holds the first value of the next one, so differences across pieces are seen."""
    from mm.index.segments import read_rows

    piece = piece or PIECE
    for start in range(0, max(len(array), 1), piece):
        yield start, read_rows(array, start, start + piece + 1)


class Budget:
    """Bytes of per-entry files still to check in full (``None``: no limit)."""

    def __init__(self, nbytes: int | None) -> None:
        self.left = nbytes

    def take(self, nbytes: int) -> bool:
        """Whether a file of ``nbytes`` is checked entry by entry (and counts it)."""
        if self.left is None:
            return True
        if nbytes > self.left:
            self.left = 0
            return False
        self.left -= nbytes
        return True


def _check_entries(file: Path, n: int, budget: Budget) -> None:
    """A segment's entries file (:mod:`mm.index.entries`): header, sizes, offsets, ranges, sorted id hashes,
    UTF-8 ids, no id twice. Reads it in bounded pieces: memory does not grow with the segment."""
    from mm.index.entries import entry_arrays

    shape, dtype = npy_header(file)
    if dtype != np.uint8 or len(shape) != 1:
        raise _damaged(file, f"has dtype {dtype} and shape {shape}, expected bytes")
    try:
        a = entry_arrays(np.load(file, mmap_mode="r", allow_pickle=False))
    except ValueError as exc:
        raise _damaged(file, f"is not a valid entries file ({exc})") from exc
    if len(a["keys"]) != n:
        raise _damaged(file, f"holds {len(a['keys'])} entries, the manifest says {n}")
    for name, blob in (("ids_off", "ids"), ("src_off", "src"), ("meta_off", "meta")):
        if int(a[name][0]) != 0 or int(a[name][-1]) != len(a[blob]):
            raise _damaged(file, f"has {name} that do not run from 0 to {len(a[blob])}")
    if not budget.take(file.stat().st_size):
        return
    for name, strict in (("ids_off", True), ("src_off", False), ("meta_off", False)):
        for _, values in _pieces(a[name]):
            step = np.diff(values)
            if (step <= 0).any() if strict else (step < 0).any():
                raise _damaged(file, f"has {name} that are not increasing ({'an empty id' if strict else 'order'})")
    for name, high in (("key_rows", n), ("meta_code", len(a["meta_off"]) - 1)):
        for _, values in _pieces(a[name]):
            if len(values) and (int(values.min()) < 0 or int(values.max()) >= high):
                raise _damaged(file, f"holds {name} outside [0, {high})")
    ids = a["ids"]
    for start, values in _pieces(a["keys"]):
        if (values[1:] < values[:-1]).any():  # (np.diff would overflow on 64-bit hashes)
            raise _damaged(file, "holds id hashes out of order")
        for i in np.flatnonzero(values[1:] == values[:-1]):  # same hash: the ids must still differ
            rows = [int(r) for r in a["key_rows"][start + i:start + i + 2]]
            spans = [bytes(ids[int(a["ids_off"][r]):int(a["ids_off"][r + 1])]) for r in rows]
            if spans[0] == spans[1]:
                raise _damaged(file, "holds the same id twice")
    if len(ids) <= MAX_TEXT_CHECK_BYTES:
        for blob in ("ids", "src", "meta"):
            bad = check_utf8(a[blob], PIECE_BYTES)
            if bad is not None:
                raise _damaged(file, f"holds invalid UTF-8 in its {blob} ({bad[1]} at byte {bad[0]})")


def check_documents(folder: Path, entry: dict[str, Any], budget: Budget | None = None) -> _Files:
    """The files every segment has: the entries file (ids, metadata), UTF-8 texts and their offsets, tombstones."""
    budget = budget or Budget(None)
    files = _Files(folder, entry["files"])
    n = entry["n_docs"]
    _check_entries(files.path("entries"), n, budget)
    text_bytes = files.expect("text", "u", (None,))[0]
    deep = budget.take(text_bytes + 8 * (n + 1))
    off = files.offsets("text_off", n, text_bytes, every=deep)
    if deep and text_bytes <= MAX_TEXT_CHECK_BYTES and budget.take(INFLATE_COST * text_bytes):
        blob = files.load("text")
        for row in range(n):
            try:
                unpack_text(bytes(blob[int(off[row]):int(off[row + 1])]))
            except (zlib.error, UnicodeDecodeError) as exc:
                raise _damaged(files.path("text"), f"holds a damaged text at row {row} ({exc})") from exc
    if "deleted" in entry["files"]:
        count = files.expect("deleted", "iu", (None,))[0]
        if count != entry["n_deleted"]:
            raise _damaged(files.path("deleted"), f"lists {count} deleted rows, the manifest says "
                                                  f"{entry['n_deleted']}")
        files.in_range("deleted", 0, n, "row numbers")
    elif entry["n_deleted"]:
        raise _damaged(folder, f"segment {entry['name']} has {entry['n_deleted']} deleted rows but no tombstone file")
    return files


def check_dense_segment(folder: Path, entry: dict[str, Any], manifest: dict[str, Any],
                        budget: Budget | None = None) -> None:
    """A dense segment: ``vectors`` (n_docs x dim) floats."""
    files = check_documents(folder, entry, budget)
    files.expect("vectors", "f", (entry["n_docs"], manifest["dim"]))


def check_multivector_segment(folder: Path, entry: dict[str, Any], manifest: dict[str, Any],
                              budget: Budget | None = None) -> None:
    """A multi-vector segment: raw (doclens + float vectors) or compressed (codes, inverted lists)."""
    files = check_documents(folder, entry, budget)
    n, dim, n_tokens = entry["n_docs"], manifest["dim"], entry["n_tokens"]
    files.expect("doclens", "iu", (n,))
    doclens = np.asarray(files.load("doclens"))
    if (doclens < 0).any() or int(doclens.sum()) != n_tokens:
        raise _damaged(files.path("doclens"), f"token counts do not add up to the manifest's n_tokens ({n_tokens})")
    if not entry["compressed"]:
        files.expect("vectors", "f", (n_tokens, dim))
        return
    codec = manifest["codec"]
    n_centroids = codec["n_centroids"]
    files.expect("cids", "iu", (n_tokens,))
    files.in_range("cids", 0, n_centroids, "centroid ids")
    files.expect("codes", "u", (n_tokens, None))
    if codec.get("normalize"):  # one byte per token: the decoded vector's norm (layout 3)
        files.expect("norms", "u", (n_tokens,))
    files.expect("rnorm", "f", (n,))
    files.expect("post", "u", (n,))
    pairs = files.expect("bags", "iu", (None,))[0]
    files.in_range("bags", 0, n_centroids, "centroid ids")
    files.offsets("bag_off", n, pairs)
    files.expect("ivf", "iu", (pairs,))
    files.in_range("ivf", 0, n, "document rows")
    files.offsets("ivf_off", n_centroids, pairs)
    if "vectors" in entry["files"]:
        files.expect("vectors", "f", (n_tokens, dim))


def check_codec(folder: Path, manifest: dict[str, Any]) -> None:
    """The trained codec of a multi-vector index: centroids (n_centroids x dim) and its tables."""
    codec = manifest.get("codec")
    if codec is None:
        return
    files = _Files(folder, codec["files"])
    files.expect("centroids", "f", (codec["n_centroids"], manifest["dim"]))
    scheme = codec.get("scheme", "scalar")
    for key in CODEC_TABLES.get(scheme, ()) + (("norm_range",) if codec.get("normalize") else ()):
        files.path(key)  # every table the scheme decodes with is named
    for key in codec["files"]:
        if key != "centroids":
            files.shape(key, "fiu", len(npy_header(files.path(key))[0]))


#: per codec scheme, the tables it is decoded with (see mm.index.codec)
CODEC_TABLES = {"scalar": ("rotation", "bits", "cutoffs", "weights"), "pq": ("rotation", "codebook", "group_sizes")}

#: per index kind, the check of one segment
SEGMENT_CHECKS: dict[str, Callable[[Path, dict[str, Any], dict[str, Any], Budget], None]] = {
    "dense": check_dense_segment,
    "multivector": check_multivector_segment,
}


def validate_index(path: str | Path, *, retries: int = 20, deep_bytes: int | None = OPEN_CHECK_BYTES) -> dict[str, Any]:
    """Validate the index folder at ``path`` and return its manifest.

    Per-entry files are checked entry by entry up to ``deep_bytes`` (:data:`OPEN_CHECK_BYTES`; ``None``: all).
    Raises :class:`mm.errors.IndexFormatError` when ``path`` is not an mm index (or of another
    format version) and :class:`mm.errors.IndexDamagedError` naming the bad file otherwise.
    A file removed by a concurrent writer (compaction) makes it re-read the new manifest.
    """
    import time

    path = Path(path)
    for _ in range(retries):
        manifest = read_manifest_safely(path)
        where = str(path / "manifest.json")
        check_manifest(manifest, where)
        budget = Budget(deep_bytes)
        try:
            if manifest["kind"] == "multivector":
                check_codec(path, manifest)
            for entry in manifest["segments"]:
                SEGMENT_CHECKS[manifest["kind"]](path, entry, manifest, budget)
        except (FileNotFoundError, IndexDamagedError) as exc:
            from mm.index.storage import manifest_stamp

            if isinstance(exc, IndexDamagedError):  # a file read after a writer's commit removed it: retry
                if not isinstance(exc.__cause__, FileNotFoundError):
                    raise
                exc = exc.__cause__

            stamp = manifest_stamp(path)
            time.sleep(0.05)
            if stamp == manifest_stamp(path) and read_manifest_safely(path) == manifest:
                raise _damaged(Path(exc.args[0]) if exc.args else path,
                               "is named by the manifest but missing") from exc
            continue
        return manifest
    raise _damaged(path, "keeps changing while it is opened (a writer commits continuously); retry")
