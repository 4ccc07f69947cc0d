"""MaxSim of compressed documents from a query's lookup tables, in one native call (``adc_maxsim.cpp``).

The same scores as :func:`mm.index.plaid.token_scores` followed by a per-document max and a sum over
query tokens, without the (tokens x q) score matrix, the int32 gather indices or the gathered copies
of the codes: each document's token rows are read where they lie (memory-mapped) and its running
maxima stay in registers. :func:`adc_maxsim` returns None where the kernel cannot be built (no C++
compiler), and callers fall back to the torch path.

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

__all__ = ["adc_maxsim", "available"]


def available() -> bool:
    """True when the kernel is built (or can be) and loaded here."""
    return library("adc_maxsim") is not None


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
    lib = library("adc_maxsim")
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
