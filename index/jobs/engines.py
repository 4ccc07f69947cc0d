"""Stage 2 of a job, driver side: where encoding runs (local worker processes, or Ray Data on a cluster).

Both run the same :class:`~mm.index.jobs.encode.DocEncoder` on units of documents and hand
the encoded documents back, in source order, to the job driver
(:func:`mm.index.jobs.build_job`), which merges them into the index (:mod:`mm.index.jobs.merge`).

* :class:`LocalEngine` — ``workers=1`` encodes in the job's own process; ``workers=N`` starts
  N spawned processes (each with ``threads`` torch threads) and keeps ``2 N`` units in flight.
* :class:`RayEngine` — Ray Data reads the source files, an actor pool (``map_batches`` with
  ``ActorPoolStrategy``) hashes, skips unchanged documents, chunks and encodes; actors that
  die are restarted by Ray and their batches retried (``max_restarts`` / ``max_task_retries``).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from mm.encoders.chunking import ChunkPolicy
from mm.index.jobs.encode import DocEncoder
from mm.index.jobs.options import ENGINES, EncoderSpec
from mm.index.jobs.source import FileSource
from mm.index.writer import EncodedDoc

from mm.corpus import Document
from mm.errors import InvalidInputError, MMError

log = logging.getLogger(__name__)

__all__ = ["ENGINES", "BadRecord", "LocalEngine", "RayEngine", "SkippedDoc", "doc_key", "start_local_ray"]


@dataclass(frozen=True)
class SkippedDoc:
    """A document a Ray worker found unchanged (its content hash is already indexed)."""

    doc_id: str
    content_hash: str


def doc_key(doc_id: str, digest: str) -> bytes:
    """16-byte key of one (document, content) pair (what Ray workers compare against the index)."""
    import hashlib

    return hashlib.blake2b(f"{doc_id}\x1f{digest}".encode(), digest_size=16).digest()


def done_keys(table: dict[str, tuple[str, int]]) -> np.ndarray:
    """Sorted keys of every ``(document, content hash)`` the index holds (shipped to Ray workers)."""
    keys = [doc_key(d, h) for d, (h, _) in table.items() if h]
    return np.sort(np.array(keys, dtype="S16")) if keys else np.zeros(0, dtype="S16")


# ---------------------------------------------------------------------------------- local engine
_WORKER: DocEncoder | None = None


def _init_worker(spec: EncoderSpec, policy: ChunkPolicy, fingerprint: str, batch_size: int, threads: int | None,
                 parent: int) -> None:
    global _WORKER

    def watch_parent() -> None:  # a SIGKILLed job must not leave encoder processes behind
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch_parent, daemon=True, name="mm-parent-watch").start()
    _WORKER = DocEncoder.from_spec(spec, policy, fingerprint, batch_size, threads)


def _process(docs: list[Document]) -> list[EncodedDoc]:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER.process(docs)


class LocalEngine:
    """Encode on this machine: in-process (``workers=1``) or in ``workers`` spawned processes."""

    name = "local"

    def __init__(self, spec: EncoderSpec | None, policy: ChunkPolicy, fingerprint: str, *, workers: int = 1,
                 threads: int | None = None, batch_size: int = 32, encoder: Any = None) -> None:
        if workers < 1:
            raise InvalidInputError(f"workers must be >= 1, got {workers}")
        if spec is None and workers > 1:
            raise InvalidInputError("an encoder object runs in this process only: use workers=1, or pass a model "
                                    "name / EncoderSpec that worker processes can load")
        self.spec, self.policy, self.workers, self.encoder = spec, policy, workers, encoder
        self.fingerprint = fingerprint
        self.worker: DocEncoder | None = None  # the in-process worker (workers=1), for its stage timings
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)
        self.batch_size = batch_size

    def describe(self) -> dict:
        return {"engine": self.name, "workers": self.workers, "threads_per_worker": self.threads}

    def run(self, units: Iterable[list[Document]]) -> Iterator[list[EncodedDoc]]:
        """Encode each unit of documents; results come back in the order of ``units``."""
        if self.workers == 1:
            if self.encoder is not None:  # already loaded by the caller
                worker = DocEncoder(self.encoder, self.policy, self.fingerprint, self.batch_size)
            else:
                worker = DocEncoder.from_spec(self.spec, self.policy, self.fingerprint, self.batch_size, self.threads)
            self.worker = worker
            for unit in units:
                yield worker.process(unit)
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        ctx = multiprocessing.get_context("spawn")  # fork after torch threads started is unsafe
        with ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(self.spec, self.policy, self.fingerprint, self.batch_size, self.threads,
                                           os.getpid())) as pool:
            pending: deque = deque()
            try:
                for unit in units:
                    pending.append(pool.submit(_process, unit))
                    while len(pending) >= 2 * self.workers:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            except BrokenProcessPool as exc:
                raise MMError(
                    "an encoder worker process died (out of memory, killed, or a script without an "
                    "`if __name__ == '__main__':` guard, which spawned workers need); the checkpoint is "
                    "intact: fix the cause and run the job again, or use workers=1") from exc
            finally:
                for fut in pending:
                    fut.cancel()


# ------------------------------------------------------------------------------------ Ray engine
def connect_ray(address: str | None, num_cpus: int) -> bool:
    """Connect to Ray (``auto`` / ``HOST:PORT``) or start a private loopback-only local instance.

    Returns True when this call started Ray (the caller then shuts it down).
    """
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    import ray

    if ray.is_initialized():
        return False
    if address:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise MMError(f"cannot connect to the Ray cluster at {address!r}: {exc}. Start one with "
                          "'ray start --head' or pass --ray-address HOST:PORT of its head node") from exc
        return False
    start_local_ray(num_cpus)
    return True


def start_local_ray(num_cpus: int) -> None:
    """Start Ray on this machine with every listener on 127.0.0.1 (nothing reachable from outside)."""
    # Ray resolves 127.0.0.1 to the machine's external address unless cluster mode is off; with it
    # off, GCS, raylet, object manager and workers all bind loopback only. The variable is set only while
    # ray.init starts those processes (they inherit it), then the caller's environment is restored.
    import ray
    from ray._private import ray_constants

    name = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    previous = os.environ.get(name)
    os.environ[name] = "0"
    try:
        ray_constants.ENABLE_RAY_CLUSTER = False
        ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False, configure_logging=False)
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


class _RayDocEncoder:
    """The callable class Ray Data runs in each pool actor."""

    def __init__(self, spec: EncoderSpec, policy: ChunkPolicy, fingerprint: str, batch_size: int, threads: int,
                 source: FileSource, done_keys: Any) -> None:
        import ray

        if isinstance(done_keys, ray.ObjectRef):
            done_keys = ray.get(done_keys)
        self.done = done_keys
        self.source = source
        self.worker = DocEncoder.from_spec(spec, policy, fingerprint, batch_size, threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return self._call(batch)
        except MMError as exc:  # a data error: not retried; travels in-band (Ray drops the exception's cause)
            cols: dict[str, list] = {c: [] for c in _RAY_COLUMNS}
            _append_row(cols, "", "", True, -1, 0, "", 0, "{}", b"", 0, "", pickle.dumps(exc))
            return _to_arrays(cols)

    def _call(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        docs, bad = self.source.ray_documents(batch)
        hashes = [self.worker.hash(d) for d in docs]
        keys = np.array([doc_key(d.id, h) for d, h in zip(docs, hashes, strict=True)], dtype="S16")
        if len(self.done):
            pos = np.searchsorted(self.done, keys).clip(max=len(self.done) - 1)
            skip = self.done[pos] == keys
        else:
            skip = np.zeros(len(docs), dtype=bool)
        todo = [d for d, s in zip(docs, skip, strict=True) if not s]
        encoded = iter(self.worker.process(todo))
        cols: dict[str, list] = {c: [] for c in _RAY_COLUMNS}
        for doc, digest, skipped in zip(docs, hashes, skip, strict=True):
            if skipped:
                _append_row(cols, doc.id, digest, True, -1, 0, "", 0, "{}", b"", 0, "", b"")
                continue
            enc = next(encoded)
            meta = json.dumps(enc.metadata, sort_keys=True, ensure_ascii=False, default=str)
            for i, (text, vec) in enumerate(zip(enc.chunk_texts, enc.vectors, strict=True)):
                _append_row(cols, enc.doc_id, digest, False, i, enc.n_chunks, text, enc.n_tokens, meta,
                            np.ascontiguousarray(vec, dtype=np.float32).tobytes(), vec.shape[0] if vec.ndim == 2 else 0,
                            "", b"")
        for where in bad:  # malformed records skipped under skip_bad: reported to the driver
            _append_row(cols, "", "", True, -1, 0, "", 0, "{}", b"", 0, where, b"")
        return _to_arrays(cols)


_RAY_COLUMNS = ("doc_id", "content_hash", "skip", "chunk_index", "n_chunks", "text", "n_tokens", "metadata", "vec", "vec_rows", "bad", "error")


def _to_arrays(cols: dict[str, list]) -> dict[str, np.ndarray]:
    out = {c: np.array(v, dtype=object) for c, v in cols.items()}
    for c in ("skip", "chunk_index", "n_chunks", "n_tokens", "vec_rows"):
        out[c] = np.array(cols[c], dtype=bool if c == "skip" else np.int64)
    return out


def _append_row(cols: dict[str, list], *values: Any) -> None:
    for name, value in zip(_RAY_COLUMNS, values, strict=True):
        cols[name].append(value)


@dataclass(frozen=True)
class BadRecord:
    """A malformed corpus record a Ray worker skipped (``skip_bad``): ``where: reason``."""

    where: str


def _mm_cause(exc: BaseException) -> MMError | None:
    """The MMError a Ray task raised, out of Ray's wrappers (RayTaskError, UserCodeException)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MMError):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return None


