"""PLAID's staged search over compressed segments (Santhanam et al., 2022), vectorised in numpy.

For a query ``Q`` (rotated into the codec's space, ``q`` tokens) and the centroid
scores ``S = C Q^T`` (``n_centroids x q``):

1. **candidates** - documents in the inverted lists of the ``nprobe`` best centroids
   of every query token;
2. **probe scores** (when more than ``ncandidates`` documents were found) - each candidate
   scored as ``sum_i max_{c in probe(i) ∩ bag(d)} S[c, i]`` from the inverted lists alone:
   query token ``i`` counts only its own ``nprobe`` best centroids (those whose score
   reaches ``threshold``), and a token none of whose probed centroids is in the
   document counts 0. The cost is one write per inverted-list entry read in stage 1,
   not a pass over every candidate's bag (what PLAID's pruned centroid interaction
   costs: at 10M tokens stage 1 returns most of the corpus). The best ``ncandidates`` go on.
   Where mm's native kernels build, stages 1 and 2 are one pass over the probed lists
   (:func:`mm.kernels.late_interaction.probe_candidates`, timed as ``candidates``);
3. **centroid interaction** - the same without pruning; the best ``nrerank`` go on;
4. **exact MaxSim from lookup tables** (no decompression): a token's score for query
   token ``i`` is ``(S[cid, i] + bias[i] + sum_j T[256 j + code_j, i]) / norm``, where
   ``T`` (:meth:`mm.index.codec.ResidualCodec.query_tables`, built once per query:
   stage ``tables``) holds the query's inner products with every value of every code
   byte (float32, or float16 on request: :func:`lookup_tables`). mm's native kernel
   (:func:`mm.kernels.late_interaction.adc_maxsim`) reads each candidate's token rows where they lie and
   keeps only the running maxima per query token (stage ``lookup``); without a C++ compiler
   the sums are one ``embedding_bag`` (torch) over the candidates' tokens (stage ``lookup``)
   and the segment maxima and the sum over query tokens follow (stage ``maxsim``). Either
   equals MaxSim on the decoded, renormalised vectors (up to the one-byte norm), at a
   fraction of decoding's cost.

Stage seconds are added to an optional ``timings`` dict under the names in :data:`STAGES`.

>>> st = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.1]], np.float32)  # 3 centroids x 2 query tokens
>>> bags, bag_off = np.array([0, 2, 1, 2]), np.array([0, 2, 4])  # doc 0 holds centroids 0 and 2, doc 1 holds 1 and 2
>>> centroid_interaction(bags, bag_off, np.array([0, 1]), st).tolist()
[1.0, 1.0]
>>> centroid_interaction(bags, bag_off, np.array([0, 1]), st, keep=st.max(axis=1) >= 0.85).round(2).tolist()
[1.0, 0.0]
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np
from mm.index.maxsim import ranges_index, top_k

from mm.kernels.late_interaction import adc_maxsim, probe_candidates, top_centroids

STAGES = ("centroid_scores", "tables", "candidates", "probe_scores", "interaction", "lookup", "maxsim")


@contextmanager
def stage(timings: dict[str, float] | None, name: str):
    """Add the seconds spent in the block to ``timings[name]``."""
    if timings is None:
        yield
        return
    t = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t


def probe(st: np.ndarray, nprobe: int) -> np.ndarray:
    """Distinct ids of the ``nprobe`` best centroids of each query token (columns of ``st``)."""
    return np.unique(probe_ranked(st, nprobe))


def probe_ranked(st: np.ndarray, nprobe: int) -> np.ndarray:
    """The ``nprobe`` best centroid ids of each query token, best first (ties: the lower id): ``(nprobe, q)``.

    mm's native kernel where it builds (:func:`mm.kernels.late_interaction.top_centroids`: 16,384 centroids
    x 32 tokens: 0.8 ms in a scratch timing, where numpy's argpartition and argsort took 6.2 ms); numpy's
    stable sort otherwise.

    >>> probe_ranked(np.array([[0.1, 0.9], [0.5, 0.2], [0.7, 0.4]], np.float32), 2).tolist()
    [[2, 0], [1, 2]]
    """
    found = top_centroids(st, nprobe)  # mm's native kernel: one pass over st as it lies
    if found is not None:
        return found
    return np.argsort(-st, axis=0, kind="stable")[:nprobe]  # stable: ties to the lower id, as the kernel


def probe_scores(ivf: np.ndarray, ivf_off: np.ndarray, st: np.ndarray, ranked: np.ndarray, rows: np.ndarray,
                 threshold: float) -> np.ndarray:
    """Approximate MaxSim of candidate ``rows`` (ascending) from the inverted lists of the probed centroids.

    ``ranked``: :func:`probe_ranked`. Token ``i`` of document ``d`` scores the best ``S[c, i]``
    over its probed centroids ``c`` (those reaching ``threshold``) whose list holds ``d``, else 0.
    Ranks are written worst first, so the best overwrites: within one rank a (document,
    token) pair occurs once (one centroid per token, distinct documents per list).

    >>> st = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.3]], np.float32)
    >>> ivf, ivf_off = np.array([0, 1, 0, 1]), np.array([0, 1, 2, 4])  # c0: d0; c1: d1; c2: d0, d1
    >>> [round(float(v), 2) for v in probe_scores(ivf, ivf_off, st, probe_ranked(st, 2), np.array([0, 1]), 0.0)]
    [1.2, 1.3]
    """
    q = st.shape[1]
    flat = np.zeros(len(rows) * q, dtype=np.float32)
    if len(rows) == 0:
        return flat
    tokens = np.arange(q)
    for rank in range(len(ranked) - 1, -1, -1):
        cents = ranked[rank]
        scores = st[cents, tokens]
        ok = scores >= threshold
        cents, toks, scores = cents[ok], tokens[ok], scores[ok]
        idx, _ = ranges_index(ivf_off[cents], ivf_off[cents + 1])
        lens = ivf_off[cents + 1] - ivf_off[cents]
        docs = np.asarray(ivf[idx], dtype=np.int64)
        pos = np.minimum(np.searchsorted(rows, docs), len(rows) - 1)
        hit = rows[pos] == docs  # filtered-out documents are not in rows
        flat[pos[hit] * q + np.repeat(toks, lens)[hit]] = np.repeat(scores, lens)[hit]
    return flat.reshape(len(rows), q).sum(axis=1)


def candidates(ivf: np.ndarray, ivf_off: np.ndarray, centroids: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Rows (ascending) of allowed documents in the inverted lists of ``centroids``."""
    idx, _ = ranges_index(ivf_off[centroids], ivf_off[centroids + 1])
    mask = np.zeros(len(allowed), dtype=bool)
    mask[ivf[idx]] = True
    mask &= allowed
    return np.flatnonzero(mask)


