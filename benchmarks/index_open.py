"""Opening an index at 10k-1M entries (format 2, memory-mapped entries vs format 1, docs.json) and batched search.

Open (default): per size, the same entries (chunk ids ``doc<i>#<j>`` with the writer's ``_src``/``_doc``/
``_chunk`` metadata plus a ``lang`` field, short texts, 8-d dense vectors, ``--per-segment`` entries per
commit) are written twice: by this checkout (format 2) and by the code of ``--baseline-rev`` (format 1,
``git archive`` of its ``index/`` folder loaded as ``mm.index`` in a child process). Each index is then
opened in a fresh child process that reports ``open_index`` seconds (best of ``--repeats``, the first one
separately), the RSS the open added (VmRSS after minus before; page-cache pages of mapped files count
only when touched), the first id lookup and the first filtered search (``{"lang": "de"}``).

Batch (``--batch``): per query, a batch of 32 through ``search_batch`` against 32 ``search`` calls, same
queries, same run, for a dense index (``--batch-dense`` x 384) and a trained multi-vector one
(``--batch-tokens`` x 128, :mod:`benchmarks.token_corpus` generator if available, else clustered noise).

    python benchmarks/index_open.py                       # 10k, 100k, 1M entries
    python benchmarks/index_open.py --sizes 10000 --batch # quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DIM = 8


def machine() -> dict:
    import torch

    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def use_baseline(src: Path) -> None:
    """Import ``mm.index`` from ``src/index`` (an older checkout's code) instead of this checkout's."""
    import importlib.util

    import mm

    spec = importlib.util.spec_from_file_location("mm.index", src / "index" / "__init__.py",
                                                  submodule_search_locations=[str(src / "index")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["mm.index"] = module
    mm.index = module
    spec.loader.exec_module(module)


def entries(start: int, stop: int) -> tuple[list[str], list[str], list[dict]]:
    ids, texts, metas = [], [], []
    for i in range(start, stop):
        doc, chunk = divmod(i, 4)
        ids.append(f"doc{doc}#{chunk}")
        texts.append(f"chunk {chunk} of document {doc}")
        metas.append({"lang": ("en", "de", "fr")[doc % 3], "_src": f"{doc * 2654435761 % 2**64:032x}",
                      "_doc": f"doc{doc}", "_chunk": chunk})
    return ids, texts, metas


def child_build(path: Path, n: int, per_segment: int) -> dict:
    import numpy as np
    from mm.index import create_index

    rng = np.random.default_rng(0)
    t = time.perf_counter()
    index = create_index(path, kind="dense", dim=DIM, encoder_info={"model": "synthetic"})
    for start in range(0, n, per_segment):
        ids, texts, metas = entries(start, min(n, start + per_segment))
        index.add(ids, rng.standard_normal((len(ids), DIM), dtype=np.float32), texts=texts, metadata=metas)
    size = sum(f.stat().st_size for f in path.iterdir())
    return {"build_s": round(time.perf_counter() - t, 2), "segments": len(index._segments), "bytes": size}


def child_open(path: Path, repeats: int) -> dict:
    import numpy as np
    from mm.index import open_index

    before = rss_mb()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        index = open_index(path)
        times.append(time.perf_counter() - t)
    after = rss_mb()
    n = len(index)
    t = time.perf_counter()
    found = index.get("doc7#1")
    lookup_s = time.perf_counter() - t
    assert found is not None and found.metadata["_doc"] == "doc7"
    t = time.perf_counter()
    hits = index.search(np.ones(DIM, np.float32), k=10, filters={"lang": "de"})
    filtered_s = time.perf_counter() - t
    assert len(hits) == 10 and all(h.metadata["lang"] == "de" for h in hits)
    t = time.perf_counter()
    index.search(np.ones(DIM, np.float32), k=10, filters={"lang": "de"})
    filtered_again_s = time.perf_counter() - t
    return {"entries": n, "open_first_s": round(times[0], 4), "open_best_s": round(min(times), 4),
            "open_median_s": round(statistics.median(times), 4), "rss_added_by_open_mb": round(after - before, 1),
            "rss_after_open_mb": round(after, 1), "first_lookup_s": round(lookup_s, 4),
            "first_filtered_search_s": round(filtered_s, 4), "filtered_search_again_s": round(filtered_again_s, 4),
            "rss_after_filtered_search_mb": round(rss_mb(), 1)}


def run_child(*args: str, baseline: Path | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", *args] + (["--baseline-src", str(baseline)] if baseline else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def baseline_source(rev: str, tmp: Path) -> Path:
    src = tmp / "baseline"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "index"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    return src


def open_sizes(args: argparse.Namespace, tmp: Path) -> list[dict]:
    old_src = baseline_source(args.baseline_rev, tmp)
    rows = []
    for n in args.sizes:
        row: dict = {"entries": n}
        for name, src in (("format1_before", old_src), ("format2_after", None)):
            path = tmp / f"{name}-{n}"
            built = run_child("build", str(path), str(n), str(args.per_segment), baseline=src)
            row[name] = {**built, **run_child("open", str(path), str(args.repeats), baseline=src),
                         "load_average": [round(x, 2) for x in os.getloadavg()]}
            subprocess.run(["rm", "-rf", str(path)], check=True)
        row["open_speedup"] = round(row["format1_before"]["open_best_s"] / row["format2_after"]["open_best_s"], 1)
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    return rows


def per_query(index, queries, k: int = 10, batch: int = 32) -> dict:
    """Wall and CPU ms per query: one ``search`` call each, then ``search_batch`` of ``batch``."""
    t, c = time.perf_counter(), time.process_time()
    single = [index.search(q, k=k) for q in queries]
    one_s, one_cpu = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    batched = []
    for s in range(0, len(queries), batch):
        batched += index.search_batch(queries[s:s + batch], k=k)
    b_s, b_cpu = time.perf_counter() - t, time.process_time() - c
    assert [[h.id for h in r] for r in single] == [[h.id for h in r] for r in batched]
    n = len(queries)
    loop = {}
    if index.kind == "dense":  # what search_batch did before this change: the base class's loop over queries
        from mm.index import DenseIndex

        index._search_many = lambda qs, *a, **kw: [DenseIndex._search_many(index, [q], *a, **kw)[0] for q in qs]
        t, c = time.perf_counter(), time.process_time()
        for s in range(0, len(queries), batch):
            index.search_batch(queries[s:s + batch], k=k)
        loop = {"batch32_loop_before_ms": round((time.perf_counter() - t) / n * 1000, 3),
                "batch32_loop_before_cpu_ms": round((time.process_time() - c) / n * 1000, 3)}
        del index._search_many
    return {**loop, "queries": n, "single_ms": round(one_s / n * 1000, 3), "single_cpu_ms": round(one_cpu / n * 1000, 3),
            "batch32_ms": round(b_s / n * 1000, 3), "batch32_cpu_ms": round(b_cpu / n * 1000, 3),
            "batch_vs_single_wall": round(b_s / one_s, 3), "batch_vs_single_cpu": round(b_cpu / one_cpu, 3),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def batches(args: argparse.Namespace, tmp: Path) -> dict:
    import numpy as np
    from mm.index import create_index

    rng = np.random.default_rng(1)
    dense = create_index(tmp / "dense", kind="dense", dim=384, encoder_info={})
    vecs = rng.standard_normal((args.batch_dense, 384), dtype=np.float32)
    for s in range(0, len(vecs), 50_000):
        dense.add([f"d{i}" for i in range(s, min(len(vecs), s + 50_000))], vecs[s:s + 50_000])
    out = {"dense": {"docs": len(vecs), "dim": 384, **per_query(dense, list(vecs[:128] + 0.1))}}
    n_docs, dim = args.batch_tokens // 100, 128
    centres = rng.standard_normal((256, dim), dtype=np.float32)
    docs = []
    for _ in range(n_docs):
        x = centres[rng.integers(0, 256, 100)] + 0.3 * rng.standard_normal((100, dim), dtype=np.float32)
        docs.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    multi = create_index(tmp / "multi", kind="multivector", dim=dim, encoder_info={}, train_tokens=args.batch_tokens)
    for s in range(0, n_docs, 1000):
        multi.add([f"m{i}" for i in range(s, min(n_docs, s + 1000))], docs[s:s + 1000])
    queries = [d[rng.choice(100, 16, replace=False)] for d in docs[:64]]
    out["multivector"] = {"docs": n_docs, "tokens": n_docs * 100, "dim": dim, **per_query(multi, queries)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--per-segment", type=int, default=50_000, help="entries per add (one segment each)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-rev", default="5daffb8", help="git revision whose index/ writes format 1")
    ap.add_argument("--batch", action="store_true", help="also: batches of 32 vs one query at a time")
    ap.add_argument("--batch-only", action="store_true")
    ap.add_argument("--batch-dense", type=int, default=100_000)
    ap.add_argument("--batch-tokens", type=int, default=300_000)
    ap.add_argument("--child", nargs="+")
    ap.add_argument("--baseline-src", type=Path)
    args = ap.parse_args()
    if args.child:
        if args.baseline_src:
            use_baseline(args.baseline_src)
        step, path, *rest = args.child
        result = child_build(Path(path), int(rest[0]), int(rest[1])) if step == "build" else \
            child_open(Path(path), int(rest[0]))
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory(prefix="mm-open-") as tmp:
        result: dict = {"benchmark": "index_open", "machine": machine(), "per_segment": args.per_segment}
        if not args.batch_only:
            result["open"] = open_sizes(args, Path(tmp))
        if args.batch or args.batch_only:
            result["batch"] = batches(args, Path(tmp))
        result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
