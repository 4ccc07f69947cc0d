"""Where recall is lost: recall@10 of an index kept by ``search_index.py --scale N --keep PATH`` per search setting.

Regenerates the first ``--queries`` queries of that run and their exhaustive top 10, then
prints one JSON object: recall and CPU ms per query for ``exact=True`` (every document on
decoded vectors: the compression's own limit) and for shortlist settings.

    python benchmarks/search_index.py --scale 1M --queries 100 --keep /tmp/ix1m
    python benchmarks/search_index_diag.py /tmp/ix1m --scale 1M --queries 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> None:
    from mm.index import open_index
    from search_index import parse_scale
    from token_corpus import TokenCorpus

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("index", type=Path)
    parser.add_argument("--scale", default="1M")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--sample", type=int, default=100, help="query sample size of the run that built the index")
    args = parser.parse_args(argv)
    corpus = TokenCorpus(max(1, round(parse_scale(args.scale) / 175)), dim=128, seed=0)
    rng = np.random.default_rng(0)
    sources = np.sort(rng.choice(corpus.n_docs, size=min(args.sample, corpus.n_docs), replace=False))[:args.queries]
    queries = [corpus.query(int(i)) for i in sources]
    best = [np.full(10, -np.inf)] * len(queries)
    ids = [np.zeros(10, np.int64)] * len(queries)
    for start in range(0, corpus.n_docs, 1024):  # streaming exhaustive top 10
        docs = corpus.docs(start, start + 1024)
        flat, starts = np.concatenate(docs), np.cumsum([0] + [len(d) for d in docs[:-1]])
        for j, q in enumerate(queries):
            s = np.concatenate([best[j], np.maximum.reduceat(q @ flat.T, starts, axis=1).sum(0)])
            i = np.concatenate([ids[j], np.arange(start, start + len(docs))])
            top = np.argsort(-s, kind="stable")[:10]
            best[j], ids[j] = s[top], i[top]
    truth = [set(t.tolist()) for t in ids]
    index = open_index(args.index)
    out = []
    for options in ({"exact": True}, {}, {"ncandidates": 4096, "nrerank": 1024, "threshold": -9.0},
                    {"ncandidates": 1024, "nrerank": 512}, {"threshold": 0.6}, {"ncandidates": 512, "nrerank": 128}):
        c = time.process_time()
        recall = np.mean([len({int(h.id) for h in index.search(q, k=10, **options)} & t) / 10
                          for q, t in zip(queries, truth, strict=True)])
        out.append({"options": options, "recall@10": round(float(recall), 3),
                    "cpu_ms_per_query": round((time.process_time() - c) / len(queries) * 1000, 1)})
    json.dump({"index": str(args.index), "queries": len(queries), "settings": out}, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
