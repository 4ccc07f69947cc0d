"""mm.index: persistent multi-vector (PLAID-style) and dense indexes on faiss.

>>> import tempfile, numpy as np
>>> from mm.index import create_index, open_index
>>> path = tempfile.mkdtemp() + "/idx"
>>> index = create_index(path, kind="dense", dim=4, encoder_info={"model": "demo"})
>>> index.add(["a", "b"], np.eye(4, dtype=np.float32)[:2], texts=["alpha", "beta"], metadata=[{"n": 1}, {"n": 2}])
2
>>> [h.id for h in open_index(path).search(np.array([0, 1, 0, 0], np.float32), k=1)]
['b']
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from mm.index.base import Hit, Index, StoredDocument
from mm.index.codec import SCHEMES
from mm.index.dense import DenseIndex
from mm.index.jobs import IndexOptions, JobReport, build_job, sync
from mm.index.multivector import (
    DEFAULT_MAX_SEGMENT_TOKENS,
    DEFAULT_TRAIN_TOKENS,
    MultiVectorIndex,
    shared_codec,
)
from mm.index.storage import LOCK, MANIFEST, OWNED_FILES, write_errors, write_manifest, writer_lock
from mm.index.upgrade import upgrade_index
from mm.index.validate import validate_index

from mm.corpus import Document
from mm.errors import IndexFormatError, InvalidInputError

__all__ = ["DenseIndex", "Document", "Hit", "Index", "IndexOptions", "JobReport", "MultiVectorIndex", "StoredDocument",
           "build_job", "create_index", "open_index", "sync", "upgrade_index"]

log = logging.getLogger(__name__)
KINDS: dict[str, type[Index]] = {"multivector": MultiVectorIndex, "dense": DenseIndex}


def create_index(path: str | os.PathLike, *, kind: str = "multivector", dim: int, encoder_info: dict[str, Any],
                 nbits: float | None = None, codec: str | None = None, keep_originals: bool = False,
                 train_tokens: int | None = None, centroids_factor: float | None = None, seed: int = 0,
                 codec_from: str | os.PathLike | Index | None = None, max_segment_tokens: int | None = None,
                 lock_timeout: float = 10.0) -> Index:
    """Create an empty index at ``path`` (a new or empty folder) and open it.

    ``kind``: ``"multivector"`` (token vectors, MaxSim) or ``"dense"`` (one vector per document).
    Multi-vector only: ``nbits`` average residual bits per dimension (1 to 4, fractions allowed:
    ``dim * nbits / 8`` code bytes per token, rounded down); ``codec``: ``"scalar"`` (per-dimension
    buckets on principal axes, 4/2/1/0 bits each, default) or ``"pq"`` (product-quantised residuals:
    one k-means codebook per code byte over a group of 3-6 rotated axes, any ``nbits``; higher recall
    per byte, slower to train); see :mod:`mm.index.codec`; ``keep_originals`` also
    stores float16 vectors (exact mode and retraining use them; ~8x the bytes at 2 bits);
    ``train_tokens``: vectors stay uncompressed until this many tokens are added, then
    centroids are trained on all of them; ``centroids_factor``: #centroids ~ factor * sqrt(#tokens).
    Defaults: ``nbits=2``, ``codec="scalar"``, ``train_tokens=262144``, ``centroids_factor=4``.
    ``codec_from``: a trained multi-vector index (folder or open index) whose codec the new index
    shares: it is trained from the start (every add is encoded with that codec), so shards created
    this way score documents exactly as one index holding them all (:mod:`mm.index.shards`); its
    ``nbits``, ``codec``, ``train_tokens`` and ``centroids_factor`` apply, so they cannot be given too.
    ``max_segment_tokens``: no write makes a compressed segment of more tokens (default 16M: writing
    one holds about 60 bytes per token in memory); larger writes are split, merges stop there.
    """
    if kind not in KINDS:
        raise InvalidInputError(f"kind must be 'multivector' or 'dense', got {kind!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise InvalidInputError(f"dim must be a positive integer, got {dim!r}")
    if not isinstance(encoder_info, dict):
        raise InvalidInputError("encoder_info must be a dict describing the encoder")
    config, shared = ({}, None) if kind != "multivector" else _multivector_config(
        dim, nbits=nbits, codec=codec, keep_originals=keep_originals, train_tokens=train_tokens,
        centroids_factor=centroids_factor, seed=seed, codec_from=codec_from, max_segment_tokens=max_segment_tokens)
    multivector_only = {"nbits": nbits, "codec": codec, "train_tokens": train_tokens,
                        "centroids_factor": centroids_factor, "codec_from": codec_from,
                        "keep_originals": keep_originals or None, "max_segment_tokens": max_segment_tokens}
    given = [name for name, value in multivector_only.items() if value is not None]
    if kind != "multivector" and given:
        raise InvalidInputError(f"{', '.join(given)} only apply to multi-vector indexes (kind={kind!r})")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InvalidInputError(f"{path} exists and is not a folder")
    with write_errors(path):
        path.mkdir(parents=True, exist_ok=True)
    with writer_lock(path, lock_timeout), write_errors(path):
        if (path / MANIFEST).exists():
            raise InvalidInputError(f"{path} already holds an index; open it with open_index() or choose a new folder")
        foreign = [e.name for e in os.scandir(path) if e.name != LOCK and not OWNED_FILES.match(e.name)]
        if foreign:
            raise InvalidInputError(f"{path} is not empty ({foreign[0]!r} ...); create an index in a new folder")
        codec_entry = None if shared is None else copy_codec(shared, path)
        write_manifest(path, {"kind": kind, "dim": dim, "encoder_info": dict(encoder_info), "config": config,
                              "codec": codec_entry, "segments": [], "generation": 0, "created": time.time()})
    log.info("created %s index at %s (dim %d)", kind, path, dim)
    return KINDS[kind](path, lock_timeout=lock_timeout)


def _multivector_config(dim: int, *, nbits: float | None, codec: str | None, keep_originals: bool,
                        train_tokens: int | None, centroids_factor: float | None, seed: int,
                        codec_from: Any, max_segment_tokens: int | None) -> tuple[dict[str, Any], Any]:
    """The checked ``config`` of a new multi-vector index, and :func:`shared_codec` of ``codec_from`` (or None)."""
    shared = None
    if codec_from is not None:
        given = [n for n, v in (("nbits", nbits), ("codec", codec), ("train_tokens", train_tokens),
                                ("centroids_factor", centroids_factor)) if v is not None]
        if given:
            raise InvalidInputError(f"{', '.join(given)} come(s) from the shared codec of codec_from; drop "
                                    f"{', '.join(given)} or codec_from")
        shared = shared_codec(codec_from, dim)
        nbits, codec, train_tokens, centroids_factor = (shared[0][k] for k in
                                                        ("nbits", "codec", "train_tokens", "centroids_factor"))
    nbits = 2 if nbits is None else nbits
    codec = "scalar" if codec is None else codec
    train_tokens = DEFAULT_TRAIN_TOKENS if train_tokens is None else train_tokens
    centroids_factor = 4.0 if centroids_factor is None else centroids_factor
    if isinstance(nbits, bool) or not isinstance(nbits, (int, float)) or not 1 <= nbits <= 4:
        raise InvalidInputError(f"nbits must be a number from 1 to 4 (average residual bits per dimension), "
                                f"got {nbits!r}")
    if codec not in SCHEMES:
        raise InvalidInputError(f"codec must be one of {', '.join(SCHEMES)}, got {codec!r}")
    if isinstance(train_tokens, bool) or not isinstance(train_tokens, int) or train_tokens < 16:
        raise InvalidInputError(f"train_tokens must be an integer >= 16, got {train_tokens!r}")
    if isinstance(centroids_factor, bool) or not isinstance(centroids_factor, (int, float)) or not centroids_factor > 0:
        raise InvalidInputError(f"centroids_factor must be positive, got {centroids_factor!r}")
    cap = DEFAULT_MAX_SEGMENT_TOKENS if max_segment_tokens is None else max_segment_tokens
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise InvalidInputError(f"max_segment_tokens must be a positive integer, got {max_segment_tokens!r}")
    config = {"nbits": nbits, "codec": codec, "keep_originals": bool(keep_originals), "train_tokens": train_tokens,
              "centroids_factor": float(centroids_factor), "seed": int(seed), "max_segment_tokens": cap}
    if shared is not None:
        config["codec_from"] = shared[0]["codec_from"]
    return config, shared


def copy_codec(shared: tuple[dict, dict, list[Path]], folder: Path) -> dict[str, Any]:
    """Copy the codec files of :func:`~mm.index.multivector.shared_codec` into ``folder``; its manifest entry."""
    _, entry, files = shared
    for src in files:
        try:
            shutil.copyfile(src, folder / src.name)
        except FileNotFoundError as exc:
            raise InvalidInputError(f"codec_from {src.parent} changed while its codec was copied (retrained?); "
                                    "create the index again") from exc
    return entry


def open_index(path: str | os.PathLike, *, lock_timeout: float = 10.0) -> Index:
    """Open an existing index (:class:`IndexFormatError` if ``path`` is not one, or of another format version)."""
    path = Path(path)
    manifest = validate_index(path)  # manifest schema, file sizes vs shapes, id ranges (mm.index.validate)
    cls = KINDS.get(manifest.get("kind"))
    if cls is None:
        raise IndexFormatError(f"{path}: unknown index kind {manifest.get('kind')!r}")
    return cls(path, lock_timeout=lock_timeout)
