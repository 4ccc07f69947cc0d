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
import time
from pathlib import Path
from typing import Any

from mm.index.base import Hit, Index, StoredDocument
from mm.index.codec import SCHEMES
from mm.index.dense import DenseIndex
from mm.index.jobs import IndexOptions, JobReport, build_job, sync
from mm.index.multivector import DEFAULT_TRAIN_TOKENS, MultiVectorIndex
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
                 nbits: float = 2, codec: str = "scalar", keep_originals: bool = False,
                 train_tokens: int = DEFAULT_TRAIN_TOKENS,
                 centroids_factor: float = 4.0, seed: int = 0, lock_timeout: float = 10.0) -> Index:
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
    """
    if kind not in KINDS:
        raise InvalidInputError(f"kind must be 'multivector' or 'dense', got {kind!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise InvalidInputError(f"dim must be a positive integer, got {dim!r}")
    if not isinstance(encoder_info, dict):
        raise InvalidInputError("encoder_info must be a dict describing the encoder")
    if isinstance(nbits, bool) or not isinstance(nbits, (int, float)) or not 1 <= nbits <= 4:
        raise InvalidInputError(f"nbits must be a number from 1 to 4 (average residual bits per dimension), "
                                f"got {nbits!r}")
    if codec not in SCHEMES:
        raise InvalidInputError(f"codec must be one of {', '.join(SCHEMES)}, got {codec!r}")
    if not isinstance(train_tokens, int) or train_tokens < 16:
        raise InvalidInputError(f"train_tokens must be an integer >= 16, got {train_tokens!r}")
    if not centroids_factor > 0:
        raise InvalidInputError(f"centroids_factor must be positive, got {centroids_factor!r}")
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
        config: dict[str, Any] = {}
        if kind == "multivector":
            config = {"nbits": nbits, "codec": codec, "keep_originals": bool(keep_originals),
                      "train_tokens": train_tokens,
                      "centroids_factor": float(centroids_factor), "seed": int(seed)}
        write_manifest(path, {"kind": kind, "dim": dim, "encoder_info": dict(encoder_info), "config": config,
                              "codec": None, "segments": [], "generation": 0, "created": time.time()})
    log.info("created %s index at %s (dim %d)", kind, path, dim)
    return KINDS[kind](path, lock_timeout=lock_timeout)


def open_index(path: str | os.PathLike, *, lock_timeout: float = 10.0) -> Index:
    """Open an existing index (:class:`IndexFormatError` if ``path`` is not one, or of another format version)."""
    path = Path(path)
    manifest = validate_index(path)  # manifest schema, file sizes vs shapes, id ranges (mm.index.validate)
    cls = KINDS.get(manifest.get("kind"))
    if cls is None:
        raise IndexFormatError(f"{path}: unknown index kind {manifest.get('kind')!r}")
    return cls(path, lock_timeout=lock_timeout)
