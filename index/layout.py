"""Contiguous layout of a compressed multi-vector segment (PLAID / fast-plaid style).

Per token, in document order (one contiguous block per document):
``cids`` (centroid id), ``codes`` (residual code bytes) and, for unit-norm codecs,
``norms`` (one byte: the decoded vector's norm). Per document:
``doclens`` and its *bag* of distinct centroid ids (``bags`` + ``bag_off``), which the
centroid-interaction stages score without decompressing anything. Per centroid: the
documents holding it (``ivf`` + ``ivf_off``), the inverted lists that generate
candidates (one entry per document and centroid, not per token; uint16 rows when the
segment holds fewer than 65,536 documents, else int32).

>>> lay = bags_and_lists(np.array([2, 3]), np.array([1, 1, 0, 2, 1]), n_centroids=3)
>>> lay["bags"].tolist(), lay["bag_off"].tolist()
([1, 0, 1, 2], [0, 1, 4])
>>> lay["ivf"].tolist(), lay["ivf_off"].tolist()
([1, 0, 1, 1], [0, 1, 3, 4])
"""

from __future__ import annotations

import numpy as np
from mm.index.maxsim import ranges_index

#: the arrays of a compressed segment that hold search data, per token / document / centroid
TOKEN_ARRAYS = ("cids", "codes", "norms")
DOC_ARRAYS = ("doclens", "rnorm", "post")


def offsets(lengths: np.ndarray) -> np.ndarray:
    """Start offsets (n + 1) of consecutive blocks of ``lengths``.

    >>> offsets(np.array([2, 0, 3])).tolist()
    [0, 2, 2, 5]
    """
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def bags_and_lists(doclens: np.ndarray, cids: np.ndarray, n_centroids: int) -> dict[str, np.ndarray]:
    """Per-document bags of distinct centroid ids and per-centroid inverted lists of documents."""
    doc_of_token = np.repeat(np.arange(len(doclens), dtype=np.int64), doclens)
    pairs = np.unique(doc_of_token * n_centroids + np.asarray(cids, dtype=np.int64))
    docs, cents = pairs // n_centroids, pairs % n_centroids
    bag_off = offsets(np.bincount(docs, minlength=len(doclens)))
    return {"bags": cents.astype(cids.dtype), "bag_off": bag_off, **inverted_lists(bags_docs(bag_off), cents,
                                                                                   n_centroids)}


def bags_docs(bag_off: np.ndarray) -> np.ndarray:
    """Document (row) of every bag entry."""
    return np.repeat(np.arange(len(bag_off) - 1, dtype=np.int32), np.diff(bag_off))


def inverted_lists(docs: np.ndarray, cents: np.ndarray, n_centroids: int) -> dict[str, np.ndarray]:
    """Documents per centroid (``ivf``, ascending within a list) and list offsets (``ivf_off``)."""
    order = np.argsort(cents, kind="stable")
    rows = np.uint16 if len(docs) == 0 or int(np.max(docs)) < 65536 else np.int32
    return {"ivf": np.asarray(docs, dtype=rows)[order],
            "ivf_off": offsets(np.bincount(np.asarray(cents, dtype=np.int64), minlength=n_centroids))}


def gather_rows(parts: list[tuple[dict[str, np.ndarray], np.ndarray]], n_centroids: int,
                extra_token: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Merge rows of compressed segments: ``parts`` = [(arrays, rows to keep)]; bags are copied, lists rebuilt.

    Token arrays are gathered by ranges (memory: the merged arrays only).
    """
    out: dict[str, list[np.ndarray]] = {}
    for arrays, rows in parts:
        rows = np.asarray(rows, dtype=np.int64)
        tok_off = offsets(np.asarray(arrays["doclens"]))
        tok_idx, _ = ranges_index(tok_off[rows], tok_off[rows + 1])
        bag_off = np.asarray(arrays["bag_off"])
        bag_idx, _ = ranges_index(bag_off[rows], bag_off[rows + 1])
        for key in (*(k for k in TOKEN_ARRAYS if k in arrays), *extra_token):
            out.setdefault(key, []).append(np.asarray(arrays[key][tok_idx]))
        for key in DOC_ARRAYS:
            out.setdefault(key, []).append(np.asarray(arrays[key])[rows])
        out.setdefault("bags", []).append(np.asarray(arrays["bags"][bag_idx]))
        out.setdefault("_bag_len", []).append(bag_off[rows + 1] - bag_off[rows])
    merged = {key: np.concatenate(value) for key, value in out.items()}
    merged["bag_off"] = offsets(merged.pop("_bag_len"))
    merged.update(inverted_lists(bags_docs(merged["bag_off"]), merged["bags"], n_centroids))
    return merged
