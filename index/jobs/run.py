"""The job driver: :func:`build_job` runs the stages plan -> encode -> merge -> finalize.

A job streams a corpus, skips documents the index already holds with the same content hash,
chunks and encodes the rest on an engine (local worker processes, or a Ray cluster), and commits
the results to the index segment by segment through :class:`mm.index.writer.IndexWriter`. The
index is the checkpoint: a job killed at any point continues where it stopped when started again,
with no document lost or duplicated; re-running on an unchanged corpus encodes nothing; a changed
document is re-encoded and replaced (stale chunks removed in the same commit).

>>> import json, tempfile, pathlib
>>> from mm.index.jobs.options import EncoderSpec
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> _ = (tmp / "c.jsonl").write_text("".join(json.dumps({"_id": str(i), "text": f"doc {i}"}) + "\\n"
...                                   for i in range(3)))
>>> enc = EncoderSpec("mm.testing.hash_encoder:HashEncoder", {"dim": 8})
>>> build_job(tmp / "c.jsonl", tmp / "idx", encoder=enc, progress=False).docs_new
3
>>> build_job(tmp / "c.jsonl", tmp / "idx", encoder=enc, progress=False, resume=True).docs_unchanged
3
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mm.index.jobs.encode import DocEncoder
from mm.index.jobs.engines import LocalEngine, RayEngine, done_keys
from mm.index.jobs.finalize import fill_totals, prune, warn_truncated
from mm.index.jobs.merge import Merger
from mm.index.jobs.options import EncoderSpec, IndexOptions, JobReport, make_options
from mm.index.jobs.plan import Planner, dry_run
from mm.index.jobs.source import FileSource
from mm.index.storage import MANIFEST
from mm.index.writer import IndexWriter, fingerprint, policy_of

from mm.corpus import Document
from mm.errors import IndexLockedError, InvalidInputError

log = logging.getLogger(__name__)

STATE_DIR = "_job"  # inside the index folder: job.lock (one job at a time); the index itself is the checkpoint
#: documents per work unit sent to a worker process or Ray actor (unless IndexOptions.docs_per_unit says)
DOCS_PER_UNIT = 64
#: below this many documents per core the local engine encodes in-process (workers=None)
SMALL_CORPUS_DOCS = 256
_MM_LOADERS = ("mm.encoders.loader:load_encoder", "mm.encoders.loader:load_encoder_for_index")


def build_job(source: str | Path | Iterable[Document], index: str | Path | Any,
              options: IndexOptions | None = None, /, **fields: Any) -> JobReport:
    """Index ``source`` into the index folder ``index``; resumable and idempotent.

    ``source``: a corpus file/folder (jsonl/BEIR, csv, parquet, folder of .txt/.md) or, for the local
    engine, any iterable of :class:`mm.corpus.Document`. ``index``: the index folder (or an open
    index). Settings: an :class:`~mm.index.jobs.options.IndexOptions`, and/or its fields as keyword
    arguments (``build_job(src, dst, encoder="minilm", resume=True)``).
    """
    opts = make_options(options, fields)
    src = _as_source(source, opts)
    index_path = _index_path(index)
    existing = (index_path / MANIFEST).exists()
    if not opts.resume and not opts.dry_run and index_path.exists() and (
            not index_path.is_dir() or any(index_path.iterdir())):
        raise InvalidInputError(f"the index folder is not empty ({index_path}); pass resume=True (--resume) to "
                                f"continue or update the index it holds, or build into a new folder")
    started = time.perf_counter()
    held = _open(index_path) if existing else None  # opened once: its entry table is the largest thing held
    spec, driver = _load_encoder(opts, held)
    load_seconds = time.perf_counter() - started
    workers, threads = _workers(src, opts, spec)
    policy = policy_of(held) if held is not None and opts.policy == IndexOptions().policy else opts.policy
    report = JobReport(engine=opts.engine, workers=workers, dry_run=opts.dry_run)
    report.extra["load_seconds"] = round(load_seconds, 3)  # loading the encoder in this process
    if opts.dry_run:
        writer = IndexWriter.open_or_create(index_path, driver, policy, create=False, index=held) if existing else None
        info = writer.encoder_info if writer else {**driver.describe(), "long_docs": policy.long_docs}
        worker = DocEncoder(driver, policy, _fingerprint_text(info, policy.resolve(driver)))
        dry_run(src, writer, worker, report, opts.prune)
        return _finish(report, src, writer, index_path, started, opts, threads)
    recipe = {"target": spec.target, "kwargs": spec.kwargs} if spec and spec.target not in _MM_LOADERS else None
    writer = IndexWriter.open_or_create(index_path, driver, policy, nbits=opts.nbits, codec=opts.codec,
                                        codec_from=opts.codec_from, recipe=recipe, index=held)
    lock = _lock(index_path / STATE_DIR)
    try:
        _run_stages(src, writer, spec, driver, opts, workers, threads, report)
    except BaseException:
        lock.release()
        _after_failure(index_path, existing, report)
        raise
    lock.release()
    return _finish(report, src, writer, index_path, started, opts, threads)


def _run_stages(src: Iterable[Document], writer: IndexWriter, spec: EncoderSpec | None, driver: Any,
                opts: IndexOptions, workers: int, threads: int, report: JobReport) -> None:
    """Plan -> encode -> merge, then prune: everything that writes."""
    fp = _fingerprint_text(writer.encoder_info, writer.policy)
    bar = _progress_bar(_source_total(src), opts.progress)
    policy = writer.policy
    merger = Merger(writer, opts.segment_docs, report, bar,
                    truncate_at=policy.max_tokens if policy.long_docs == "truncate" else 0)
    planner = Planner(writer, report, bar)
    if opts.engine == "local":
        engine = LocalEngine(spec, policy, fp, workers=workers, threads=threads, batch_size=opts.batch_size,
                             encoder=driver if workers == 1 else None)
        unit = opts.docs_per_unit or (opts.segment_docs if workers == 1 else DOCS_PER_UNIT)
        for encoded in engine.run(planner.units(src, unit)):
            merger.add(encoded)
    else:
        del driver  # the actors load their own copy
        with RayEngine(spec, policy, fp, workers=workers, threads=threads, batch_size=opts.batch_size,
                       docs_per_call=opts.docs_per_unit or DOCS_PER_UNIT, address=opts.ray_address,
                       max_restarts=opts.max_restarts) as engine:
            for item in planner.check_ray_stream(engine.run(src, done_keys(writer.table()))):
                merger.add([item])
    merger.flush()
    warn_truncated(report, policy.max_tokens)
    if opts.prune:
        prune(writer, planner.seen, report)
    bar.close()
    stages = {"commit": round(merger.seconds, 3)}
    if opts.engine == "local" and engine.worker is not None:  # in-process: where the encoding time went
        stages.update({k: round(v, 3) for k, v in engine.worker.seconds.items()})
    report.extra["stage_seconds"] = stages


def _finish(report: JobReport, src: Any, writer: Any, index_path: Path, started: float, opts: IndexOptions,
            threads: int) -> JobReport:
    if isinstance(src, FileSource):
        report.skipped_where.extend(f"{s.where}: {s.reason}" for s in src.skipped)
    report.skipped = len(report.skipped_where)
    fill_totals(report, writer, index_path)
    report.seconds = time.perf_counter() - started
    report.extra["threads_per_worker"] = threads
    if opts.engine == "ray":
        report.extra["ray_address"] = opts.ray_address or "local (127.0.0.1)"
    log.info("indexing job done: %s", report.to_dict())
    return report


def _after_failure(index_path: Path, existed: bool, report: JobReport) -> None:
    if not existed and report.segments == 0:  # a new index that committed nothing: leave no folder behind
        shutil.rmtree(index_path, ignore_errors=True)
    else:
        log.error("indexing job stopped after %d committed segment(s); run it again with resume=True "
                  "(--resume) to continue where it stopped", report.segments)


def _open(index_path: Path) -> Any:
    from mm.index import open_index

    return open_index(index_path)


def _load_encoder(opts: IndexOptions, existing: Any) -> tuple[EncoderSpec | None, Any]:
    """The workers' recipe and the encoder loaded here (for its kind, dimension and in-process encoding).

    An existing index keeps its encoder (and, unless the options ask for another, its chunk policy)."""
    spec = opts.spec()
    if opts.encoder is None and existing is not None:  # an existing index: its own encoder
        info = existing.encoder_info
        recipe = info.get("recipe")
        spec = EncoderSpec(**recipe) if recipe else EncoderSpec(_MM_LOADERS[1], {"info": info})
    if spec is None:
        return None, opts.encoder
    driver_spec = spec
    if opts.threads and spec.target in _MM_LOADERS:
        driver_spec = EncoderSpec(spec.target, {**spec.kwargs, "threads": opts.threads})
    return spec, driver_spec.load()


def _workers(src: Any, opts: IndexOptions, spec: EncoderSpec | None) -> tuple[int, int]:
    cores = os.cpu_count() or 1
    workers = opts.workers
    if workers is None:  # one process per core, unless the corpus is too small to repay starting them
        total = _source_total(src)
        small = spec is None or (total is not None and total < SMALL_CORPUS_DOCS * cores)
        workers = 1 if small and opts.engine == "local" else cores
    return workers, opts.threads or max(1, cores // workers)


def _fingerprint_text(info: dict, policy: Any) -> str:
    import json

    return json.dumps(fingerprint(info, policy), sort_keys=True)


def _as_source(source: Any, opts: IndexOptions) -> Any:
    if isinstance(source, str | Path):
        return FileSource(source, skip_bad=opts.skip_bad)
    if opts.skip_bad:
        raise InvalidInputError("skip_bad applies to corpus files; a Python iterable yields Documents as they are")
    if opts.engine == "ray":
        raise InvalidInputError("engine='ray' reads the corpus with Ray Data: pass a corpus file or folder path")
    if isinstance(source, Iterable):
        return source
    raise InvalidInputError(f"source must be a corpus path or an iterable of Documents, got {type(source).__name__}")


def _index_path(index: Any) -> Path:
    if isinstance(index, str | Path):
        return Path(index).expanduser()
    path = getattr(index, "path", None)
    if path is None:
        raise InvalidInputError(f"index must be an index folder or an open index, got {type(index).__name__}")
    return Path(path)


def _source_total(src: Any) -> int | None:
    """Documents in the source when it can tell cheaply (for the progress bar's ETA)."""
    if isinstance(src, FileSource):
        return src.count()
    return len(src) if hasattr(src, "__len__") else None


def _lock(state_dir: Path) -> Any:
    from filelock import FileLock, Timeout

    state_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(state_dir / "job.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise IndexLockedError(f"another indexing job is running on {state_dir.parent} "
                               f"(lock {state_dir / 'job.lock'}); wait for it to finish") from None
    return lock


def _progress_bar(total: int | None, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="doc", desc="indexing", disable=not enabled, dynamic_ncols=True, smoothing=0.1)