class RayEngine:
    """Ray Data reads the source; an actor pool chunks and encodes; results stream back in order."""

    name = "ray"

    def __init__(self, spec: EncoderSpec, policy: ChunkPolicy, fingerprint: str, *, workers: int = 2,
                 threads: int = 1, batch_size: int = 32, docs_per_call: int = 64, address: str | None = None,
                 max_restarts: int = 4) -> None:
        if workers < 1:
            raise InvalidInputError(f"workers must be >= 1, got {workers}")
        if spec is None:
            raise InvalidInputError("engine='ray' loads the encoder in each actor: pass a model name or an "
                                    "EncoderSpec, not an encoder object")
        self.spec, self.policy, self.workers, self.threads = spec, policy, workers, threads
        self.fingerprint = fingerprint
        self.batch_size, self.docs_per_call, self.address = batch_size, docs_per_call, address
        self.max_restarts = max_restarts
        self._started = False

    def describe(self) -> dict:
        return {"engine": self.name, "workers": self.workers, "threads_per_worker": self.threads,
                "ray_address": self.address or "local (127.0.0.1)"}

    def __enter__(self) -> RayEngine:
        self._started = connect_ray(self.address, max(self.workers, os.cpu_count() or 1))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            import ray

            ray.shutdown()

    def run(self, source: FileSource, done_keys: np.ndarray) -> Iterator[EncodedDoc | SkippedDoc | BadRecord]:
        """Stream every source document back: encoded, or skipped as unchanged."""
        import ray
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # same merge order as the local engine
        ctx.enable_progress_bars = False  # the job shows its own bar
        ctx.enable_operator_progress_bars = False
        ctx.print_on_execution_start = False
        # small read blocks (about docs_per_call documents each) spread one big file over the pool;
        # reads take no CPU slot, so a pool as large as the cluster cannot starve them
        ctx.target_max_block_size = max(16 * 1024, source.bytes_per_doc() * self.docs_per_call)
        ds = source.ray_dataset()
        ds = ds.map_batches(
            _RayDocEncoder,
            fn_constructor_kwargs={"spec": self.spec, "policy": self.policy, "fingerprint": self.fingerprint,
                                   "batch_size": self.batch_size,
                                   "threads": self.threads, "source": source, "done_keys": ray.put(done_keys)},
            batch_size=self.docs_per_call,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.workers),
            num_cpus=self.threads,
            max_restarts=self.max_restarts,
            max_task_retries=-1,
        )
        pending: dict[str, dict] = {}
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                yield from self._regroup(batch, pending)
        except Exception as exc:  # a user-input error inside an actor comes back wrapped by Ray
            cause = _mm_cause(exc)
            if cause is None:
                raise
            raise cause from None
        if pending:
            raise MMError(f"Ray returned incomplete documents: {sorted(pending)[:5]}")

    def _regroup(self, batch: dict[str, np.ndarray],
                 pending: dict[str, dict]) -> Iterator[EncodedDoc | SkippedDoc | BadRecord]:
        for i in range(len(batch["doc_id"])):
            doc_id, digest = str(batch["doc_id"][i]), str(batch["content_hash"][i])
            if batch["error"][i]:
                raise pickle.loads(bytes(batch["error"][i]))
            if batch["bad"][i]:
                yield BadRecord(str(batch["bad"][i]))
                continue
            if bool(batch["skip"][i]):
                yield SkippedDoc(doc_id, digest)
                continue
            entry = pending.setdefault(doc_id, {"chunks": {}, "row": i})
            rows = int(batch["vec_rows"][i])
            vec = np.frombuffer(bytes(batch["vec"][i]), dtype=np.float32)
            vec = vec.reshape(rows, -1) if rows else vec
            entry["chunks"][int(batch["chunk_index"][i])] = (str(batch["text"][i]), vec.copy())
            n_chunks = int(batch["n_chunks"][i])
            if len(entry["chunks"]) == n_chunks:
                del pending[doc_id]
                chunks = [entry["chunks"][k] for k in range(n_chunks)]
                yield EncodedDoc(doc_id, digest, [c[0] for c in chunks], [c[1] for c in chunks],
                                 int(batch["n_tokens"][i]), json.loads(str(batch["metadata"][i])))
