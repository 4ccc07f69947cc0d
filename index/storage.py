"""On-disk layout of an mm index: atomic files, the manifest (the commit point) and the writer lock.

An index folder holds

* ``manifest.json`` - the only mutable file. It names every segment and codec
  file that belongs to the committed state, plus a format name and version.
* immutable data files (``seg-<uid>.*.npy``, ``codec-<uid>.*.npy``, ...), each
  written once under a fresh unique name and never modified afterwards.
* ``index.lock`` - the writers' file lock (``filelock``).

A write creates its new data files, fsyncs them, writes ``manifest.json.tmp-*``,
fsyncs it and renames it over ``manifest.json`` (``os.replace`` is atomic on
POSIX), then fsyncs the folder. Readers only follow the manifest, so files of a
write that was killed before the rename are invisible; the next writer deletes
them (:func:`collect_garbage`).

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> write_manifest(d, {"kind": "dense", "segments": []})
>>> read_manifest(d)["format_version"] == FORMAT_VERSION
True
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mm.errors import IndexFormatError, IndexLockedError, IndexReadOnlyError, IndexWriteError, MMError

log = logging.getLogger(__name__)

FORMAT_NAME = "mm-index"
#: 3: each document's text deflated on its own (2: texts stored as plain UTF-8; 1: ids and metadata in a
#: ``.docs.json`` parsed at open, since 2 in a memory-mapped ``.entries.npy`` per segment)
FORMAT_VERSION = 3
#: older versions :func:`mm.index.upgrade.upgrade_index` converts in place (no re-encoding)
UPGRADABLE = (1, 2)
MANIFEST = "manifest.json"
LOCK = "index.lock"
#: names of files an index writes (data files, temporaries); garbage collection only ever touches these
OWNED_FILES = re.compile(r"^(seg-|codec-|bm25-)[0-9a-f]+.*|^manifest\.json\.tmp-.*|.*\.tmp-[0-9a-f]+$")


def new_uid() -> str:
    """A fresh unique name component (hex)."""
    return uuid.uuid4().hex[:16]


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (renames, new files) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_array(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` at ``path`` (a fresh name) and fsync it."""
    with open(path, "wb") as fh:
        # through a plain ``write`` (not numpy's tofile, whose C stdio buffer can lose a failed write of a small
        # array silently, e.g. past a file-size limit): every short write raises OSError
        np.save(_Writer(fh), np.ascontiguousarray(array), allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


def save_pieces(path: Path, dtype: Any, shape: tuple[int, ...], pieces: Any) -> None:
    """Write an ``.npy`` of ``shape`` from consecutive ``pieces`` (arrays, in C order) at ``path``, fsynced.

    Memory: one piece at a time. The pieces must hold exactly ``prod(shape)`` items.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "a.npy"
    >>> save_pieces(p, np.int32, (2, 3), [np.arange(4), np.arange(4, 6)])
    >>> np.load(p).tolist()
    [[0, 1, 2], [3, 4, 5]]
    """
    dtype = np.dtype(dtype)
    want = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    written = 0
    with open(path, "wb") as fh:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
        np.lib.format.write_array_header_2_0(fh, header) if want >= 2**32 else \
            np.lib.format.write_array_header_1_0(fh, header)
        for piece in pieces:
            data = np.ascontiguousarray(piece, dtype=dtype)
            fh.write(memoryview(data).cast("B"))
            written += data.nbytes
        if written != want:
            raise ValueError(f"{path}: pieces hold {written} bytes, the shape {shape} needs {want}")
        fh.flush()
        os.fsync(fh.fileno())


class _Writer:
    """A file seen only through ``write`` (numpy then writes in 16 MiB pieces of bytes)."""

    def __init__(self, fh: Any) -> None:
        self.write = fh.write


def save_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as UTF-8 JSON at ``path`` (a fresh name) and fsync it."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, ensure_ascii=False, separators=(",", ":"))
        fh.flush()
        os.fsync(fh.fileno())


def load_array(path: Path, mmap: bool = True) -> np.ndarray:
    """Open an ``.npy`` file memory-mapped (read-only)."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as exc:  # a damaged header raises ValueError, SyntaxError or tokenize's TokenError
        raise IndexFormatError(f"index file {path} is damaged ({exc}); restore the index or rebuild it") from exc


def load_json(path: Path) -> Any:
    """Read a JSON data file of the index."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (ValueError, OSError) as exc:
        raise IndexFormatError(f"index file {path} is damaged ({exc}); restore the index or rebuild it") from exc


def read_manifest(path: Path) -> dict[str, Any]:
    """Read and validate ``manifest.json``; :class:`IndexFormatError` when it is not an mm index."""
    path = Path(path)
    if not path.is_dir():
        raise IndexFormatError(f"{path} is not an mm index: no such folder. Create one with create_index().")
    file = path / MANIFEST
    if not file.is_file():
        raise IndexFormatError(
            f"{path} is not an mm index: it has no {MANIFEST}. Create one with create_index() or `mm index build`."
        )
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, OSError, RecursionError) as exc:
        raise IndexFormatError(f"{file} is not a valid index manifest ({exc}).") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise IndexFormatError(f"{path} is not an mm index: {MANIFEST} does not declare format {FORMAT_NAME!r}.")
    version = manifest.get("format_version")
    if version in UPGRADABLE:
        raise IndexFormatError(
            f"{path} is an mm index of format version {version}, which kept ids and metadata in JSON parsed at every "
            f"open; this mm reads version {FORMAT_VERSION}. Upgrade it in place (no re-encoding, a few seconds per "
            f"million entries): `mm index upgrade {path}` (or mm.index.upgrade_index), or rebuild it."
        )
    if version != FORMAT_VERSION:
        raise IndexFormatError(
            f"{path} is an mm index of format version {version!r}, but this mm reads version {FORMAT_VERSION}; "
            "rebuild the index with this version of mm (`mm index build`)."
        )
    return manifest


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Atomically replace ``manifest.json`` (the commit point)."""
    manifest = {**manifest, "format": FORMAT_NAME, "format_version": FORMAT_VERSION}
    tmp = path / f"{MANIFEST}.tmp-{new_uid()}"
    save_json(tmp, manifest)
    os.replace(tmp, path / MANIFEST)
    fsync_dir(path)


def manifest_stamp(path: Path) -> tuple[int, int, int] | None:
    """A cheap fingerprint of the committed manifest (inode, size, mtime), ``None`` if absent."""
    try:
        st = os.stat(path / MANIFEST)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def referenced_files(manifest: dict[str, Any]) -> set[str]:
    """Every data file name the manifest refers to."""
    names: set[str] = set()

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            for key, value in obj.items():
                if key == "files" and isinstance(value, dict):
                    names.update(v for v in value.values() if isinstance(v, str))
                else:
                    walk(value)
        elif isinstance(obj, list):
            for value in obj:
                walk(value)

    walk(manifest)
    return names


def collect_garbage(path: Path, manifest: dict[str, Any]) -> int:
    """Delete files of killed or superseded writes (only names the index itself writes). Call under the lock."""
    keep = referenced_files(manifest)
    removed = 0
    for entry in os.scandir(path):
        if entry.is_file() and entry.name not in keep and OWNED_FILES.match(entry.name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
    if removed:
        log.debug("removed %d unreferenced file(s) from %s", removed, path)
    return removed


#: errno values that mean "no space": a full disk, a quota, a file-size limit (RLIMIT_FSIZE)
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
#: errno values that mean "not allowed to write here"
READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


@contextlib.contextmanager
def write_errors(path: Path) -> Iterator[None]:
    """Turn an operating-system error raised while writing the index at ``path`` into an mm error naming it.

    A full disk (or quota, or file-size limit) and any other I/O error become :class:`IndexWriteError`;
    a permission or read-only file system :class:`IndexReadOnlyError`. Writes are atomic (only the
    manifest's rename commits), so the message can promise that the last committed state is intact.

    >>> try:
    ...     with write_errors(Path("/tmp/ix")):
    ...         raise OSError(errno.ENOSPC, "No space left on device")
    ... except IndexWriteError as exc:
    ...     print(str(exc)[:81])
    could not write the index at /tmp/ix: the disk is full (No space left on device).
    """
    try:
        yield
    except MMError:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno in READ_ONLY:
            raise IndexReadOnlyError(
                f"the index at {path} cannot be written ({reason}): the folder is read-only for this process. "
                f"Searching it still works; to change it, fix its permissions or copy it somewhere writable."
            ) from exc
        what = (f"the disk is full ({reason})" if exc.errno in NO_SPACE
                else f"{type(exc).__name__}: {reason}" + (f" ({exc.filename})" if exc.filename else ""))
        error = IndexWriteError(
            f"could not write the index at {path}: {what}. Nothing partial is visible: the folder still holds "
            f"its last committed state (open_index works); free some space (or fix the cause) and run the same "
            f"operation again to finish it.")
        error.errno = exc.errno
        raise error from exc


@contextlib.contextmanager
def writer_lock(path: Path, timeout: float) -> Iterator[None]:
    """Hold the index's writer lock; :class:`IndexLockedError` if another writer keeps it past ``timeout`` s."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(path / LOCK))
    try:
        lock.acquire(timeout=timeout)
    except Timeout as exc:
        raise IndexLockedError(
            f"another process is writing to the index at {path} (lock {path / LOCK} held for more than "
            f"{timeout:g} s); wait for it to finish or open the index with a larger lock_timeout."
        ) from exc
    except OSError as exc:
        if exc.errno not in READ_ONLY:
            with write_errors(path):
                raise
        raise IndexReadOnlyError(
            f"the index at {path} cannot be written ({exc.strerror}): the folder is read-only for this process. "
            f"Searching it still works; to change it, fix its permissions or copy it somewhere writable."
        ) from exc
    try:
        yield
    finally:
        lock.release()
