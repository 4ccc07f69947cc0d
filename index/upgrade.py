"""Upgrade an index written by an older mm in place (no re-encoding).

Format version 1 kept each segment's ids and metadata in ``seg-<uid>.docs.json``, parsed whole
at every open (seconds per million entries). Version 2 keeps them in a memory-mapped
``seg-<uid>.entries.npy`` (:mod:`mm.index.entries`). Version 3 stores each document's text
deflated on its own (:func:`mm.index.segments.pack_text`; SciFact's texts took 6.26 bytes per
token before, 2.95 after). :func:`upgrade_index` writes the new files of every segment (entries
from the JSON, packed texts from the plain ones), then commits a new manifest: atomic like every
write (a kill before the commit leaves the old index, and running it again finishes the job);
vectors and tombstones are kept as they are.

    mm index upgrade -i my-index       # or: mm.index.upgrade_index("my-index")
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from mm.index.entries import save_entries
from mm.index.segments import pack_text
from mm.index.storage import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST,
    UPGRADABLE,
    collect_garbage,
    load_json,
    new_uid,
    save_array,
    save_pieces,
    write_errors,
    write_manifest,
    writer_lock,
)

from mm.errors import IndexDamagedError, IndexFormatError

log = logging.getLogger(__name__)


def upgrade_index(path: str | Path, *, lock_timeout: float = 60.0) -> dict[str, Any]:
    """Convert the index at ``path`` to the current format; returns ``{"from", "to", "segments"}``.

    An index already in the current format is left alone (``segments`` 0).
    """
    path = Path(path)
    with writer_lock(path, lock_timeout), write_errors(path):
        manifest = _raw_manifest(path)
        version = manifest.get("format_version")
        if version == FORMAT_VERSION:
            return {"from": version, "to": FORMAT_VERSION, "segments": 0}
        if version not in UPGRADABLE:
            raise IndexFormatError(f"{path} is an mm index of format version {version!r}, which this mm can neither "
                                   f"read nor upgrade (it reads {FORMAT_VERSION}); rebuild it with `mm index build`")
        converted = 0
        for entry in manifest.get("segments", []):
            files = entry["files"]
            if "docs" in files:  # version 1
                docs = load_json(path / files["docs"])
                name = f"{entry['name']}.entries-{new_uid()}.npy"
                save_entries(path / name, docs["ids"], docs["metadata"])
                del files["docs"], docs
                files["entries"] = name
            files["text"], files["text_off"] = _pack_texts(path, files["text"], files["text_off"], entry["name"])
            converted += 1
        write_manifest(path, manifest)  # stamps the current format version: the commit point
        collect_garbage(path, manifest)  # the old .docs.json and plain text files
    from mm.index.validate import validate_index

    validate_index(path)
    log.info("upgraded %s from format %s to %s (%d segments)", path, version, FORMAT_VERSION, converted)
    return {"from": version, "to": FORMAT_VERSION, "segments": converted}


def _pack_texts(path: Path, text: str, text_off: str, segment: str, piece: int = 4096) -> tuple[str, str]:
    """Write a segment's plain UTF-8 texts as packed texts (two passes, ``piece`` texts in memory at a time);
    the new (text, text_off) file names."""
    blob = np.load(path / text, mmap_mode="r")
    off = np.load(path / text_off)
    n = len(off) - 1

    def packed(a: int) -> list[bytes]:
        try:
            return [pack_text(bytes(blob[off[i]:off[i + 1]]).decode("utf-8")) for i in range(a, min(n, a + piece))]
        except UnicodeDecodeError as exc:
            raise IndexDamagedError(f"{path / text} holds invalid UTF-8 ({exc.reason}): the index is damaged; "
                                    f"restore it from a backup or rebuild it with `mm index build`") from exc

    sizes = np.zeros(n + 1, dtype=np.int64)
    for a in range(0, n, piece):
        sizes[a + 1:a + 1 + min(piece, n - a)] = [len(b) for b in packed(a)]
    uid = new_uid()
    names = f"{segment}.{uid}.text.npy", f"{segment}.{uid}.text_off.npy"  # the suffixes info() counts as texts
    save_pieces(path / names[0], np.uint8, (int(sizes.sum()),),
                (np.frombuffer(b"".join(packed(a)), dtype=np.uint8) for a in range(0, n, piece)))
    save_array(path / names[1], np.cumsum(sizes))
    return names


def _raw_manifest(path: Path) -> dict[str, Any]:
    """The manifest without the version check of :func:`mm.index.storage.read_manifest`."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{path} is not an mm index ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise IndexFormatError(f"{path} is not an mm index: {MANIFEST} does not declare format {FORMAT_NAME!r}")
    return manifest
