"""Batch document-indexing jobs: ``mm.index.build_job`` (and ``mm index build``).

A job streams a corpus, skips documents whose content hash is already indexed, chunks and
encodes the rest on an engine (local worker processes, or a Ray cluster), and merges the
results into the index segment by segment. After each segment it checkpoints, so a job
killed at any point continues where it stopped when started again, with no document lost
or duplicated; re-running on an unchanged corpus encodes nothing; a changed document is
re-encoded and replaced (stale chunks removed).

>>> import json, tempfile, pathlib
>>> from mm.index.jobs import build_job
>>> from mm.index.job_types import EncoderSpec
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> _ = (tmp / "c.jsonl").write_text("".join(json.dumps({"_id": str(i), "text": f"doc {i}"}) + "\\n"
...                                   for i in range(3)))
>>> enc = EncoderSpec("mm.testing.hash_encoder:HashEncoder", {"dim": 8})
>>> build_job(tmp / "c.jsonl", tmp / "idx", encoder=enc, progress=False, dry_run=True).docs_new
3
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from mm.index.job_encode import Chunking
from mm.index.job_engines import ENGINES, BadRecord, LocalEngine, RayEngine
from mm.index.job_source import FileSource
from mm.index.job_state import JobState
from mm.index.job_types import (
    Document,
    DocumentSource,
    EncodedDoc,
    EncoderSpec,
    IndexWriter,
    JobEncoder,
    SkippedDoc,
    chunk_ids,
    content_hash,
)

from mm.errors import IndexLockedError, InvalidInputError, MMError, choices_text
from mm.validation import check_int, check_workers

log = logging.getLogger(__name__)

STATE_DIR = "_job"  # inside the index folder: state.sqlite (checkpoint) and job.lock
DEFAULT_ENCODER = None  # as mm.encoders: LFM2-ColBERT-350M when available offline, else the bundled MiniLM
#: what happens to documents longer than the encoder's window (as in ``mm.pipelines.indexer``)
LONG_DOC_POLICIES = ("chunk", "truncate")
#: below this many documents per core the local engine encodes in-process (workers=None)
SMALL_CORPUS_DOCS = 256
#: metadata keys on the chunks of multi-chunk documents (the same as ``mm.pipelines.indexer``'s)
DOC_KEY, CHUNK_KEY = "_doc", "_chunk"


@dataclass
class JobReport:
    """What a job did (or, with ``dry_run``, would do)."""

    engine: str
    workers: int
    dry_run: bool = False
    docs_seen: int = 0
    docs_new: int = 0
    docs_changed: int = 0
    docs_unchanged: int = 0
    docs_deleted: int = 0
    chunks: int = 0
    tokens: int = 0
    segments: int = 0
    seconds: float = 0.0
    index_docs: int = 0
    index_chunks: int = 0
    index_bytes: int = 0
    docs_truncated: int = 0  # long_docs="truncate": documents the model cut at its window
    skipped: int = 0  # malformed corpus records skipped (skip_bad=True)
    skipped_where: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def docs_encoded(self) -> int:
        return self.docs_new + self.docs_changed

    @property
    def docs_per_s(self) -> float:
        return self.docs_encoded / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(docs_encoded=self.docs_encoded, docs_per_s=round(self.docs_per_s, 2),
                   tokens_per_s=round(self.tokens_per_s, 1), seconds=round(self.seconds, 3))
        return out


def encoder_spec(encoder: str | Path | EncoderSpec | None, kind: str = "auto") -> EncoderSpec:
    """A model name/directory becomes a recipe for ``mm.encoders``; a spec passes through."""
    if isinstance(encoder, EncoderSpec):
        if kind != "auto":
            raise InvalidInputError("kind= applies to a model name; an EncoderSpec fixes its own kind")
        return encoder
    if encoder is not None and (not isinstance(encoder, str | Path) or not str(encoder)):
        raise InvalidInputError(f"encoder must be a model name/directory or an EncoderSpec, got {encoder!r}")
    model = None if encoder is None else str(encoder)
    return EncoderSpec("mm.index.job_models:load_job_encoder", {"model": model, "kind": kind})


def build_job(
    source: str | Path | DocumentSource,
    index: str | Path | IndexWriter,
    *,
    encoder: str | Path | EncoderSpec | None = DEFAULT_ENCODER,
    kind: str = "auto",
    engine: str = "local",
    workers: int | None = None,
    threads: int | None = None,
    ray_address: str | None = None,
    batch_size: int = 32,
    docs_per_unit: int = 64,
    segment_docs: int = 1024,
    max_tokens: int | None = None,
    overlap: int | None = None,
    long_docs: str = "chunk",
    nbits: int = 2,
    codec: str = "scalar",
    prune: bool = False,
    skip_bad: bool = False,
    resume: bool = False,
    dry_run: bool = False,
    progress: bool = True,
    max_restarts: int = 4,
) -> JobReport:
    """Index ``source`` into ``index`` (created if missing); resumable and idempotent.

    Args:
        source: a corpus file/folder (jsonl/BEIR, csv, parquet, folder of .txt/.md) or, for the
            local engine, any iterable of :class:`Document`.
        index: index folder, or an open index object (``add``/``delete``/``path``).
        encoder: model name, hub id or directory for ``mm.encoders`` (``"minilm"``: the bundled
            offline MiniLM; None: LFM2-ColBERT-350M when available, else MiniLM), or an :class:`EncoderSpec`.
        kind: ``auto``, ``dense`` or ``multivector`` (per-token vectors of a dense model).
        engine: ``"local"`` (worker processes on this machine) or ``"ray"``.
        workers: encoder processes / Ray actors (default: one per core; one in-process worker for a
            corpus under 256 documents per core, where starting processes costs more than it saves).
        threads: torch threads per worker (default: cores // workers, at least 1).
        ray_address: ``"auto"`` or ``HOST:PORT`` of a running cluster; None starts a private
            loopback-only Ray on this machine.
        batch_size: chunks per encoder call (chunks are sorted by length first).
        docs_per_unit: documents per work unit sent to a worker.
        segment_docs: documents merged into the index per commit (the checkpoint interval).
        max_tokens: chunk window in encoder tokens (default and upper bound: what the encoder
            takes in one pass, so nothing is ever truncated).
        overlap: tokens repeated between consecutive chunks (default: an eighth of the window).
        long_docs: ``"chunk"`` (overlapping windows mapped back to the document) or ``"truncate"``
            (one vector set per document, cut by the model at its limit; logged).
        nbits: residual compression bits for a new multi-vector index.
        codec: residual codes of a new multi-vector index: ``"scalar"`` (PLAID-style buckets, fast to
            train) or ``"pq"`` (faiss product quantization; best recall per byte, slower to train).
        prune: also delete indexed documents the source no longer has.
        skip_bad: log and skip malformed corpus records instead of stopping at the first one.
        resume: continue (after a crash or kill) or update (a changed corpus) the index at ``index``
            from its checkpoint, creating it when missing. False (the default, as ``mm index
            build`` without ``--resume``) builds a new index and refuses an existing, non-empty folder.
        dry_run: only report what would be done (nothing is encoded or written).
        progress: show a live progress bar (documents/s, ETA).
        max_restarts: Ray only — how often a dead actor is restarted (its batches are retried).
    """
    if engine not in ENGINES:
        raise InvalidInputError(f"unknown engine {engine!r}; valid engines: {choices_text(ENGINES)}")
    if engine != "ray" and ray_address is not None:
        raise InvalidInputError("ray_address is only used with engine='ray'")
    if engine != "ray" and max_restarts != 4:
        raise InvalidInputError("max_restarts is only used with engine='ray'")
    if long_docs not in LONG_DOC_POLICIES:
        raise InvalidInputError(f"long_docs must be one of {', '.join(LONG_DOC_POLICIES)}, got {long_docs!r}")
    for name, value in (("batch_size", batch_size), ("docs_per_unit", docs_per_unit),
                        ("segment_docs", segment_docs)):
        check_int(value, name, minimum=1)
    workers, threads = check_workers(workers), check_workers(threads, "threads")
    cores = os.cpu_count() or 1
    src = _as_source(source, skip_bad)
    if workers is None:  # one process per core, unless the corpus is too small to repay starting them
        total = _source_total(src)
        workers = 1 if total is not None and total < SMALL_CORPUS_DOCS * cores else cores
    threads = threads or max(1, cores // workers)
    spec = encoder_spec(encoder, kind)
    if engine == "ray" and not isinstance(src, FileSource):
        raise InvalidInputError("engine='ray' reads the corpus with Ray Data: pass a corpus file or folder path")

    index_path = Path(index) if isinstance(index, str | Path) else Path(getattr(index, "path", ""))
    if not str(index_path):
        raise InvalidInputError("an index object passed to build_job needs a .path (where the job keeps its state)")
    new_build = not resume and not dry_run and isinstance(index, str | Path)
    if new_build and index_path.exists() and (not index_path.is_dir() or any(index_path.iterdir())):
        raise InvalidInputError(f"the index folder is not empty ({index_path}); pass resume=True (--resume) to "
                                f"continue or update the index it holds, or build into a new folder")

    started = time.perf_counter()
    driver_encoder = spec.load()
    limit = int(driver_encoder.max_tokens)
    if max_tokens is not None and max_tokens > limit:
        raise InvalidInputError(f"max_tokens={max_tokens} is more than the encoder reads in one pass ({limit}); "
                                f"use max_tokens <= {limit} (long documents are split into chunks)")
    truncate = long_docs == "truncate"
    # truncate: one entry per document, cut by the model at its own limit (only counted here)
    window = int(getattr(driver_encoder, "model_max_tokens", limit)) if truncate else (max_tokens or limit)
    chunking = Chunking(max_tokens=window, overlap=window // 8 if overlap is None else overlap, truncate=truncate)
    report = JobReport(engine=engine, workers=workers, dry_run=dry_run)
    report.extra.update(encoder=spec.describe(), chunking=chunking.describe())
    kind, dim = driver_encoder.kind, driver_encoder.dim
    encoder_info = {**driver_encoder.info(), "long_docs": long_docs}  # what the index records
    fingerprint = {"encoder": encoder_info, "chunking": chunking.describe(), "version": 1}

    if dry_run:
        return _dry_run(src, index_path, driver_encoder, chunking, fingerprint, prune, report, started, progress)

    writer = index if not isinstance(index, str | Path) else _open_or_create(index_path, kind, dim, encoder_info,
                                                                          nbits, codec)
    lock = _lock(index_path / STATE_DIR)
    state = JobState(index_path / STATE_DIR / "state.sqlite")
    try:
        state.check_fingerprint(fingerprint)
        state.start_run()
        total = _source_total(src)
        bar = _progress_bar(total, progress)
        merger = _Merger(writer, state, kind, dim, segment_docs, report, bar,
                         truncate_at=chunking.max_tokens if truncate else 0)
        if engine == "local":
            # workers=1 reuses the encoder already loaded here; more start their own processes
            eng = LocalEngine(spec, chunking, workers=workers, threads=threads, batch_size=batch_size,
                              encoder=driver_encoder if workers == 1 else None)
            units = _plan_units(src, state, docs_per_unit, report, bar)
            for encoded in eng.run(units):
                merger.add(encoded)
        else:
            del driver_encoder  # the actors load their own copy
            with RayEngine(spec, chunking, workers=workers, threads=threads, batch_size=batch_size,
                           docs_per_call=docs_per_unit, address=ray_address, max_restarts=max_restarts,
                           kind=kind, dim=dim) as eng:
                for item in _checked_stream(eng.run(src, state.done_keys()), state, report, bar):
                    merger.add([item])
        merger.flush()
        if report.docs_truncated:
            log.warning("%d of %d documents are longer than the encoder's %d-token window and were truncated "
                        "(long_docs='truncate'; use 'chunk' to index every window)", report.docs_truncated,
                        report.docs_encoded, chunking.max_tokens)
        if prune:
            _prune(writer, state, report)
        bar.close()
    except BaseException:
        failed = True
        raise
    else:
        failed = False
    finally:
        if isinstance(src, FileSource):
            report.skipped_where.extend(f"{s.where}: {s.reason}" for s in src.skipped)
        report.skipped = len(report.skipped_where)
        state_totals = state.totals()
        state.close()
        lock.release()
        if failed and new_build and report.segments == 0:  # a new build that committed nothing: no folder left
            import shutil

            shutil.rmtree(index_path, ignore_errors=True)
        elif failed:
            log.error("indexing job stopped after %d committed segment(s); run it again with resume=True "
                      "(--resume) to continue where it stopped", report.segments)
    report.seconds = time.perf_counter() - started
    report.index_docs, report.index_chunks = state_totals[0], state_totals[1]
    report.index_bytes = _folder_bytes(index_path)
    report.extra.update(_describe_engine(engine, workers, threads, ray_address))
    log.info("indexing job done: %s", report.to_dict())
    return report


# ------------------------------------------------------------------------------------------ helpers
class _Merger:
    """Buffers encoded documents and commits them to the index, then to the checkpoint."""

    def __init__(self, writer: IndexWriter, state: JobState, kind: str, dim: int, segment_docs: int,
                 report: JobReport, bar: Any, truncate_at: int = 0) -> None:
        self.writer, self.state, self.kind, self.dim = writer, state, kind, dim
        self.truncate_at = truncate_at
        self.segment_docs, self.report, self.bar = segment_docs, report, bar
        self.buffer: list[EncodedDoc] = []

    def add(self, docs: list[EncodedDoc]) -> None:
        self.buffer.extend(docs)
        while len(self.buffer) >= self.segment_docs:  # exactly segment_docs per commit, whatever the engine
            self._commit(self.buffer[:self.segment_docs])
            self.buffer = self.buffer[self.segment_docs:]

    def flush(self) -> None:
        if self.buffer:
            self._commit(self.buffer)
            self.buffer = []

    def _commit(self, docs: list[EncodedDoc]) -> None:
        known = self.state.lookup([d.doc_id for d in docs])
        ids, vectors, texts, metas, stale = [], [], [], [], []
        for doc in docs:
            new_ids = chunk_ids(doc.doc_id, doc.n_chunks)
            if doc.doc_id in known:
                stale.extend(set(chunk_ids(doc.doc_id, known[doc.doc_id][1])) - set(new_ids))
            ids.extend(new_ids)
            texts.extend(doc.chunk_texts)
            vectors.extend(doc.vectors)
            base = {"title": doc.title, **doc.metadata} if doc.title else dict(doc.metadata)
            for i in range(doc.n_chunks):  # chunks of a long document name their document, as mm index does
                metas.append({**base, DOC_KEY: doc.doc_id, CHUNK_KEY: i} if doc.n_chunks > 1 else base)
        for vec in vectors:
            if vec.shape[-1] != self.dim or vec.ndim != (2 if self.kind == "multivector" else 1):
                raise MMError(f"encoder returned a vector of shape {vec.shape}; the index expects "
                              f"{'tokens x ' if self.kind == 'multivector' else ''}{self.dim}")
        payload = vectors if self.kind == "multivector" else np.stack(vectors)
        self.writer.add(ids, payload, texts=texts, metadata=metas)  # commit 1: the index
        if stale:
            self.writer.delete(sorted(stale))
        self.state.commit_docs((d.doc_id, d.content_hash, d.n_chunks, d.n_tokens) for d in docs)  # commit 2
        for doc in docs:
            if doc.doc_id in known:
                self.report.docs_changed += 1
            else:
                self.report.docs_new += 1
            self.report.chunks += doc.n_chunks
            self.report.tokens += doc.n_tokens
            if self.truncate_at and doc.n_tokens > self.truncate_at:
                self.report.docs_truncated += 1
        self.report.segments += 1
        self.bar.update(len(docs))
        self.bar.set_postfix(chunks=self.report.chunks, refresh=False)


def _plan_units(src: Iterable[Document], state: JobState, docs_per_unit: int, report: JobReport,
                bar: Any) -> Iterator[list[Document]]:
    """Stream the source in units of documents that need encoding (new or changed)."""
    for docs in _batched(iter(src), docs_per_unit):
        ids = [d.id for d in docs]
        state.mark_seen(ids)
        known = state.lookup(ids)
        todo = []
        for doc in docs:
            previous = known.get(doc.id)
            if previous is not None and previous[0] == content_hash(doc):
                report.docs_unchanged += 1
            else:
                todo.append(doc)
        report.docs_seen += len(docs)
        bar.update(len(docs) - len(todo))
        if todo:
            yield todo


def _checked_stream(items: Iterator[EncodedDoc | SkippedDoc | BadRecord], state: JobState, report: JobReport,
                    bar: Any, check_every: int = 512) -> Iterator[EncodedDoc]:
    """Ray results: record seen ids, verify the workers' skips exactly against the checkpoint."""
    seen: list[str] = []
    skipped: list[SkippedDoc] = []

    def settle() -> None:
        state.mark_seen(seen)
        known = state.lookup([s.doc_id for s in skipped])
        for s in skipped:
            if known.get(s.doc_id, ("",))[0] != s.content_hash:
                raise MMError(f"a Ray worker skipped document {s.doc_id!r} as unchanged but the checkpoint "
                              "disagrees; re-run the job (no data was lost)")
        report.docs_unchanged += len(skipped)
        bar.update(len(skipped))
        seen.clear()
        skipped.clear()

    for item in items:
        if isinstance(item, BadRecord):
            report.skipped_where.append(item.where)
            continue
        report.docs_seen += 1
        seen.append(item.doc_id)
        if isinstance(item, SkippedDoc):
            skipped.append(item)
        else:
            yield item
        if len(seen) >= check_every:
            settle()
    settle()


def _dry_run(src: Iterable[Document], index_path: Path, encoder: JobEncoder, chunking: Chunking, fingerprint: dict,
             prune: bool, report: JobReport, started: float, progress: bool) -> JobReport:
    """Count what a real run would encode, using the checkpoint read-only."""
    state_file = index_path / STATE_DIR / "state.sqlite"
    known_all: JobState | None = JobState(state_file) if state_file.exists() else None
    if known_all is not None:
        known_all.check_fingerprint(fingerprint)
    seen: set[str] = set()
    bar = _progress_bar(_source_total(src), progress)
    for docs in _batched(iter(src), 512):
        known = known_all.lookup([d.id for d in docs]) if known_all else {}
        for doc in docs:
            if doc.id in seen:
                raise InvalidInputError(f"document id {doc.id!r} occurs more than once in the source")
            seen.add(doc.id)
            previous = known.get(doc.id)
            if previous is not None and previous[0] == content_hash(doc):
                report.docs_unchanged += 1
                continue
            chunks = chunking.split(doc, encoder)
            report.chunks += len(chunks)
            report.tokens += sum(encoder.count_tokens(chunks))
            if previous is None:
                report.docs_new += 1
            else:
                report.docs_changed += 1
        report.docs_seen += len(docs)
        bar.update(len(docs))
    bar.close()
    if known_all is not None:
        if prune:
            report.docs_deleted = sum(1 for d in known_all.all_ids() if d not in seen)
        report.index_docs, report.index_chunks, _ = known_all.totals()
        known_all.close()
    report.index_bytes = _folder_bytes(index_path) if index_path.exists() else 0
    report.seconds = time.perf_counter() - started
    return report


def _prune(writer: IndexWriter, state: JobState, report: JobReport) -> None:
    for doc_ids in state.unseen():
        known = state.lookup(doc_ids)
        writer.delete([cid for d in doc_ids for cid in chunk_ids(d, known[d][1])])
        state.forget_docs(doc_ids)
        report.docs_deleted += len(doc_ids)


def _as_source(source: str | Path | DocumentSource, skip_bad: bool) -> DocumentSource:
    if isinstance(source, str | Path):
        return FileSource(source, skip_bad=skip_bad)
    if skip_bad:
        raise InvalidInputError("skip_bad applies to corpus files; a Python iterable yields Documents as they are")
    if isinstance(source, Iterable):
        return source  # type: ignore[return-value]
    raise InvalidInputError(f"source must be a corpus path or an iterable of Documents, got {type(source).__name__}")


def _source_total(src: Any) -> int | None:
    """Documents in the source when it can tell cheaply (for the progress bar's ETA)."""
    if isinstance(src, FileSource):
        return src.count()
    return len(src) if hasattr(src, "__len__") else None


def _open_or_create(path: Path, kind: str, dim: int, encoder_info: dict, nbits: int,
                    codec: str = "scalar") -> IndexWriter:
    from mm.index import create_index, open_index
    from mm.index.storage import MANIFEST

    if (path / MANIFEST).exists():
        idx = open_index(path)
        info = idx.info()
        if info.get("kind") != kind or int(info.get("dim", dim)) != dim:
            raise InvalidInputError(f"index {path} is {info.get('kind')} with dim {info.get('dim')}; the encoder "
                                    f"produces {kind} vectors of dim {dim}: use a new index path")
        policy = idx.encoder_info.get("long_docs", "chunk")
        if policy != encoder_info.get("long_docs", "chunk"):
            raise InvalidInputError(f"index {path} was built with long_docs={policy!r}; "
                                    f"use the same policy, or a new index path")
        return idx
    if kind != "multivector":
        if (nbits, codec) != (2, "scalar"):
            raise InvalidInputError(f"nbits/codec only apply to multi-vector indexes; the encoder is {kind}: "
                                    f"drop --nbits/--codec")
        return create_index(path, kind=kind, dim=dim, encoder_info=encoder_info)
    return create_index(path, kind=kind, dim=dim, encoder_info=encoder_info, nbits=nbits, codec=codec)


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

    return tqdm(total=total, unit="doc", desc="indexing", disable=not enabled, dynamic_ncols=True,
                smoothing=0.1)


def _describe_engine(engine: str, workers: int, threads: int, address: str | None) -> dict:
    out = {"threads_per_worker": threads}
    if engine == "ray":
        out["ray_address"] = address or "local (127.0.0.1)"
    return out


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _batched(it: Iterator[Document], n: int) -> Iterator[list[Document]]:
    while batch := list(islice(it, n)):
        yield batch
