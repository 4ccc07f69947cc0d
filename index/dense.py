"""Dense single-vector index (one vector per document), same API and persistence as the multi-vector one.

Vectors are stored as float32 ``.npy`` segments (memory-mapped) and searched
exactly by inner product - the computation of faiss' ``IndexFlatIP`` - with
``faiss.knn`` over each segment when no filter or tombstone applies, and a masked
matrix product otherwise. Scores are inner products: give normalised vectors for
cosine similarity. ``exact`` is accepted for API symmetry; dense search is always exact.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
from mm.index.base import DocRef, Index
from mm.index.maxsim import top_k

from mm.errors import InvalidInputError

log = logging.getLogger(__name__)


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

    def retrain(self) -> dict[str, Any]:
        """Nothing to train in an exact dense index (kept for API symmetry); returns ``{}``."""
        return {}

    def _search_one(self, query: np.ndarray, k: int, allowed: list[np.ndarray], exact: bool,
                    settings: dict[str, Any]) -> list[tuple[int, int, float]]:
        out_s, out_r, out_v = [], [], []
        for s, seg in enumerate(self._segments):
            mask = allowed[s]
            vec = seg.arrays["vectors"]
            if mask.all():
                import faiss

                dist, idx = faiss.knn(query[None, :], np.ascontiguousarray(vec), min(k, len(vec)),
                                      metric=faiss.METRIC_INNER_PRODUCT)
                rows, scores = idx[0].astype(np.int64), dist[0]
            else:
                rows = np.flatnonzero(mask)
                if not len(rows):
                    continue
                scores = np.asarray(vec[rows]) @ query
                best = top_k(scores, k)
                rows, scores = rows[best], scores[best]
            # faiss pads with -1 rows when fewer than k scores are comparable (NaN vectors in a damaged
            # segment); a non-finite score matches nothing, so such rows never come back (nor twice)
            ok = (rows >= 0) & np.isfinite(scores)
            rows, scores = rows[ok], scores[ok]
            out_s.append(np.full(len(rows), s))
            out_r.append(rows)
            out_v.append(scores.astype(np.float32))
        if not out_v:
            return []
        s_all, r_all, v_all = map(np.concatenate, (out_s, out_r, out_v))
        return [(int(s_all[i]), int(r_all[i]), float(v_all[i])) for i in top_k(v_all, k)]

    def info(self) -> dict[str, Any]:
        out = super().info()
        out.update(trained=True, centroids=0, nbits=32, drift={"reasons": []}, retrain_advised=False)
        return out
