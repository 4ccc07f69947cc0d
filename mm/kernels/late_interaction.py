"""The multi-vector index's search stages in native calls (``late_interaction.cpp``; see :mod:`mm.index.plaid`).

* :func:`top_centroids`: each query token's ``nprobe`` best centroids, in one pass over the centroid scores;
* :func:`probe_candidates`: the documents in the inverted lists of those centroids with their probe scores
  (what :func:`mm.index.plaid.candidates` and :func:`mm.index.plaid.probe_scores` compute), in one pass
  over the lists' entries;
* :func:`adc_maxsim`: the scores of :func:`mm.index.plaid.token_scores` followed by a per-document max and
  a sum over query tokens, without the (tokens x q) score matrix, the int32 gather indices or gathered
  copies of the codes: each document's token rows are read where they lie (memory-mapped) and its
  running maxima stay in registers. With no code bytes it is the centroid interaction.

Each returns None where the kernels cannot be built (no C++ compiler); callers then take the numpy and
torch paths, which give the same results.

>>> rng = np.random.default_rng(0)
>>> st, table = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(2 * 256, 3)).astype(np.float32)
>>> cids, codes = np.array([0, 3, 1], np.uint16), rng.integers(0, 256, (3, 2)).astype(np.uint8)
>>> scores = adc_maxsim(st, np.zeros(3, np.float32), table, cids, codes, None, None,
...                     np.array([0, 2]), np.array([2, 3]), threads=1)
>>> tokens = st[cids] + table[codes[:, 0]] + table[256 + codes[:, 1].astype(int)]
>>> ref = [tokens[0:2].max(axis=0).sum(), tokens[2:3].max(axis=0).sum()]
>>> scores is None or bool(np.allclose(scores, ref, rtol=1e-5))
True
"""

from __future__ import annotations

import ctypes

import numpy as np

from mm.kernels.build import library

__all__ = ["adc_maxsim", "available", "probe_candidates", "top_centroids"]


def available() -> bool:
    """True when the kernel is built (or can be) and loaded here."""
    return library("late_interaction") is not None


