"""Dense single-vector index (one vector per document), same API and persistence as the multi-vector one.

Vectors are stored as float32 ``.npy`` segments (memory-mapped) and searched
exactly by inner product - the computation of faiss' ``IndexFlatIP`` - with
``faiss.knn`` over each segment when no filter or tombstone applies, and a masked
matrix product otherwise. Scores are inner products: give normalised vectors for
cosine similarity. ``exact`` is accepted for API symmetry; dense search is always exact.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import numpy as np
from mm.index.base import DocRef, Index
from mm.index.maxsim import top_k
from mm.index.segments import merge_segments, open_segment

from mm.errors import InvalidInputError

log = logging.getLogger(__name__)

#: segments of one size tier (powers of MERGE_FANOUT times MERGE_BASE live entries) are merged when this many exist
MERGE_FANOUT = 4
MERGE_BASE = 4096


class DenseIndex(Index):
    """Exact inner-product index over one vector per document."""

    kind: ClassVar[str] = "dense"
    search_options: ClassVar[dict[str, Any]] = {}

    def _check_vectors(self, vectors: Any, n: int) -> list[np.ndarray]:
        a = np.asarray(vectors) if not isinstance(vectors, (list, tuple)) else np.stack(
            [np.asarray(v).reshape(-1) for v in vectors]) if len(vectors) else np.zeros((0, self.dim))
        if a.ndim != 2 or a.shape != (n, self.dim):
            raise InvalidInputError(f"a dense index takes an (n x {self.dim}) array for {n} documents, "
                                    f"got shape {a.shape}")
        if not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all():
            raise InvalidInputError("vectors must be finite floats")
        return list(a.astype(np.float32, copy=False))

    def _check_query(self, query: Any) -> np.ndarray:
        q = np.asarray(query)
        if q.ndim == 2 and q.shape[0] == 1:
            q = q[0]
        if q.ndim != 1 or q.shape[0] != self.dim:
            raise InvalidInputError(f"a dense query must be a ({self.dim},) vector, got shape {np.shape(query)}")
        if not np.issubdtype(q.dtype, np.floating) or not np.isfinite(q).all():
            raise InvalidInputError("query vector must hold finite floats")
        return np.ascontiguousarray(q, dtype=np.float32)

    def _append(self, manifest: dict[str, Any], docs: list[DocRef]) -> None:
        vecs = np.stack([d.vectors if d.vectors is not None else np.asarray(d.segment.arrays["vectors"][d.row])
                         for d in docs]).astype(np.float32)
        manifest["segments"].append(self._new_segment(manifest, docs, {"vectors": vecs}, {"n_tokens": len(docs)}))
        self._merge_tiers(manifest)

    def _merge_tiers(self, manifest: dict[str, Any]) -> None:
        """Merge segments of one size tier (powers of :data:`MERGE_FANOUT` x :data:`MERGE_BASE` live entries) once
        :data:`MERGE_FANOUT` of them exist, in the same commit: a growing index keeps O(log n) segments, so
        opening it costs the same at any size (each entry is copied about log4(n / MERGE_BASE) times)."""
        while True:
            tiers: dict[int, list[int]] = {}
            for i, entry in enumerate(manifest["segments"]):
                live = max(int(entry["n_docs"]) - int(entry["n_deleted"]), 1)
                tiers.setdefault(max(0, int(math.log(live / MERGE_BASE, MERGE_FANOUT))), []).append(i)
            full = [members for members in tiers.values() if len(members) >= MERGE_FANOUT]
            if not full:
                return
            members = set(full[0])
            segments = [open_segment(self.path, manifest["segments"][i]) for i in sorted(members)]
            merged = merge_segments(self.path, segments, ("vectors",), {})
            manifest["segments"] = [e for i, e in enumerate(manifest["segments"]) if i not in members]
            if merged is not None:
                manifest["segments"].append({**merged, "n_tokens": merged["n_docs"]})
            log.debug("merged %d dense segments (%d entries)", len(members), merged["n_docs"] if merged else 0)

    def retrain(self) -> dict[str, Any]:
        """Nothing to train in an exact dense index (kept for API symmetry); returns ``{}``."""
        return {}

    def _search_one(self, query: np.ndarray, k: int, allowed: list[np.ndarray], exact: bool,
                    settings: dict[str, Any]) -> list[tuple[int, int, float]]:
        return self._search_many([query], k, allowed, exact, settings)[0]

    def _search_many(self, queries: list[np.ndarray], k: int, allowed: list[np.ndarray], exact: bool,
                     settings: dict[str, Any]) -> list[list[tuple[int, int, float]]]:
        """One matrix product per segment for the whole batch (``faiss.knn`` of all queries at once)."""
        batch = np.stack(queries)
        found: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in queries]
        for s, seg in enumerate(self._segments):
            for q, (rows, scores) in enumerate(self._segment_top(seg.arrays["vectors"], allowed[s], batch, k)):
                # faiss pads with -1 rows when fewer than k scores are comparable (NaN vectors in a damaged
                # segment); a non-finite score matches nothing, so such rows never come back (nor twice)
                ok = (rows >= 0) & np.isfinite(scores)
                found[q].append((np.full(int(ok.sum()), s), rows[ok], scores[ok].astype(np.float32)))
        out = []
        for parts in found:
            if not parts:
                out.append([])
                continue
            s_all, r_all, v_all = (np.concatenate([p[i] for p in parts]) for i in range(3))
            out.append([(int(s_all[i]), int(r_all[i]), float(v_all[i])) for i in top_k(v_all, k)])
        return out

    @staticmethod
    def _segment_top(vec: np.ndarray, mask: np.ndarray, batch: np.ndarray, k: int
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query of ``batch``: (rows, scores) of the ``k`` best allowed rows of one segment."""
        if mask.all():
            import faiss

            dist, idx = faiss.knn(batch, np.ascontiguousarray(vec), min(k, len(vec)),
                                  metric=faiss.METRIC_INNER_PRODUCT)
            return [(idx[q].astype(np.int64), dist[q]) for q in range(len(batch))]
        rows = np.flatnonzero(mask)
        if not len(rows):
            return []
        scores = batch @ np.asarray(vec[rows]).T  # (queries, allowed rows)
        return [(rows[best], scores[q, best]) for q in range(len(batch)) for best in [top_k(scores[q], k)]]

    def info(self) -> dict[str, Any]:
        out = super().info()
        out.update(trained=True, centroids=0, nbits=32, drift={"reasons": []}, retrain_advised=False)
        return out
