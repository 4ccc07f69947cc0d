"""Search benchmark: the compressed multi-vector index vs exhaustive MaxSim on SciFact, and encoder throughput.

Prints one JSON object with

* ``index``: from ``benchmarks/search_index.py`` (MiniLM token vectors of SciFact): bytes per token,
  build time, p50/p95 query latency, recall@10 against exhaustive float32 MaxSim and nDCG@10, for
  the 2- and 4-bit indexes and the exhaustive baseline measured in the same run, with ratios;
* ``encoder``: documents/s (and tokens/s) of the full-size LFM2-ColBERT-350M architecture with random
  weights (speed does not depend on weight values) through mm's ColBERT encoder: length-sorted
  batches vs. one document at a time (the baseline, same run), plus query encoding and MiniLM for
  reference. Documents are SciFact abstracts; their token counts come from the tiny test tokenizer
  (a random checkpoint ships no real vocabulary), reported as ``mean_doc_tokens``.

    python benchmarks/search.py --quick     # 600 documents for the index, 16 for the encoder
    python benchmarks/search.py             # 1,024 documents / 64 for the encoder
    python benchmarks/search.py --docs 0    # the full corpus for the index part
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _index_benchmark():
    spec = importlib.util.spec_from_file_location("search_index_bench", REPO / "benchmarks" / "search_index.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scifact_texts(n: int) -> list[str]:
    bench = _index_benchmark()
    corpus, _, _ = bench.load_scifact(bench.shared_dir() / "data" / "scifact")
    return [bench.doc_text(d) for d in corpus[:n]]


def _rate(fn, items: list[str], repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn(items)
        best = min(best, time.perf_counter() - t)
    return len(items) / best


def encoder_throughput(n_docs: int, threads: int | None) -> dict[str, Any]:
    """Documents/s of full-size LFM2-ColBERT-350M (random weights) and MiniLM on SciFact abstracts."""
    import torch
    from mm.encoders.colbert import ColBERTEncoder
    from mm.encoders.dense import DenseEncoder, minilm_path

    from mm.testing import make_tiny_colbert

    texts = _scifact_texts(n_docs)
    out: dict[str, Any] = {"docs": len(texts), "threads": torch.get_num_threads() if threads is None else threads}
    with tempfile.TemporaryDirectory(prefix="mm-colbert-350m-") as tmp:
        t = time.perf_counter()
        path = make_tiny_colbert(Path(tmp) / "ckpt", full_size=True, document_length=512, query_length=32)
        out["checkpoint_write_s"] = round(time.perf_counter() - t, 1)
        enc = ColBERTEncoder.from_pretrained(path, threads=threads, batch_size=16)
        n_params = sum(p.numel() for p in enc.backbone.parameters())
        lengths = [len(ids) for ids in enc.tokenize(texts, is_query=False).ids]
        enc.encode_documents(texts[:2])  # warm-up
        batched = _rate(enc.encode_documents, texts)
        one_by_one = _rate(lambda items: [enc.encode_documents([x], batch_size=1) for x in items], texts)
        queries = [t.split(".")[0][:120] for t in texts]
        query_rate = _rate(enc.encode_queries, queries)
        mean_tokens = sum(lengths) / len(lengths)
        out["lfm2_colbert_350m_random"] = {
            "parameters": n_params, "dim": enc.dim, "mean_doc_tokens": round(mean_tokens, 1),
            "docs_per_s_batched": round(batched, 4), "tokens_per_s_batched": round(batched * mean_tokens, 1),
            "docs_per_s_one_by_one_baseline": round(one_by_one, 4),
            "queries_per_s": round(query_rate, 3),
            "ratio_batched_vs_one_by_one": round(batched / one_by_one, 3),
        }
    mini = DenseEncoder.from_pretrained(minilm_path(), threads=threads)
    mini.encode_documents(texts[:2])
    out["minilm_dense"] = {"docs_per_s": round(_rate(mini.encode_documents, texts), 3)}
    out["ratio_lfm2_colbert_vs_minilm_docs_per_s"] = round(
        out["lfm2_colbert_350m_random"]["docs_per_s_batched"] / out["minilm_dense"]["docs_per_s"], 4)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="600 index documents, 16 encoder documents")
    parser.add_argument("--docs", type=int, default=None, help="index documents (0 = the full 5,183)")
    parser.add_argument("--encoder-docs", type=int, default=None, help="documents for encoder throughput")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: MM_NUM_THREADS or all)")
    parser.add_argument("--skip-index", action="store_true", help="only the encoder throughput")
    parser.add_argument("--skip-encoder", action="store_true", help="only the index figures")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mm.runtime import configure_torch

    configure_torch(args.threads)
    result: dict[str, Any] = {"benchmark": "search", "quick": args.quick}
    t0 = time.perf_counter()
    if not args.skip_index:
        n_docs = args.docs if args.docs is not None else (600 if args.quick else 1024)
        result["index"] = _index_benchmark().run(n_docs=n_docs)
    if not args.skip_encoder:
        n_enc = args.encoder_docs or (16 if args.quick else 64)
        result["encoder"] = encoder_throughput(n_enc, args.threads)
    result["total_s"] = round(time.perf_counter() - t0, 1)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