def _ptr(a: np.ndarray | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(None if a is None else a.ctypes.data)


def padded(a: np.ndarray, width: int) -> np.ndarray:
    """``a`` (C-contiguous, same dtype) with zero columns appended up to ``width`` (the kernel reads 8 at a time).

    >>> padded(np.ones((2, 3), np.float16), 8).tolist()[0]
    [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    """
    if a.shape[-1] == width:
        return np.ascontiguousarray(a)
    out = np.zeros((*a.shape[:-1], width), dtype=a.dtype)
    out[..., : a.shape[-1]] = a
    return out


def top_centroids(st: np.ndarray, nprobe: int) -> np.ndarray | None:
    """The ``nprobe`` best centroid ids (rows of ``st``) of each query token (column), best first: ``(nprobe, q)``
    int64; ties go to the lower id. One pass over ``st`` as it lies (no transposed copy). None when the kernel
    is unavailable.

    >>> ranked = top_centroids(np.array([[0.1, 0.9], [0.5, 0.2], [0.7, 0.4]], np.float32), 2)
    >>> ranked is None or ranked.tolist() == [[2, 0], [1, 2]]
    True
    """
    lib = library("late_interaction")
    if lib is None:
        return None
    st = np.ascontiguousarray(st, dtype=np.float32)
    n_centroids, q = st.shape
    nprobe = min(int(nprobe), n_centroids)
    out = np.empty((nprobe, q), dtype=np.int64)
    if nprobe > 0 and q > 0:
        lib.mm_top_centroids(_ptr(st), ctypes.c_int64(n_centroids), ctypes.c_int32(q), ctypes.c_int32(nprobe), _ptr(out))
    return out


def probe_candidates(ivf: np.ndarray, ivf_off: np.ndarray, ranked: np.ndarray, st: np.ndarray, threshold: float,
                     allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Allowed documents (ascending rows) in the inverted lists of the probed centroids, and their probe scores.

    ``ranked``: :func:`mm.index.plaid.probe_ranked` of the centroid scores ``st``; ``allowed``: bool per
    document. A document's probe score is the sum over query tokens of the best probed centroid score
    (at least ``threshold``) whose list holds it. Returns None when the kernel is unavailable.

    >>> st = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.3]], np.float32)
    >>> ivf, ivf_off = np.array([0, 1, 0, 1], np.uint16), np.array([0, 1, 2, 4])  # c0: d0; c1: d1; c2: d0, d1
    >>> ranked = np.array([[0, 1], [2, 2]])  # each token's two best centroids
    >>> found = probe_candidates(ivf, ivf_off, ranked, st, 0.0, np.ones(2, bool))
    >>> found is None or ([int(r) for r in found[0]], [round(float(v), 2) for v in found[1]]) == ([0, 1], [1.2, 1.3])
    True
    """
    lib = library("late_interaction")
    if lib is None:
        return None
    ivf = np.asarray(ivf)
    if ivf.dtype not in (np.uint16, np.int32) or not ivf.flags.c_contiguous:
        raise ValueError(f"ivf must be C-contiguous uint16 or int32, got {ivf.dtype}")
    ivf_off = np.ascontiguousarray(ivf_off, dtype=np.int64)
    allowed = np.ascontiguousarray(allowed, dtype=bool).view(np.uint8)
    ranked = np.ascontiguousarray(ranked, dtype=np.int64)
    nprobe, q = ranked.shape
    if ranked.size and (ranked.min() < 0 or ranked.max() >= len(ivf_off) - 1 or len(st) != len(ivf_off) - 1):
        raise ValueError(f"probed centroids out of range for {len(ivf_off) - 1} inverted lists")
    if len(ivf_off) and ivf_off[-1] > len(ivf):
        raise ValueError(f"inverted list offsets end at {ivf_off[-1]}, past {len(ivf)} entries")
    scores = np.ascontiguousarray(np.take_along_axis(np.asarray(st, dtype=np.float32), ranked, axis=0))
    n_docs = len(allowed)
    credited = np.zeros(n_docs, dtype=np.int32)
    total = np.zeros(n_docs, dtype=np.float32)
    touched = np.zeros(n_docs, dtype=np.uint8)
    rows = np.empty(n_docs, dtype=np.int64)
    out = np.empty(n_docs, dtype=np.float32)
    n = lib.mm_probe_candidates(_ptr(ivf), ctypes.c_int32(ivf.dtype.itemsize), _ptr(ivf_off), ctypes.c_int64(n_docs),
                                _ptr(allowed), _ptr(ranked), _ptr(scores), ctypes.c_int32(nprobe), ctypes.c_int32(q),
                                ctypes.c_float(threshold), _ptr(credited), _ptr(total), _ptr(touched), _ptr(rows),
                                _ptr(out))
    return rows[:n].copy(), out[:n].copy()


def adc_maxsim(st: np.ndarray, bias: np.ndarray, table: np.ndarray, cids: np.ndarray, codes: np.ndarray,
               norms: np.ndarray | None, inv_norm: np.ndarray | None, starts: np.ndarray, ends: np.ndarray,
               threads: int = 1, unscale: float = 1.0) -> np.ndarray | None:
    """Scores (float32, one per document) of documents made of token rows ``[starts[d], ends[d])``.

    ``st`` (n_centroids x q) and ``bias`` (q): the query's centroid scores and constant; ``table``
    (n_bytes * 256 x q, float32 or float16): its code tables (:meth:`mm.index.codec.ResidualCodec.query_tables`;
    sums of float16 rows are multiplied by ``unscale``, see :func:`mm.index.plaid.lookup_tables`); ``cids``
    (uint16 or int32) and ``codes`` (uint8, tokens x n_bytes): the segment's arrays, whole; ``norms``
    (uint8 per token) with ``inv_norm`` (256 floats: 1 / norm per norm code), or both None. An empty
    document scores 0. Returns None when the kernel is unavailable.
    """
    lib = library("late_interaction")
    if lib is None:
        return None
    st = np.ascontiguousarray(st, dtype=np.float32)
    q = st.shape[1]
    bias = np.ascontiguousarray(bias, dtype=np.float32)
    table = np.asarray(table)
    if table.dtype not in (np.float32, np.float16):
        raise ValueError(f"table must be float32 or float16, got {table.dtype}")
    codes = np.asarray(codes)
    n_bytes = codes.shape[1]
    if codes.dtype != np.uint8 or not codes.flags.c_contiguous:
        raise ValueError(f"codes must be C-contiguous uint8, got {codes.dtype}")
    if cids.dtype not in (np.uint16, np.int32) or not cids.flags.c_contiguous or len(cids) != len(codes):
        raise ValueError(f"cids must be C-contiguous uint16 or int32, one per code row, got {cids.dtype} {cids.shape}")
    if bias.shape != (q,) or table.shape != (n_bytes * 256, q):
        raise ValueError(f"tables do not fit: st {st.shape}, bias {bias.shape}, table {table.shape}, "
                         f"{n_bytes} code bytes")
    if (norms is None) != (inv_norm is None):
        raise ValueError("norms and inv_norm go together")
    if norms is not None:
        norms = np.asarray(norms)
        inv_norm = np.ascontiguousarray(inv_norm, dtype=np.float32)
        if norms.dtype != np.uint8 or len(norms) != len(codes) or inv_norm.shape != (256,):
            raise ValueError("norms must be uint8, one per code row, with a 256-entry inv_norm")
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    ends = np.ascontiguousarray(ends, dtype=np.int64)
    if len(starts) and (starts.min() < 0 or ends.max() > len(codes) or np.any(ends < starts)):
        raise ValueError(f"document rows out of range for {len(codes)} tokens")
    out = np.empty(len(starts), dtype=np.float32)
    if q == 0:
        out[:] = 0.0
        return out
    ld = -(-q // 8) * 8
    st, bias, table = padded(st, ld), padded(bias, ld), padded(table, ld)
    lib.mm_adc_maxsim(_ptr(st), _ptr(bias), _ptr(table), ctypes.c_int32(table.dtype.itemsize),
                      ctypes.c_float(unscale), ctypes.c_int64(ld), ctypes.c_int32(q),
                      ctypes.c_int32(n_bytes), _ptr(cids),
                      ctypes.c_int32(cids.dtype.itemsize), _ptr(codes), _ptr(norms), _ptr(inv_norm), _ptr(starts),
                      _ptr(ends), ctypes.c_int64(len(starts)), _ptr(out), ctypes.c_int32(max(1, int(threads))))
    return out