def centroid_interaction(bags: np.ndarray, bag_off: np.ndarray, rows: np.ndarray, st: np.ndarray,
                         keep: np.ndarray | None = None, threads: int = 1) -> np.ndarray:
    """Approximate MaxSim of documents ``rows`` (ascending) from their bags of centroid ids.

    ``keep`` (bool per centroid) prunes bag entries; a query token with no kept centroid
    in a document (or a document with an empty bag) contributes 0. Without pruning, mm's native
    kernel scores the bags where it builds (:func:`mm.kernels.late_interaction.adc_maxsim` with no code bytes,
    on ``threads`` threads): a bag is a document whose tokens are its distinct centroids. Otherwise
    the work goes one query token at a time: its scores for every centroid (64 KB for 16k centroids)
    stay in cache while they are gathered for all the bags.
    """
    rows = np.asarray(rows, dtype=np.int64)
    bag_off = np.asarray(bag_off)
    if len(rows) == 0:
        return np.zeros(0, dtype=np.float32)
    if keep is None and bags.dtype in (np.uint16, np.int32):  # centroid ids as stored
        q = st.shape[1]
        found = adc_maxsim(st, np.zeros(q, np.float32), np.zeros((0, q), np.float32), bags,
                           np.empty((len(bags), 0), np.uint8), None, None, bag_off[rows], bag_off[rows + 1], threads)
        if found is not None:
            return found
    if rows[-1] - rows[0] == len(rows) - 1:  # consecutive documents: their bags are one contiguous slice
        cents = np.asarray(bags[bag_off[rows[0]]:bag_off[rows[-1] + 1]], dtype=np.intp)
        starts = np.asarray(bag_off[rows] - bag_off[rows[0]], dtype=np.int64)
    else:
        idx, starts = ranges_index(bag_off[rows], bag_off[rows + 1])
        cents = np.asarray(bags[idx], dtype=np.intp)
    total = np.zeros(len(rows), dtype=np.float32)
    if len(cents) == 0:
        return total
    empty = np.diff(starts, append=len(cents)) == 0
    np.minimum(starts, len(cents) - 1, out=starts)
    by_token = np.array(st.T, dtype=np.float32, order="C")  # (q, n_centroids)
    if keep is not None:
        by_token[:, ~np.asarray(keep, dtype=bool)] = -np.inf
    picked = np.empty(len(cents), dtype=np.float32)
    for scores in by_token:
        np.take(scores, cents, out=picked)
        best = np.maximum.reduceat(picked, starts)
        best[empty | np.isneginf(best)] = 0.0
        total += best
    return total


