"""PLAID-style multi-vector (late-interaction) index.

Life cycle
----------
* **Untrained** (fewer than ``train_tokens`` token vectors added so far): documents
  are kept uncompressed (float16) in *raw* segments and searched exhaustively.
* **Training** happens inside the ``add`` that brings the index to ``train_tokens``
  tokens: k-means centroids (``centroids_factor * sqrt(tokens)`` of them) and the
  residual codec (:mod:`mm.index.codec`) are learned from a random *sample* of the
  vectors added so far, which are then encoded in streaming batches into compressed
  segments (memory: the codes, never all float vectors); the same commit
  replaces the raw segments. For a bulk build, set ``train_tokens`` near the corpus
  size: the centroids then fit the whole corpus.
* **Trained**: each ``add`` encodes its documents with the existing codec into a new
  compressed segment; segments of similar size are merged (:data:`MERGE_FANOUT` per
  size tier) by copying codes, so a growing index keeps a few segments. No write makes
  a compressed segment of more than ``max_segment_tokens`` tokens (config; default
  :data:`DEFAULT_MAX_SEGMENT_TOKENS`, one document is never split): larger writes are
  split and merges stop there, which bounds the memory of any write. ``info()``
  measures drift and advises a ``retrain()`` when it would pay off.

Layout and search: :mod:`mm.index.layout` (contiguous codes, per-document bags of
centroid ids, inverted lists) and :mod:`mm.index.plaid` (candidates, probe scores from
the inverted lists, centroid interaction, exact MaxSim of the last ``nrerank`` documents from lookup tables).
``exact=True`` scores every document by MaxSim over the most precise vectors stored:
float16 originals when kept (``keep_originals=True``, always for raw segments), else
the decompressed ones.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from mm.index import layout, plaid
from mm.index.base import DocRef, Hit, Index
from mm.index.codec import MAX_POINTS_PER_CENTROID, RESIDUAL_SAMPLE, ResidualCodec, choose_n_centroids
from mm.index.maxsim import matmul, maxsim_ragged, top_k
from mm.index.segments import Segment, open_segment, read_rows
from mm.index.storage import new_uid, read_manifest, save_array

from mm.errors import IndexFormatError, InvalidInputError

log = logging.getLogger(__name__)

DEFAULT_TRAIN_TOKENS = 262_144
#: a document may hold at most this many token vectors
MAX_DOC_TOKENS = 65_536
#: drift thresholds for the retrain advice
RESIDUAL_GROWTH_LIMIT = 1.15
TOKEN_GROWTH_LIMIT = 8.0
#: version of the compressed layout (rotated codec, bags, a norm byte per token of unit-norm codecs)
LAYOUT_VERSION = 4
#: segments of one size tier (powers of MERGE_FANOUT times MERGE_BASE tokens) are merged when this many exist
MERGE_FANOUT = 4
MERGE_BASE = 65_536
#: token vectors encoded per batch while writing a compressed segment
ENCODE_BATCH = 65_536
#: default cap of a compressed segment's tokens (writing one holds about 60 bytes per token of it in memory)
DEFAULT_MAX_SEGMENT_TOKENS = 16 * 2**20



def segment_cap(manifest: dict[str, Any]) -> int:
    """The index's ``max_segment_tokens`` (indexes created before the cap existed: the default)."""
    return int(manifest["config"].get("max_segment_tokens", DEFAULT_MAX_SEGMENT_TOKENS))


def shared_codec(source: Any, dim: int) -> tuple[dict[str, Any], dict[str, Any], list[Path]]:
    """What a new index needs to share the codec of the trained multi-vector index ``source`` (folder
    or open index): its config (``nbits``, ``codec``, ``train_tokens``, ``centroids_factor``), its
    manifest codec entry and the codec files to copy (names unchanged)."""
    from mm.index import open_index

    index = source if isinstance(source, Index) else open_index(source)
    if not isinstance(index, MultiVectorIndex):
        raise InvalidInputError(f"codec_from must be a multi-vector index; {index.path} is {index.kind}")
    if int(index.dim) != int(dim):
        raise InvalidInputError(f"codec_from {index.path} holds {index.dim}-d vectors; this index is {dim}-d")
    manifest = read_manifest(Path(index.path))
    entry = manifest.get("codec")
    if entry is None:
        raise InvalidInputError(f"codec_from {index.path} has no trained codec yet (it trains once "
                                f"{manifest['config']['train_tokens']} tokens are added); add documents first")
    keys = ("nbits", "codec", "train_tokens", "centroids_factor")
    config = {k: manifest["config"][k] for k in keys} | {"codec_from": str(Path(index.path).resolve())}
    return config, dict(entry), [Path(index.path) / name for name in entry["files"].values()]

