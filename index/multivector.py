"""PLAID-style multi-vector (late-interaction) index.

Life cycle
----------
* **Untrained** (fewer than ``train_tokens`` token vectors added so far): documents
  are kept uncompressed (float16) in *raw* segments and searched exhaustively.
* **Training** happens inside the ``add`` that brings the index to ``train_tokens``
  tokens: k-means centroids and residual buckets (:mod:`mm.index.codec`) are learned
  from all vectors added so far, which are then compressed into one segment; the same
  commit replaces the raw segments.
* **Trained**: each ``add`` encodes its documents with the existing codec into a new
  compressed segment. ``info()`` measures drift (mean residual norm of documents added
  after training vs. the training set, growth since training) and advises a
  ``retrain()`` when it would pay off.

Search (``exact=False``)
------------------------
1. query-token x centroid scores ``S`` (q x n_centroids);
2. candidate documents: those owning a token in one of the ``nprobe`` best centroids
   of any query token (inverted lists per segment);
3. approximate score per candidate = centroid-only MaxSim ``sum_i max_{c in doc} S[i, c]``;
4. the best ``ncandidates`` are re-ranked by exact MaxSim on decompressed vectors.
When the filters leave at most ``ncandidates`` documents, all of them are re-ranked.

``exact=True`` scores every document by MaxSim exhaustively over the most precise
vectors stored: the float16 originals when the index keeps them
(``keep_originals=True``, and always for raw segments), else the decompressed ones.
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

import numpy as np
from mm.index.base import DocRef, Index
from mm.index.codec import ResidualCodec
from mm.index.maxsim import maxsim_ragged, ranges_index, top_k
from mm.index.segments import Segment
from mm.index.storage import load_array, new_uid, save_array

from mm.errors import InvalidInputError

log = logging.getLogger(__name__)

DEFAULT_TRAIN_TOKENS = 262_144
#: a document may hold at most this many token vectors
MAX_DOC_TOKENS = 65_536
#: drift thresholds for the retrain advice
RESIDUAL_GROWTH_LIMIT = 1.15
TOKEN_GROWTH_LIMIT = 8.0


class MultiVectorIndex(Index):
    """Multi-vector index; see the module docstring."""

    kind: ClassVar[str] = "multivector"
    search_options: ClassVar[dict[str, Any]] = {"nprobe": 4, "ncandidates": 256}

    codec: ResidualCodec | None = None

    # ------------------------------------------------------------------ loading
    def _load_kind(self, manifest: dict[str, Any]) -> None:
        entry = manifest.get("codec")
        if entry is None:
            self.codec = None
            return
        arrays = {key: np.asarray(load_array(self.path / name, mmap=False)) for key, name in entry["files"].items()}
        centroids = arrays.pop("centroids")
        self.codec = ResidualCodec(centroids, arrays, int(entry["nbits"]), bool(entry["normalize"]),
                                   entry.get("scheme", "scalar"))

    @staticmethod
    def _offsets(seg: Segment) -> np.ndarray:
        off = seg.arrays.get("_off")
        if off is None:
            off = np.zeros(seg.n_docs + 1, dtype=np.int64)
            np.cumsum(seg.arrays["doclens"], out=off[1:])
            seg.arrays["_off"] = off
        return off

    def _doc_tokens(self, seg: Segment, row: int) -> int:
        return int(seg.arrays["doclens"][row])

    def _live_tokens(self) -> int:
        return int(sum(np.asarray(seg.arrays["doclens"])[seg.live].sum() for seg in self._segments))

    # ------------------------------------------------------------------ validation
    def _check_vectors(self, vectors: Any, n: int) -> list[np.ndarray]:
        if isinstance(vectors, np.ndarray) or not isinstance(vectors, (list, tuple)):
            raise InvalidInputError("a multi-vector index takes a list of (tokens x dim) arrays, one per document")
        if len(vectors) != n:
            raise InvalidInputError(f"got {len(vectors)} vector arrays for {n} documents")
        out = []
        for i, v in enumerate(vectors):
            a = np.asarray(v)
            if a.ndim != 2 or a.shape[1] != self.dim:
                raise InvalidInputError(f"document {i}: expected a (tokens x {self.dim}) array, got shape {a.shape}")
            if len(a) == 0:
                raise InvalidInputError(f"document {i} has no token vectors")
            if len(a) > MAX_DOC_TOKENS:
                raise InvalidInputError(f"document {i} has {len(a)} token vectors; the limit is {MAX_DOC_TOKENS} "
                                        "(split long documents into passages)")
            if not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all():
                raise InvalidInputError(f"document {i}: vectors must be finite floats")
            out.append(a.astype(np.float32, copy=False))
        return out

    def _check_query(self, query: Any) -> np.ndarray:
        q = np.asarray(query)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim or len(q) == 0:
            raise InvalidInputError(f"a query must be a (tokens x {self.dim}) array, got shape {np.shape(query)}")
        if not np.issubdtype(q.dtype, np.floating) or not np.isfinite(q).all():
            raise InvalidInputError("query vectors must be finite floats")
        return np.ascontiguousarray(q, dtype=np.float32)

    # ------------------------------------------------------------------ vectors of stored rows
    def _ref_vectors(self, ref: DocRef) -> np.ndarray:
        """float32 token vectors of a document (new, or copied from a segment: originals if kept, else decoded)."""
        if ref.vectors is not None:
            return ref.vectors
        seg, off = ref.segment, self._offsets(ref.segment)
        a, b = int(off[ref.row]), int(off[ref.row + 1])
        if "vectors" in seg.arrays:
            return np.asarray(seg.arrays["vectors"][a:b], dtype=np.float32)
        return self.codec.decode(seg.arrays["cids"][a:b], seg.arrays["codes"][a:b])

    # ------------------------------------------------------------------ writing
    def _append(self, manifest: dict[str, Any], docs: list[DocRef]) -> None:
        if self.codec is not None:
            manifest["segments"].append(self._compressed_segment(manifest, docs, self.codec, post=True))
            return
        # untrained: keep raw unless this add reaches train_tokens
        taken = {d.id for d in docs}
        survivors = [r for r in self._live_refs() if r.id not in taken]
        n_tokens = sum(len(self._ref_vectors(d)) if d.vectors is None else len(d.vectors) for d in docs)
        n_tokens += sum(int(r.segment.arrays["doclens"][r.row]) for r in survivors)
        if n_tokens >= int(manifest["config"]["train_tokens"]):
            self._train_into(manifest, survivors + docs)
        else:
            manifest["segments"].append(self._raw_segment(manifest, docs))

    def _rewrite(self, manifest: dict[str, Any], refs: list[DocRef]) -> None:
        if self.codec is not None:
            manifest["segments"].append(self._compressed_segment(manifest, refs, self.codec, post=None))
        else:
            manifest["segments"].append(self._raw_segment(manifest, refs))

    def _raw_segment(self, manifest: dict[str, Any], docs: list[DocRef]) -> dict[str, Any]:
        vecs = [self._ref_vectors(d) for d in docs]
        arrays = {"doclens": np.array([len(v) for v in vecs], dtype=np.int32),
                  "vectors": np.concatenate(vecs).astype(np.float16)}
        return self._new_segment(manifest, docs, arrays, {"compressed": False, "n_tokens": int(sum(map(len, vecs)))})

    def _train_into(self, manifest: dict[str, Any], refs: list[DocRef]) -> None:
        """Train a codec on ``refs`` and replace every segment by one compressed segment holding them."""
        t0 = time.perf_counter()
        vecs = [self._ref_vectors(r) for r in refs]
        cfg = manifest["config"]
        flat = np.concatenate(vecs)
        if len(flat) < 16:
            raise InvalidInputError(f"cannot train on {len(flat)} token vectors; add more documents first")
        codec = ResidualCodec.train(flat, nbits=int(cfg["nbits"]), factor=float(cfg["centroids_factor"]),
                                    seed=int(cfg["seed"]), scheme=cfg.get("codec", "scalar"))
        del flat
        uid = new_uid()
        files = {}
        for key, array in {"centroids": codec.centroids, **codec.tables}.items():
            files[key] = f"codec-{uid}.{key}.npy"
            save_array(self.path / files[key], array)
        refs = [DocRef(r.id, r.text, r.metadata, vectors=v) for r, v in zip(refs, vecs, strict=True)]
        entry = self._compressed_segment(manifest, refs, codec, post=False)
        manifest["codec"] = {
            "files": files, "nbits": codec.nbits, "normalize": codec.normalize, "n_centroids": codec.n_centroids,
            "scheme": codec.scheme,
            "trained_tokens": entry["n_tokens"], "trained_docs": entry["n_docs"],
            "train_residual_mean": entry["residual_sum"] / max(entry["n_tokens"], 1), "trained_at": time.time(),
        }
        manifest["segments"] = [entry]
        log.info("trained %d centroids on %d tokens of %d documents in %.1f s", codec.n_centroids,
                 entry["n_tokens"], entry["n_docs"], time.perf_counter() - t0)

    def _compressed_segment(self, manifest: dict[str, Any], docs: list[DocRef], codec: ResidualCodec,
                            post: bool | None) -> dict[str, Any]:
        """Encode new documents / copy compressed rows; ``post=None`` keeps copied rows' flags."""
        keep = bool(manifest["config"]["keep_originals"])
        doclens, cids, codes, norms, rnorm, flags, originals = [], [], [], [], [], [], []
        pending: list[int] = []  # indices of docs needing encoding

        def flush() -> None:
            if not pending:
                return
            vecs = [docs[i].vectors if docs[i].vectors is not None else self._ref_vectors(docs[i]) for i in pending]
            flat = np.concatenate(vecs)
            c, k, dn = codec.encode(flat)
            resid = codec.residual_norms(flat, c)
            bounds = np.cumsum([0] + [len(v) for v in vecs])
            for j, i in enumerate(pending):
                a, b = bounds[j], bounds[j + 1]
                slots[i] = (c[a:b], k[a:b], dn[a:b], float(resid[a:b].sum()), 1 if post is None else int(post),
                            flat[a:b].astype(np.float16) if keep else None)
            pending.clear()

        slots: list[Any] = [None] * len(docs)
        for i, d in enumerate(docs):
            seg = d.segment
            if d.vectors is None and seg is not None and seg.entry.get("compressed") and \
                    (not keep or "vectors" in seg.arrays):
                off = self._offsets(seg)
                a, b = int(off[d.row]), int(off[d.row + 1])
                flag = int(seg.arrays["post"][d.row]) if post is None else int(post)
                slots[i] = (np.asarray(seg.arrays["cids"][a:b]), np.asarray(seg.arrays["codes"][a:b]),
                            np.asarray(seg.arrays["norms"][a:b]), float(seg.arrays["rnorm"][d.row]), flag,
                            np.asarray(seg.arrays["vectors"][a:b]) if keep else None)
            else:
                pending.append(i)
                if len(pending) >= 512:
                    flush()
        flush()
        for c, k, dn, rn, fl, orig in slots:
            doclens.append(len(c))
            cids.append(c)
            codes.append(k)
            norms.append(dn)
            rnorm.append(rn)
            flags.append(fl)
            if keep:
                originals.append(orig)
        cid_all = np.concatenate(cids).astype(codec.cid_dtype)
        arrays = {"doclens": np.array(doclens, dtype=np.int32), "cids": cid_all, "codes": np.concatenate(codes),
                  "norms": np.concatenate(norms).astype(np.float16),
                  "rnorm": np.array(rnorm, dtype=np.float32), "post": np.array(flags, dtype=np.uint8)}
        arrays.update(self._inverted_lists(arrays["doclens"], cid_all, codec.n_centroids))
        if keep:
            arrays["vectors"] = np.concatenate(originals)
        n_tokens = int(arrays["doclens"].sum())
        return self._new_segment(manifest, docs, arrays, {
            "compressed": True, "n_tokens": n_tokens, "residual_sum": float(arrays["rnorm"].sum())})

    @staticmethod
    def _inverted_lists(doclens: np.ndarray, cids: np.ndarray, n_centroids: int) -> dict[str, np.ndarray]:
        """Unique (doc, centroid) pairs, both by document (doc_cids) and by centroid (ivf)."""
        doc_of_token = np.repeat(np.arange(len(doclens), dtype=np.int64), doclens)
        pairs = np.unique(doc_of_token * n_centroids + cids.astype(np.int64))
        docs, cents = pairs // n_centroids, pairs % n_centroids
        doc_cid_off = np.zeros(len(doclens) + 1, dtype=np.int64)
        np.cumsum(np.bincount(docs, minlength=len(doclens)), out=doc_cid_off[1:])
        order = np.argsort(cents, kind="stable")
        ivf_off = np.zeros(n_centroids + 1, dtype=np.int64)
        np.cumsum(np.bincount(cents, minlength=n_centroids), out=ivf_off[1:])
        return {"doc_cids": cents.astype(cids.dtype), "doc_cid_off": doc_cid_off,
                "ivf": docs[order].astype(np.int32), "ivf_off": ivf_off}

    def retrain(self) -> dict[str, Any]:
        """Re-learn centroids and buckets from all live documents and re-encode them into one segment.

        Trains from the float16 originals when the index keeps them, otherwise from the
        decompressed vectors (then precision stays bounded by the old codes; rebuilding from
        the source documents is better). On an untrained index it trains now.
        """

        def op(manifest):
            refs = self._live_refs()
            if not refs:
                raise InvalidInputError("retrain(): the index is empty")
            if self.codec is not None and not manifest["config"]["keep_originals"]:
                log.warning("retraining from decompressed vectors (the index does not keep originals)")
            self._train_into(manifest, refs)
            return manifest, {"centroids": manifest["codec"]["n_centroids"], "tokens": manifest["codec"]["trained_tokens"]}

        return self._write(op)

    # ------------------------------------------------------------------ search
    def _similarities(self, seg: Segment, exact: bool, query: np.ndarray, scores_t: np.ndarray | None):
        """Function mapping token indices of ``seg`` to query-token similarities (q x n)."""
        if "vectors" in seg.arrays and (exact or not seg.entry.get("compressed")):
            vec = seg.arrays["vectors"]
            return lambda idx: query @ np.asarray(vec[idx], dtype=np.float32).T
        cids, codes, norms, codec = seg.arrays["cids"], seg.arrays["codes"], seg.arrays["norms"], self.codec

        def sims(idx):
            # <q, c + r> = <q, c> (precomputed per centroid) + <q, r>, divided by |c + r| when renormalising
            out = query @ codec.decode_residuals(codes[idx]).T
            out += scores_t[np.asarray(cids[idx], dtype=np.intp)].T
            if codec.normalize:
                out /= np.asarray(norms[idx], dtype=np.float32)
            return out

        return sims

    def _search_one(self, query: np.ndarray, k: int, allowed: list[np.ndarray], exact: bool,
                    settings: dict[str, Any]) -> list[tuple[int, int, float]]:
        nprobe, ncand = int(settings["nprobe"]), int(settings["ncandidates"])
        if nprobe <= 0 or ncand <= 0:
            raise InvalidInputError(f"nprobe and ncandidates must be positive, got {nprobe}, {ncand}")
        ncand = max(ncand, k)
        n_allowed = sum(int(m.sum()) for m in allowed)
        exhaustive = exact or self.codec is None or n_allowed <= ncand
        pool: list[tuple[int, np.ndarray]] = []  # (segment, rows) to score exactly
        scores_t = None
        if self.codec is not None:
            scores_t = np.ascontiguousarray((query @ self.codec.centroids.T).T)  # (n_centroids, q)
        if exhaustive:
            pool = [(s, np.flatnonzero(m)) for s, m in enumerate(allowed)]
        else:
            nprobe = min(nprobe, self.codec.n_centroids)
            probe = np.argpartition(-scores_t, nprobe - 1, axis=0)[:nprobe].ravel()
            probe = np.unique(probe)
            approx_s, approx_r, approx_v = [], [], []
            for s, seg in enumerate(self._segments):
                if not seg.entry.get("compressed"):
                    pool.append((s, np.flatnonzero(allowed[s])))
                    continue
                rows = self._candidates(seg, probe, allowed[s])
                if len(rows):
                    approx_s.append(np.full(len(rows), s))
                    approx_r.append(rows)
                    approx_v.append(self._approx_scores(seg, rows, scores_t))
            if approx_v:
                s_all, r_all, v_all = map(np.concatenate, (approx_s, approx_r, approx_v))
                best = top_k(v_all, ncand)
                for s in np.unique(s_all[best]):
                    pool.append((int(s), np.sort(r_all[best][s_all[best] == s])))
        out_s, out_r, out_v = [], [], []
        for s, rows in pool:
            if len(rows) == 0:
                continue
            seg = self._segments[s]
            out_s.append(np.full(len(rows), s))
            out_r.append(rows)
            out_v.append(maxsim_ragged(self._offsets(seg), rows, self._similarities(seg, exact, query, scores_t)))
        if not out_v:
            return []
        s_all, r_all, v_all = map(np.concatenate, (out_s, out_r, out_v))
        return [(int(s_all[i]), int(r_all[i]), float(v_all[i])) for i in top_k(v_all, k)]

    @staticmethod
    def _candidates(seg: Segment, probe: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        off = seg.arrays["ivf_off"]
        idx, _ = ranges_index(off[probe], off[probe + 1])
        rows = np.unique(seg.arrays["ivf"][idx])
        return rows[allowed[rows]]

    @staticmethod
    def _approx_scores(seg: Segment, rows: np.ndarray, scores_t: np.ndarray) -> np.ndarray:
        off = seg.arrays["doc_cid_off"]
        idx, starts = ranges_index(off[rows], off[rows + 1])
        vals = scores_t[np.asarray(seg.arrays["doc_cids"][idx], dtype=np.intp)]  # (P, q)
        return np.maximum.reduceat(vals, starts, axis=0).sum(axis=1)

    # ------------------------------------------------------------------ info
    def info(self) -> dict[str, Any]:
        out = super().info()
        cfg = self._manifest["config"]
        out.update(nbits=int(cfg["nbits"]), keep_originals=bool(cfg["keep_originals"]),
                   trained=self.codec is not None,
                   centroids=self.codec.n_centroids if self.codec is not None else 0)
        out["drift"] = self._drift(out["tokens"])
        out["retrain_advised"] = bool(out["drift"]["reasons"])
        return out

    def _drift(self, live_tokens: int) -> dict[str, Any]:
        entry = self._manifest.get("codec")
        if entry is None:
            need = int(self._manifest["config"]["train_tokens"])
            return {"trained": False, "reasons": [],
                    "note": f"uncompressed and searched exhaustively until {need} tokens are added "
                            f"({live_tokens} so far); retrain() trains now"}
        post_tokens, post_resid = 0, 0.0
        for seg in self._segments:
            post = np.asarray(seg.arrays["post"], dtype=bool) & seg.live
            post_tokens += int(np.asarray(seg.arrays["doclens"])[post].sum())
            post_resid += float(np.asarray(seg.arrays["rnorm"])[post].sum())
        base = float(entry["train_residual_mean"])
        growth = (post_resid / post_tokens) / base if post_tokens and base > 0 else 1.0
        token_growth = live_tokens / max(int(entry["trained_tokens"]), 1)
        reasons = []
        if post_tokens and growth > RESIDUAL_GROWTH_LIMIT:
            reasons.append(f"documents added after training fit the centroids worse (mean residual norm "
                           f"x{growth:.2f} vs. the training set)")
        if token_growth > TOKEN_GROWTH_LIMIT:
            reasons.append(f"the index grew x{token_growth:.1f} since the centroids were trained")
        return {"trained": True, "trained_tokens": int(entry["trained_tokens"]),
                "tokens_added_after_training": post_tokens,
                "share_added_after_training": post_tokens / live_tokens if live_tokens else 0.0,
                "residual_norm_training": base,
                "residual_norm_growth": growth, "token_growth": token_growth, "reasons": reasons}
