"""Residual codes compared at equal bytes: recall@10 of MaxSim on decoded vectors vs exhaustive float32 MaxSim.

The ceiling a multi-vector index can reach whatever its candidate stages do
(``search(..., exact=True)`` scores exactly this): every document is scored on its decoded
token vectors. All codecs share one set of k-means centroids (trained on a random sample
of ``32 x n_centroids`` tokens, as the index does) and the corpus's centroid ids, so only
the residual code differs. Codes compared (``--codecs``, ``scheme:nbits[:nonorm]``):
``scalar`` (per-axis 4/2/1/0-bit buckets), ``pq`` (one 256-entry codebook per group of
rotated axes); ``nbits`` counts the norm byte of unit-norm codecs; ``nonorm`` spends that
byte on the code and scores decoded vectors without renormalising them. Per codec and
way of renormalising (``norm_byte`` as search does, ``exact`` by the decoded vector's own
norm, ``none``): recall@10 and, on SciFact, nDCG@10; code bytes per token, training and
encoding seconds. Prints one JSON object with CPU capability, threads and load average.

    python benchmarks/search_codecs.py                       # full SciFact x 384 (cached MiniLM tokens)
    python benchmarks/search_codecs.py --scale 1M            # synthetic 1M tokens x 128
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT_CODECS = {384: ["scalar:1.75", "pq:1.75", "pq:1.75:nonorm", "pq:1.5", "pq:2"],
                  128: ["scalar:2", "pq:2", "pq:2:nonorm", "pq:1.5"]}


def scifact_corpus(n_queries: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], Any]:
    """Tokens, document starts, test queries and an nDCG@10 function of doc-row rankings (cached MiniLM)."""
    from search_index import TokenEncoder, doc_text, load_scifact, ndcg_at_10, select_docs, shared_dir

    corpus, queries, qrels = load_scifact(shared_dir() / "data" / "scifact")
    docs = select_docs(corpus, qrels, 0)
    encoder = TokenEncoder(Path(os.environ.get("MM_BENCH_CACHE", Path.home() / ".cache" / "mm" / "bench")))
    qids = list(queries)
    qvecs = encoder.encode([queries[q] for q in qids], "query")
    dvecs = encoder.encode([doc_text(d) for d in docs], "doc")
    tokens = np.concatenate(dvecs)
    starts = np.cumsum([0] + [len(v) for v in dvecs[:-1]])
    ids = [d["_id"] for d in docs]
    pick = np.linspace(0, len(qids) - 1, min(n_queries, len(qids))).round().astype(int)  # spread over the set

    def ndcg(rankings: list[np.ndarray]) -> float:
        return round(float(np.mean([ndcg_at_10([ids[i] for i in r], qrels[qids[q]])
                                    for q, r in zip(pick, rankings, strict=True)])), 4)

    return tokens, starts, [qvecs[i] for i in pick], ndcg


def synthetic_corpus(n_tokens: int, n_queries: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], None]:
    """The corpus and query sample of ``search_index.py --scale`` (same seed), in memory."""
    from token_corpus import TokenCorpus

    corpus = TokenCorpus(max(1, round(n_tokens / 175)), dim=128, seed=0)
    rng = np.random.default_rng(0)
    sources = np.sort(rng.choice(corpus.n_docs, size=min(n_queries, corpus.n_docs), replace=False))
    docs = corpus.docs(0, corpus.n_docs)
    starts = np.cumsum([0] + [len(d) for d in docs[:-1]])
    return np.concatenate(docs), starts, [corpus.query(int(i)) for i in sources], None


def maxsim_top(queries: list[np.ndarray], starts: np.ndarray, n_tokens: int, chunk_fn, k: int = 10,
               chunk: int = 32768) -> dict[str, np.ndarray]:
    """Top ``k`` document rows per query and mode; ``chunk_fn(t0, t1)`` -> (vectors, {mode: token scale or None})."""
    qcat = np.concatenate(queries)
    qoff = np.cumsum([0] + [len(q) for q in queries[:-1]])
    ends = np.append(starts[1:], n_tokens)
    scores: dict[str, list[np.ndarray]] = {}
    d0 = 0
    while d0 < len(starts):
        d1 = max(d0 + 1, int(np.searchsorted(ends, starts[d0] + chunk, side="right")))
        t0, t1 = int(starts[d0]), int(ends[d1 - 1])
        vectors, modes = chunk_fn(t0, t1)
        sims = qcat @ vectors.T
        for mode, scale in modes.items():
            s = sims * scale if scale is not None else sims
            best = np.maximum.reduceat(s, starts[d0:d1] - t0, axis=1)
            scores.setdefault(mode, []).append(np.add.reduceat(best, qoff, axis=0))
        d0 = d1
    return {mode: np.argsort(-np.concatenate(parts, axis=1), axis=1, kind="stable")[:, :k]
            for mode, parts in scores.items()}


def compare(tokens: np.ndarray, starts: np.ndarray, queries: list[np.ndarray], ndcg, specs: list[str],
            seed: int = 0) -> dict:
    """Exhaustive truth, shared centroids, then every codec of ``specs``; see the module docstring."""
    from mm.index.codec import MAX_POINTS_PER_CENTROID, ResidualCodec, assign, choose_n_centroids, kmeans

    n = len(tokens)
    t = time.perf_counter()
    truth = maxsim_top(queries, starts, n, lambda a, b: (tokens[a:b], {"float32": None}))["float32"]
    exhaustive_s = time.perf_counter() - t
    k = choose_n_centroids(n)
    rng = np.random.default_rng(seed)
    sample = tokens[np.sort(rng.choice(n, min(n, k * MAX_POINTS_PER_CENTROID), replace=False))]
    t = time.perf_counter()
    centroids = kmeans(sample, k, seed=seed)
    cids = np.concatenate([assign(tokens[s:s + 65536], centroids) for s in range(0, n, 65536)])
    out = {"tokens": n, "docs": len(starts), "dim": tokens.shape[1], "queries": len(queries), "n_centroids": k,
           "centroids_and_assignment_s": round(time.perf_counter() - t, 1),
           "exhaustive_float32_s": round(exhaustive_s, 1), "codecs": []}
    if ndcg is not None:
        out["ndcg@10_float32"] = ndcg(truth)
    for spec in specs:
        scheme, nbits, *flag = spec.split(":")
        t = time.perf_counter()
        codec = ResidualCodec.train(sample, nbits=float(nbits), scheme=scheme, seed=seed, centroids=centroids,
                                    renormalize=False if flag == ["nonorm"] else None)
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        codes = np.concatenate([codec._codes(np.ascontiguousarray(codec.rotate(tokens[s:s + 65536])
                                                                  - codec.centroids[cids[s:s + 65536]]))
                                for s in range(0, n, 65536)])
        norms = codec.norm_codes(cids, codes) if codec.normalize else None
        encode_s = time.perf_counter() - t

        def decoded(a: int, b: int, codec=codec, codes=codes, norms=norms) -> tuple[np.ndarray, dict]:
            v = codec.decode(cids[a:b], codes[a:b])  # renormalised by the exact norm when the codec renormalises
            if not codec.normalize:
                return v, {"none": None}
            raw = codec.decode_residuals(codes[a:b]) + codec.centroids[cids[a:b].astype(np.intp)]
            exact_inv = 1.0 / np.maximum(np.linalg.norm(raw, axis=1), 1e-12)
            return raw, {"norm_byte": codec.inverse_norms(norms[a:b]), "exact": exact_inv, "none": None}

        rotated = [codec.rotate(q) for q in queries]
        t = time.perf_counter()
        tops = maxsim_top(rotated, starts, n, decoded)
        row = {"codec": spec, "code_bytes_per_token": codec.n_bytes + int(codec.normalize),
               "nbits": round(codec.nbits, 3), "train_s": round(train_s, 1), "encode_codes_s": round(encode_s, 1),
               "score_s": round(time.perf_counter() - t, 1), "recall@10": {}, "ndcg@10": {}}
        for mode, top in tops.items():
            row["recall@10"][mode] = round(float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, truth,
                                                                                                  strict=True)])), 4)
            if ndcg is not None:
                row["ndcg@10"][mode] = ndcg(top)
        out["codecs"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    from search_index import machine, parse_scale

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", default=None, help="synthetic corpus of this many 128-d tokens (default SciFact)")
    parser.add_argument("--queries", type=int, default=100, help="queries (SciFact: spread over the 300 test queries)")
    parser.add_argument("--codecs", nargs="*", default=None, help="scheme:nbits[:nonorm] (default: see DEFAULT_CODECS)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        before = machine()
        if args.scale:
            tokens, starts, queries, ndcg = synthetic_corpus(parse_scale(args.scale), args.queries)
        else:
            tokens, starts, queries, ndcg = scifact_corpus(args.queries)
        result = compare(tokens, starts, queries, ndcg, args.codecs or DEFAULT_CODECS[tokens.shape[1]])
    result.update({"dataset": f"synthetic {args.scale}" if args.scale else "scifact (MiniLM tokens, all documents)",
                   "machine": before, "load_average_after": [round(x, 2) for x in os.getloadavg()]})
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
