"""Where recall and time go: recall@10 of a kept index per search setting, against exhaustive float32 MaxSim.

Synthetic (an index kept by ``search_index.py --scale N --keep PATH``): regenerates the
first ``--queries`` queries of that run and their exhaustive top 10. SciFact (``--scifact``,
an index kept by ``search_index.py --keep PATH``): the cached MiniLM token embeddings of
the same documents and test queries, exhaustive top 10 computed once. Prints one JSON
object: per setting, recall@10, wall and CPU ms per query (queries one at a time) and ms
per query in each search stage; ``exact=True`` (every document scored on decoded vectors)
is the compression's own limit.

    python benchmarks/search_index.py --scale 1M --queries 100 --keep /tmp/ix1m
    python benchmarks/search_index_diag.py /tmp/ix1m --scale 1M --queries 20
    python benchmarks/search_index.py --keep /tmp/ixsf
    python benchmarks/search_index_diag.py /tmp/ixsf --scifact --queries 100 --sweep
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: settings compared by default, and by --sweep (candidate stages of the PLAID search)
SETTINGS = [{"exact": True}, {}, {"ncandidates": 4096, "nrerank": 1024, "threshold": -9.0},
            {"ncandidates": 1024, "nrerank": 512}, {"threshold": 0.6}, {"ncandidates": 512, "nrerank": 128}]
SWEEP = [{"exact": True}, {}, {"nrerank": 512}, {"nrerank": 128}, {"nrerank": 64}, {"ncandidates": 512},
         {"ncandidates": 256, "nrerank": 128}, {"nprobe": 2}, {"nprobe": 8}, {"threshold": 0.5}, {"threshold": 0.6},
         {"threshold": 0.3}]


def synthetic(scale: str, n_queries: int, sample: int, index_path: Path | None = None
              ) -> tuple[list[np.ndarray], list[set[int]]]:
    """Queries of a ``--scale`` run and their exhaustive top 10: read from the ``.truth.npz`` that
    ``search_index.py --keep`` wrote beside ``index_path`` when there is one, else streamed again."""
    from search_index import parse_scale, truth_path
    from token_corpus import TokenCorpus

    corpus = TokenCorpus(max(1, round(parse_scale(scale) / 175)), dim=128, seed=0)
    if index_path is not None and truth_path(index_path).exists():
        with np.load(truth_path(index_path)) as data:
            if int(data["n_docs"]) != corpus.n_docs:
                raise SystemExit(f"{truth_path(index_path)} was made for another --scale")
            sources, ids = data["sources"][:n_queries], data["best_ids"][:n_queries]
        return [corpus.query(int(i)) for i in sources], [set(t[:10].tolist()) for t in ids]
    rng = np.random.default_rng(0)
    sources = np.sort(rng.choice(corpus.n_docs, size=min(sample, corpus.n_docs), replace=False))[:n_queries]
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
    return queries, [set(t.tolist()) for t in ids]


def scifact(n_queries: int, n_docs: int) -> tuple[list[np.ndarray], list[set[int]]]:
    """SciFact test queries (cached MiniLM tokens, as search_index.run) and their exhaustive top 10 doc rows."""
    import os

    from search_index import TokenEncoder, doc_text, exhaustive_maxsim, load_scifact, select_docs, shared_dir

    corpus, queries, qrels = load_scifact(shared_dir() / "data" / "scifact")
    docs = select_docs(corpus, qrels, n_docs)
    encoder = TokenEncoder(Path(os.environ.get("MM_BENCH_CACHE", Path.home() / ".cache" / "mm" / "bench")))
    qvecs = encoder.encode(list(queries.values()), "query")[:n_queries]
    dvecs = encoder.encode([doc_text(d) for d in docs], "doc")
    tokens = np.concatenate(dvecs)
    starts = np.cumsum([0] + [len(v) for v in dvecs[:-1]])
    del dvecs
    truth = [set(np.argsort(-exhaustive_maxsim(q, tokens, starts))[:10].tolist()) for q in qvecs]
    return qvecs, truth


def measure(index, queries: list[np.ndarray], truth: list[set[int]], options: dict) -> dict:
    """Recall@10, wall / CPU ms per query (one at a time) and stage ms per query of one setting."""
    t, c = time.perf_counter(), time.process_time()
    found = [index.search(q, k=10, **options) for q in queries]
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    out = {"options": options,
           "recall@10": round(float(np.mean([len({int(h.id) for h in hs} & t) / 10
                                            for hs, t in zip(found, truth, strict=True)])), 3),
           "wall_ms_per_query": round(wall / len(queries) * 1000, 1),
           "cpu_ms_per_query": round(cpu / len(queries) * 1000, 1)}
    if not options.get("exact"):
        stages: dict[str, float] = {}
        for q in queries:
            for key, value in index.search_timed([q], k=10, **options)[1].items():
                stages[key] = stages.get(key, 0.0) + value
        out["stage_ms_per_query"] = {key: round(v / len(queries) * 1000, 1) for key, v in stages.items()}
    return out


def main(argv: list[str] | None = None) -> None:
    import os

    from mm.index import open_index
    from search_index import machine

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("index", type=Path)
    parser.add_argument("--scale", default="1M")
    parser.add_argument("--scifact", action="store_true", help="the index holds SciFact (search_index.py --keep)")
    parser.add_argument("--docs", type=int, default=0, help="--scifact: the --docs of the run that built it")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--sample", type=int, default=100, help="query sample size of the run that built the index")
    parser.add_argument("--sweep", action="store_true", help="compare the candidate-stage settings of SWEEP")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--settings", default=None,
                        help='JSON list of search options to compare instead, e.g. \'[{}, {"nrerank": 128}]\'')
    args = parser.parse_args(argv)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        if args.scifact:
            queries, truth = scifact(args.queries, args.docs)
        else:
            queries, truth = synthetic(args.scale, args.queries, args.sample, args.index)
        index = open_index(args.index)
        index.search(queries[0], k=10)  # warm-up
        settings = json.loads(args.settings) if args.settings else SWEEP if args.sweep else SETTINGS
        out = [measure(index, queries, truth, options) for options in settings]
    json.dump({"index": str(args.index), "queries": len(queries), "machine": machine(), "settings": out,
               "load_average_after": [round(x, 2) for x in os.getloadavg()]}, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