class MultiVectorIndex(Index):
    """Multi-vector index; see the module docstring.

    Search options: ``nprobe`` centroids probed per query token; ``ncandidates`` documents
    kept by the probe scores (:func:`mm.index.plaid.probe_scores`); ``nrerank`` documents scored
    exactly from lookup tables; ``threshold``: a probed centroid whose score for a query token is
    below it does not count for that token in the probe scores; ``lookup_dtype`` (``"float32"`` or
    ``"float16"``): the dtype of the lookup tables the exact scores gather (:func:`mm.index.plaid.lookup_tables`:
    float16 moves half the bytes, at about 1e-5 of a score; ``benchmarks/search_index.py`` times both).
    ``search_batch`` serves its queries on up to ``torch.get_num_threads()`` threads (one core per query);
    a single query gives its interaction and lookup (mm's native kernel) all of them.
    """

    kind: ClassVar[str] = "multivector"
    search_options: ClassVar[dict[str, Any]] = {"nprobe": 4, "ncandidates": 1024, "nrerank": 256, "threshold": 0.4,
                                                  "lookup_dtype": "float32"}

    codec: ResidualCodec | None = None

    # ------------------------------------------------------------------ loading
    def _load_kind(self, manifest: dict[str, Any]) -> None:
        entry = manifest.get("codec")
        if entry is None:
            self.codec = None
            return
        if entry.get("layout") != LAYOUT_VERSION:
            raise IndexFormatError(f"{self.path}: the multi-vector index was written by an older mm (layout "
                                   f"{entry.get('layout', 1)}, this mm reads {LAYOUT_VERSION}); rebuild it "
                                   "with this version of mm")
        from mm.index.storage import load_array

        arrays = {key: np.asarray(load_array(self.path / name, mmap=False)) for key, name in entry["files"].items()}
        self.codec = ResidualCodec.from_arrays(arrays, bool(entry["normalize"]), entry.get("scheme", "scalar"))

    @staticmethod
    def _offsets(seg: Segment) -> np.ndarray:
        off = seg.arrays.get("_off")
        if off is None:
            off = layout.offsets(np.asarray(seg.arrays["doclens"]))
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
        """float32 token vectors (unrotated) of a document: new, originals if kept, else decoded."""
        if ref.vectors is not None:
            return ref.vectors
        seg, off = ref.segment, self._offsets(ref.segment)
        a, b = int(off[ref.row]), int(off[ref.row + 1])
        if "vectors" in seg.arrays:
            return read_rows(seg.arrays["vectors"], a, b).astype(np.float32)
        return self.codec.decode(seg.arrays["cids"][a:b], seg.arrays["codes"][a:b]) @ self.codec.rotation.T

    def _ref_tokens(self, ref: DocRef) -> int:
        return len(ref.vectors) if ref.vectors is not None else int(ref.segment.arrays["doclens"][ref.row])

    # ------------------------------------------------------------------ writing
    def _append(self, manifest: dict[str, Any], docs: list[DocRef]) -> None:
        if self.codec is not None:
            manifest["segments"] += [self._compressed_segment(manifest, part, self.codec, post=True)
                                     for part in self._capped(manifest, docs)]
            self._merge_tiers(manifest)
            return
        # untrained: keep raw unless this add reaches train_tokens
        taken = {d.id for d in docs}
        survivors = [r for r in self._live_refs() if r.id not in taken]
        n_tokens = sum(self._ref_tokens(d) for d in docs) + sum(self._ref_tokens(r) for r in survivors)
        if n_tokens >= int(manifest["config"]["train_tokens"]):
            self._train_into(manifest, survivors + docs)
        else:
            manifest["segments"].append(self._raw_segment(manifest, docs))

    def _rewrite(self, manifest: dict[str, Any], refs: list[DocRef]) -> None:
        if self.codec is not None:
            manifest["segments"] += [self._compressed_segment(manifest, part, self.codec, post=None)
                                     for part in self._capped(manifest, refs)]
        else:
            manifest["segments"].append(self._raw_segment(manifest, refs))

    def _capped(self, manifest: dict[str, Any], docs: list[DocRef]) -> list[list[DocRef]]:
        """``docs`` in order, cut into runs of at most ``max_segment_tokens`` tokens (a longer document alone)."""
        cap = segment_cap(manifest)
        parts: list[list[DocRef]] = [[]]
        held = 0
        for d in docs:
            n = self._ref_tokens(d)
            if parts[-1] and held + n > cap:
                parts.append([])
                held = 0
            parts[-1].append(d)
            held += n
        return [p for p in parts if p]

    def _raw_segment(self, manifest: dict[str, Any], docs: list[DocRef]) -> dict[str, Any]:
        vecs = [self._ref_vectors(d) for d in docs]
        arrays = {"doclens": np.array([len(v) for v in vecs], dtype=np.int32),
                  "vectors": np.concatenate(vecs).astype(np.float16)}
        return self._new_segment(manifest, docs, arrays, {"compressed": False, "n_tokens": int(sum(map(len, vecs)))})

    def _training_sample(self, refs: list[DocRef], n_tokens: int, n_centroids: int, seed: int) -> np.ndarray:
        """A random sample of the token vectors of ``refs`` (k-means and residual statistics need no more)."""
        want = min(n_tokens, max(n_centroids * MAX_POINTS_PER_CENTROID, RESIDUAL_SAMPLE))
        rng = np.random.default_rng(seed)
        share = want / n_tokens
        picked, have = [], 0
        for i in rng.permutation(len(refs)):
            v = self._ref_vectors(refs[i])
            take = v if share >= 1 else v[rng.random(len(v)) < share * 1.05]
            picked.append(take)
            have += len(take)
            if have >= want:
                break
        sample = np.concatenate(picked)
        return sample if len(sample) <= want else sample[np.sort(rng.choice(len(sample), want, replace=False))]

    def _train_into(self, manifest: dict[str, Any], refs: list[DocRef]) -> None:
        """Train a codec on a sample of ``refs`` and replace every segment by compressed segments of them."""
        t0 = time.perf_counter()
        cfg = manifest["config"]
        n_tokens = sum(self._ref_tokens(r) for r in refs)
        if n_tokens < 16:
            raise InvalidInputError(f"cannot train on {n_tokens} token vectors; add more documents first")
        n_centroids = choose_n_centroids(n_tokens, float(cfg["centroids_factor"]))
        sample = self._training_sample(refs, n_tokens, n_centroids, int(cfg["seed"]))
        codec = ResidualCodec.train(sample, nbits=float(cfg["nbits"]), n_centroids=n_centroids,
                                    seed=int(cfg["seed"]), scheme=cfg.get("codec", "scalar"))
        del sample
        uid = new_uid()
        files = {}
        for key, array in codec.arrays().items():
            files[key] = f"codec-{uid}.{key}.npy"
            save_array(self.path / files[key], array)
        # rows of the old codec must be decoded with it: copy them as vectors (see _compressed_segment)
        entries = [self._compressed_segment(manifest, part, codec, post=False) for part in self._capped(manifest, refs)]
        tokens, docs = sum(e["n_tokens"] for e in entries), sum(e["n_docs"] for e in entries)
        manifest["codec"] = {
            "files": files, "layout": LAYOUT_VERSION, "nbits": codec.nbits, "normalize": codec.normalize,
            "n_centroids": codec.n_centroids, "scheme": codec.scheme, "trained_tokens": tokens, "trained_docs": docs,
            "train_residual_mean": sum(e["residual_sum"] for e in entries) / max(tokens, 1), "trained_at": time.time(),
        }
        manifest["segments"] = entries
        log.info("trained %d centroids on a sample for %d tokens of %d documents in %.1f s", codec.n_centroids,
                 tokens, docs, time.perf_counter() - t0)

    def _compressed_segment(self, manifest: dict[str, Any], docs: list[DocRef], codec: ResidualCodec,
                            post: bool | None) -> dict[str, Any]:
        """Write ``docs`` as one compressed segment: rows of compressed segments of ``codec`` are copied
        (``post=None`` keeps their flags), everything else is encoded in batches of :data:`ENCODE_BATCH` tokens."""
        keep = bool(manifest["config"]["keep_originals"])
        same_codec = codec is self.codec
        copies: dict[int, list[int]] = {}  # id(segment) -> positions in docs
        segs: dict[int, Segment] = {}
        fresh: list[int] = []
        for i, d in enumerate(docs):
            seg = d.segment
            if d.vectors is None and same_codec and seg is not None and seg.entry.get("compressed") and \
                    (not keep or "vectors" in seg.arrays):
                copies.setdefault(id(seg), []).append(i)
                segs[id(seg)] = seg
            else:
                fresh.append(i)
        parts, order = [], []
        for key, positions in copies.items():
            seg = segs[key]
            rows = np.array([docs[i].row for i in positions], dtype=np.int64)
            arrays = seg.arrays
            if post is not None:
                arrays = {**arrays, "post": np.full(seg.n_docs, int(post), dtype=np.uint8)}
            parts.append((arrays, rows))
            order += positions
        if fresh:
            parts.append((self._encode_docs([docs[i] for i in fresh], codec, keep, 1 if post is None else int(post)),
                          np.arange(len(fresh))))
            order += fresh
        if len(parts) == 1 and not copies:  # one freshly encoded part, in order: nothing to gather (no copy)
            arrays = parts[0][0]
            arrays.update(layout.bags_and_lists(arrays["doclens"], arrays["cids"], codec.n_centroids))
        else:
            arrays = layout.gather_rows(parts, codec.n_centroids, extra_token=("vectors",) if keep else ())
        n_tokens = int(arrays["doclens"].sum())
        return self._new_segment(manifest, [docs[i] for i in order], arrays, {
            "compressed": True, "n_tokens": n_tokens, "residual_sum": float(arrays["rnorm"].sum())})

    def _encode_docs(self, docs: list[DocRef], codec: ResidualCodec, keep: bool, post: int) -> dict[str, np.ndarray]:
        """Encode documents in streaming batches; the arrays of a compressed segment holding them."""
        doclens = np.array([self._ref_tokens(d) for d in docs], dtype=np.int32)
        tok_off = layout.offsets(doclens)
        n = int(tok_off[-1])
        # filled in place, batch by batch: the segment's arrays are the only full-size allocation
        arrays = {"doclens": doclens, "cids": np.empty(n, dtype=codec.cid_dtype),
                  "codes": np.empty((n, codec.n_bytes), dtype=np.uint8), "rnorm": np.zeros(len(docs), np.float32),
                  "post": np.full(len(docs), post, dtype=np.uint8)}
        if codec.normalize:
            arrays["norms"] = np.empty(n, dtype=np.uint8)
        if keep:
            arrays["vectors"] = np.empty((n, self.dim), dtype=np.float16)
        i = 0
        while i < len(docs):
            j = i + max(1, int(np.searchsorted(np.cumsum(doclens[i:]), ENCODE_BATCH, side="right")))
            a, b = int(tok_off[i]), int(tok_off[j])
            flat = np.concatenate([self._ref_vectors(d) for d in docs[i:j]])
            c, k = codec.encode(flat)
            arrays["cids"][a:b], arrays["codes"][a:b] = c, k
            if codec.normalize:
                arrays["norms"][a:b] = codec.norm_codes(c, k)
            resid = codec.residual_norms(flat, c)
            arrays["rnorm"][i:j] = np.add.reduceat(resid, tok_off[i:j] - a)
            if keep:
                arrays["vectors"][a:b] = flat
            i = j
        return arrays

    def _merge_tiers(self, manifest: dict[str, Any]) -> None:
        """Merge the :data:`MERGE_FANOUT` smallest compressed segments of a size tier once that many exist and
        their tokens fit in ``max_segment_tokens`` (live rows only)."""
        cap = segment_cap(manifest)
        while True:
            tiers: dict[int, list[int]] = {}
            size = {i: max(int(e["n_tokens"]), 1) for i, e in enumerate(manifest["segments"]) if e.get("compressed")}
            for i, n in size.items():
                tiers.setdefault(max(0, int(math.log(n / MERGE_BASE, MERGE_FANOUT))), []).append(i)
            full = [sorted(m, key=size.get)[:MERGE_FANOUT] for m in tiers.values() if len(m) >= MERGE_FANOUT]
            full = [m for m in full if sum(size[i] for i in m) <= cap]
            if not full:
                return
            members = sorted(full[0])
            entries = [manifest["segments"][i] for i in members]
            segments = [open_segment(self.path, e) for e in entries]
            refs = [DocRef(seg.ids[r], seg.text(r), seg.metadata[r], segment=seg, row=int(r))
                    for seg in segments for r in np.flatnonzero(seg.live)]
            merged = self._compressed_segment(manifest, refs, self.codec, post=None) if refs else None
            manifest["segments"] = [e for i, e in enumerate(manifest["segments"]) if i not in set(members)]
            if merged is not None:
                manifest["segments"].append(merged)
            log.debug("merged %d segments (%d documents)", len(members), len(refs))

    def retrain(self) -> dict[str, Any]:
        """Re-learn centroids and codec from a sample of all live documents and re-encode them into one segment.

        Reads the float16 originals when the index keeps them, otherwise the decompressed
        vectors (precision then stays bounded by the old codes; rebuilding from the source
        documents is better). On an untrained index it trains now.
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
    def _plaid_view(self, seg: Segment, allowed: np.ndarray) -> dict[str, Any]:
        norms = seg.arrays.get("norms")
        inv = None if norms is None else self.codec.inverse_norm_table()
        return {"bags": seg.arrays["bags"], "bag_off": seg.arrays["bag_off"], "ivf": seg.arrays["ivf"],
                "ivf_off": seg.arrays["ivf_off"], "tok_off": self._offsets(seg), "allowed": allowed,
                "cids": seg.arrays["cids"], "codes": seg.arrays["codes"], "norms": norms, "inv_norm": inv,
                "inverse_norms": None if norms is None else lambda idx: inv[np.asarray(norms[idx], dtype=np.intp)]}

    def _exhaustive(self, seg: Segment, rows: np.ndarray, query: np.ndarray, rotated: np.ndarray | None,
                    exact: bool) -> np.ndarray:
        """MaxSim of ``rows`` over stored originals (raw segments, or exact with originals) or decoded vectors."""
        if "vectors" in seg.arrays and (exact or not seg.entry.get("compressed")):
            vec = seg.arrays["vectors"]
            return maxsim_ragged(self._offsets(seg), rows, lambda idx: query @ np.asarray(vec[idx], np.float32).T)
        cids, codes, norms = seg.arrays["cids"], seg.arrays["codes"], seg.arrays.get("norms")
        return maxsim_ragged(self._offsets(seg), rows, lambda idx: rotated @ self.codec.decode(
            cids[idx], codes[idx], None if norms is None else norms[idx]).T)

    def _settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name in ("nprobe", "ncandidates", "nrerank"):
            value = settings[name]
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
            out[name] = int(value)
        threshold = settings["threshold"]
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise InvalidInputError(f"threshold must be a finite number, got {threshold!r}")
        out["threshold"] = float(threshold)
        if settings["lookup_dtype"] not in plaid.LOOKUP_DTYPES:
            raise InvalidInputError(f"lookup_dtype must be one of {plaid.LOOKUP_DTYPES}, got {settings['lookup_dtype']!r}")
        out["lookup_dtype"] = settings["lookup_dtype"]
        return out

    def _search_many(self, queries: list[np.ndarray], k: int, allowed: list[np.ndarray], exact: bool,
                     settings: dict[str, Any], timings: dict[str, float] | None = None
                     ) -> list[list[tuple[int, int, float]]]:
        opts = self._settings(settings)
        lookup_dtype = opts.pop("lookup_dtype")
        opts["ncandidates"] = max(opts["ncandidates"], k)
        opts["nrerank"] = min(max(opts["nrerank"], k), opts["ncandidates"])
        rotated, scores_t, tables = [None] * len(queries), [None] * len(queries), [None] * len(queries)
        if self.codec is not None:
            with plaid.stage(timings, "centroid_scores"):
                lens = np.cumsum([0] + [len(q) for q in queries])
                all_rot = matmul(np.concatenate(queries), self.codec.rotation)  # codec.rotate, on torch's threads
                rotated = [all_rot[a:b] for a, b in itertools.pairwise(lens)]
                # (n_centroids, q) per query, one GEMM each: one GEMM for the batch sliced per query took 5.8 ms a
                # query against 2.6 (16,384 centroids, batches of 32; its result passes the caches)
                scores_t = [matmul(self.codec.centroids, r.T) for r in rotated]
            if not exact and any(seg.entry.get("compressed") for seg in self._segments):
                with plaid.stage(timings, "tables"):
                    tables = [plaid.lookup_tables(*self.codec.query_tables(r), dtype=lookup_dtype) for r in rotated]
        views = {s: self._plaid_view(seg, allowed[s]) for s, seg in enumerate(self._segments)
                 if seg.entry.get("compressed") and not exact}
        def one(i: int) -> tuple[list[tuple[int, int, float]], dict[str, float] | None]:
            mine = None if timings is None else {}
            parts = []
            for s in (s for s in range(len(self._segments)) if s not in views):
                rows = np.flatnonzero(allowed[s])
                if len(rows):
                    with plaid.stage(mine, "rerank"):
                        parts.append((s, rows, self._exhaustive(self._segments[s], rows, queries[i], rotated[i],
                                                                exact)))
            if views:
                order = list(views)
                found = plaid.search([views[s] for s in order], tables[i], scores_t[i], k, timings=mine,
                                     threads=threads, **opts)
                parts += [(order[j], rows, scores) for j, rows, scores in found]
            best = plaid.select(parts, k)
            if not best:
                return [], mine
            seg = np.concatenate([np.full(len(r), s) for s, r, _ in best])
            rows = np.concatenate([r for _, r, _ in best])
            scores = np.concatenate([v for *_, v in best])
            return [(int(seg[j]), int(rows[j]), float(scores[j])) for j in top_k(scores, k)], mine

        import torch

        workers = max(1, min(len(queries), torch.get_num_threads()))
        threads = max(1, torch.get_num_threads() // workers)  # each query's native stages
        results = self._map_queries(one, len(queries), workers)
        for _, mine in results:
            for name, seconds in (mine or {}).items():
                timings[name] = timings.get(name, 0.0) + seconds
        return [hits for hits, _ in results]

    @staticmethod
    def _map_queries(fn: Any, n: int, workers: int) -> list[Any]:
        """``[fn(i) for i in range(n)]``, on ``workers`` threads (the stages release the GIL: numpy's gathers
        and reductions, mm's native kernels)."""
        if workers <= 1:
            return [fn(i) for i in range(n)]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers, thread_name_prefix="mm-search") as pool:
            return list(pool.map(fn, range(n)))

    def _search_one(self, query: np.ndarray, k: int, allowed: list[np.ndarray], exact: bool,
                    settings: dict[str, Any]) -> list[tuple[int, int, float]]:
        return self._search_many([query], k, allowed, exact, settings)[0]

    def search_timed(self, queries: list[Any], k: int = 10, **options: Any) -> tuple[list[list[Hit]], dict[str, float]]:
        """:meth:`search_batch` (no filters) plus the seconds spent in each stage (:data:`mm.index.plaid.STAGES`)."""
        from mm.errors import check_options

        check_options(options, self.search_options, f"{type(self).__name__}.search_timed()")
        k = self._check_k(k)
        qs = [self._check_query(q) for q in queries]
        self.refresh()
        timings: dict[str, float] = {}
        scored = self._search_many(qs, k, self._allowed(None), False, {**self.search_options, **options}, timings)
        return [[self._hit(s, r, sc) for s, r, sc in hits] for hits in scored], timings

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
        shared = self._manifest["config"].get("codec_from")
        if token_growth > TOKEN_GROWTH_LIMIT and not shared:  # a shared codec's sample is smaller by design
            reasons.append(f"the index grew x{token_growth:.1f} since the centroids were trained")
        if shared and reasons:
            reasons.append(f"the codec is shared with {shared}: retrain it there and rebuild every shard with "
                           "it (a retrain() of this shard alone stops its scores merging exactly)")
        return {"trained": True, "trained_tokens": int(entry["trained_tokens"]),
                "tokens_added_after_training": post_tokens,
                "share_added_after_training": post_tokens / live_tokens if live_tokens else 0.0,
                "residual_norm_training": base,
                "residual_norm_growth": growth, "token_growth": token_growth, "reasons": reasons}