class LookupTables(NamedTuple):
    """A query's code tables as :func:`token_scores` reads them (see :func:`lookup_tables`)."""

    table: Any  #: torch tensor (``n_bytes * 256 x q``): the codec's table times ``1 / unscale``
    bias: np.ndarray  #: float32 (``q``)
    unscale: float  #: a power of two: table sums times this are the true sums


LOOKUP_DTYPES = ("float16", "float32")
#: float16 keeps sums of table rows below this (2**14: far from its 65,504 limit, well above its 2**-14 subnormals)
HALF_SUM_LIMIT = 2.0 ** 14


def lookup_tables(table: np.ndarray, bias: np.ndarray, dtype: str = "float32") -> LookupTables:
    """A query's tables (:meth:`~mm.index.codec.ResidualCodec.query_tables`) ready for the lookup.

    ``dtype="float16"`` reads half the bytes. It is not the default: with the native kernel on the
    AVX2 CPU a SciFact query's p50 was within the noise of float32's (19.6 against 20.2 ms in one run,
    27.8 against 27.4 in another: ``benchmarks/search_index.py --codec pq --queries 100``), and other
    CPUs may differ, so that benchmark times both in every run. A float16 table is first scaled by a
    power of two (exact)
    so that a token's sum over its code bytes, at most ``n_bytes`` times the largest entry, stays
    near :data:`HALF_SUM_LIMIT` whatever the vectors' magnitude: neither overflow nor lost digits.

    >>> t = lookup_tables(np.array([[3000.0, -1.0], [0.5, 2.0]], np.float32), np.zeros(2, np.float32), "float16")
    >>> t.table.dtype, t.unscale, (t.table.float().numpy() * t.unscale).tolist()
    (torch.float16, 0.25, [[3000.0, -1.0], [0.5, 2.0]])
    """
    import torch

    table = np.asarray(table, dtype=np.float32)
    bias = np.asarray(bias, dtype=np.float32)
    if dtype == "float32":
        return LookupTables(torch.from_numpy(table), bias, 1.0)
    if dtype != "float16":
        raise ValueError(f"dtype must be one of {LOOKUP_DTYPES}, got {dtype!r}")
    n_bytes = max(1, len(table) // 256)
    peak = float(np.abs(table).max()) * n_bytes if table.size else 0.0
    exponent = math.floor(math.log2(HALF_SUM_LIMIT / peak)) if peak > 0 else 0
    return LookupTables((torch.from_numpy(table) * math.ldexp(1.0, exponent)).to(torch.float16), bias,
                        math.ldexp(1.0, -exponent))


def token_scores(st: np.ndarray, tables: LookupTables, cids: np.ndarray, codes: np.ndarray,
                 inv_norms: np.ndarray | None) -> np.ndarray:
    """Scores (tokens x q) of tokens given by centroid ids and code bytes, from the query's lookup tables.

    ``inv_norms``: 1 / norm per token or None.
    """
    import torch

    out = st[np.asarray(cids, dtype=np.intp)]
    out += tables.bias
    if codes.shape[1]:
        idx = torch.from_numpy(np.asarray(codes)).to(torch.int32)
        idx += torch.arange(0, 256 * codes.shape[1], 256, dtype=torch.int32)
        sums = torch.nn.functional.embedding_bag(idx, tables.table, mode="sum")
        torch.from_numpy(out).add_(sums, alpha=tables.unscale)  # to float32, unscaled and added in one pass
    if inv_norms is not None:
        out *= inv_norms[:, None]
    return out


def lookup_maxsim(st: np.ndarray, tables: LookupTables, tok_off: np.ndarray, rows: np.ndarray,
                  seg: dict[str, Any], timings: dict[str, float] | None = None, max_tokens: int = 65536,
                  threads: int = 1) -> np.ndarray:
    """Exact MaxSim of documents ``rows`` (ascending) of a compressed segment view ``seg``, from lookup tables.

    ``tables``: :func:`lookup_tables`. Where mm's native kernel builds (:func:`mm.kernels.late_interaction.adc_maxsim`,
    on ``threads`` threads), each document's tokens are scored and maximised in place: stage ``lookup``
    then includes the maxima. Otherwise (no C++ compiler) work goes through torch's ``embedding_bag``
    in chunks of about ``max_tokens`` tokens.
    """
    rows = np.asarray(rows, dtype=np.int64)
    with stage(timings, "lookup"):
        found = adc_maxsim(st, tables.bias, tables.table.numpy(), seg["cids"], seg["codes"], seg.get("norms"),
                           seg.get("inv_norm"), tok_off[rows], tok_off[rows + 1], threads, tables.unscale)
    if found is not None:
        return found
    out = np.empty(len(rows), dtype=np.float32)
    lens = tok_off[rows + 1] - tok_off[rows]
    i = 0
    while i < len(rows):
        j = i + max(1, int(np.searchsorted(np.cumsum(lens[i:]), max_tokens, side="right")))
        idx, starts = ranges_index(tok_off[rows[i:j]], tok_off[rows[i:j] + 1])
        with stage(timings, "lookup"):
            norms = seg["inverse_norms"](idx) if seg["inverse_norms"] is not None else None
            sims = token_scores(st, tables, seg["cids"][idx], seg["codes"][idx], norms)
        with stage(timings, "maxsim"):
            out[i:j] = np.maximum.reduceat(sims, starts, axis=0).sum(axis=1)
        i = j
    return out


def select(parts: list[tuple[int, np.ndarray, np.ndarray]], n: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """The ``n`` best of per-segment (segment, rows, scores), again per segment (rows ascending)."""
    parts = [p for p in parts if len(p[1])]
    if sum(len(p[1]) for p in parts) <= n:
        return parts
    seg = np.concatenate([np.full(len(r), s) for s, r, _ in parts])
    rows = np.concatenate([r for _, r, _ in parts])
    scores = np.concatenate([v for *_, v in parts])
    best = top_k(scores, n)
    out = []
    for s in np.unique(seg[best]):
        pick = best[seg[best] == s]
        order = np.argsort(rows[pick])
        out.append((int(s), rows[pick][order], scores[pick][order]))
    return out


def search(segments: list[dict[str, Any]], tables: LookupTables, st: np.ndarray, k: int, *, nprobe: int,
           ncandidates: int, nrerank: int, threshold: float, timings: dict[str, float] | None = None,
           threads: int = 1) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Top ``k`` as per-segment (segment, rows, scores) through the four stages.

    ``segments``: per compressed segment a dict with ``bags``, ``bag_off``, ``ivf``, ``ivf_off``,
    ``tok_off``, ``cids``, ``codes``, ``allowed`` (bool per row), ``inverse_norms`` (token
    indices -> 1 / norm, or None), ``norms`` (norm code per token, or None) and ``inv_norm`` (1 / norm
    per norm code, or None); ``tables``: the query's lookup tables; ``threads``: of the native stages
    (see :func:`lookup_maxsim`).
    """
    with stage(timings, "candidates"):
        ranked = probe_ranked(st, nprobe)
        found = [probe_candidates(g["ivf"], g["ivf_off"], ranked, st, threshold, g["allowed"]) for g in segments]
        if all(f is not None for f in found):  # the native kernel: rows and their probe scores in one pass
            pool = [(s, rows, scores) for s, (rows, scores) in enumerate(found)]
        else:
            probed = np.unique(ranked)
            pool = [(s, candidates(g["ivf"], g["ivf_off"], probed, g["allowed"]), None) for s, g in enumerate(segments)]
    if sum(len(r) for _, r, _ in pool) > ncandidates:
        with stage(timings, "probe_scores"):
            pool = select([(s, r, v if v is not None else probe_scores(segments[s]["ivf"], segments[s]["ivf_off"], st,
                                                                        ranked, r, threshold))
                           for s, r, v in pool], ncandidates)
    if sum(len(r) for _, r, _ in pool) > nrerank:
        with stage(timings, "interaction"):
            pool = select([(s, r, centroid_interaction(segments[s]["bags"], segments[s]["bag_off"], r, st,
                                                       threads=threads))
                           for s, r, _ in pool], nrerank)
    scored = [(s, r, lookup_maxsim(st, tables, segments[s]["tok_off"], r, segments[s], timings, threads=threads))
              for s, r, _ in pool]
    return select(scored, k)
