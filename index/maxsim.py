"""Late-interaction (MaxSim) scoring and ragged-array helpers.

``MaxSim(Q, D) = sum_i max_j <q_i, d_j>``: each query token takes its best
matching document token. Documents are stored as one token matrix plus offsets.

>>> q = np.eye(2, dtype=np.float32)
>>> tokens = np.array([[1, 0], [0, 1], [0.5, 0.5]], dtype=np.float32)
>>> maxsim_scores(q, tokens, np.array([0, 2]))
array([2., 1.], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def ranges_index(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the integer ranges ``[starts[i], ends[i])``; return (indices, start of each range in them).

    >>> ranges_index(np.array([5, 0]), np.array([7, 1]))
    (array([5, 6, 0]), array([0, 2]))
    """
    starts = np.asarray(starts, dtype=np.int64)
    lens = np.asarray(ends, dtype=np.int64) - starts
    out_starts = np.zeros(len(lens), dtype=np.int64)
    if len(lens) > 1:
        np.cumsum(lens[:-1], out=out_starts[1:])
    total = int(lens.sum())
    idx = np.arange(total, dtype=np.int64) + np.repeat(starts - out_starts, lens)
    return idx, out_starts


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` (float32) on torch's BLAS and threads instead of numpy's.

    For the small products of a query (rotation, centroid scores): numpy's OpenBLAS keeps its
    worker threads spinning after a call, and on a 2-core machine they took the core that the
    single-core search stages after them needed: a full-SciFact query (2 threads, AVX2) took p50
    87.6 ms with these products in numpy, 42.0 ms in torch (the lookup stage, which calls no BLAS,
    60.6 against 27.7 ms; ``benchmarks/search_index.py --codec pq --queries 100 --reuse DIR``).

    >>> matmul(np.eye(2, dtype=np.float32), np.array([[1.0, 2.0], [3.0, 4.0]])).tolist()
    [[1.0, 2.0], [3.0, 4.0]]
    """
    import torch

    a = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    b = torch.from_numpy(np.asarray(b, dtype=np.float32))
    return (a @ b).numpy()


def maxsim_scores(query: np.ndarray, tokens: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """MaxSim of ``query`` (q x dim) against consecutive documents in ``tokens`` beginning at ``starts``."""
    if len(starts) == 0:
        return np.zeros(0, dtype=np.float32)
    sims = query @ np.asarray(tokens, dtype=np.float32).T  # (q, T)
    return np.maximum.reduceat(sims, starts, axis=1).sum(axis=0).astype(np.float32)


def maxsim_ragged(offsets: np.ndarray, rows: np.ndarray, similarities: Callable[[np.ndarray | slice], np.ndarray],
                  max_tokens: int = 131072) -> np.ndarray:
    """MaxSim against documents ``rows`` given ``similarities(token_indices) -> (q, n) query-token scores``.

    ``offsets`` (n_docs + 1) locate each document's tokens; work is chunked to
    about ``max_tokens`` tokens at a time to bound memory.
    """
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty(len(rows), dtype=np.float32)
    lens = offsets[rows + 1] - offsets[rows]
    i = 0
    while i < len(rows):
        # take documents until the chunk holds max_tokens tokens (at least one document)
        cum = np.cumsum(lens[i:])
        j = i + max(1, int(np.searchsorted(cum, max_tokens, side="right")))
        chunk = rows[i:j]
        idx, starts = ranges_index(offsets[chunk], offsets[chunk + 1])
        contiguous = len(idx) > 0 and idx[-1] - idx[0] + 1 == len(idx)
        sims = similarities(slice(int(idx[0]), int(idx[-1]) + 1) if contiguous else idx)
        out[i:j] = np.maximum.reduceat(sims, starts, axis=1).sum(axis=0)
        i = j
    return out


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores, best first (ties: lower index first).

    >>> top_k(np.array([0.1, 0.9, 0.5, 0.9]), 3)
    array([1, 3, 2])
    """
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return part[np.lexsort((part, -scores[part]))]
