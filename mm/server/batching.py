"""A bounded request queue per chat model whose worker thread generates waiting requests as one batch.

Requests wait in the queue (at most ``queue_size``; one more raises :class:`QueueFull`, answered
with 429). The worker takes the oldest request plus every waiting one with the same sampling
settings (up to ``batch_size``), encodes them as one left-padded batch and runs
:func:`mm.server.generation.generate_rows`. Each request receives its text pieces and its end
through its own callbacks; a cancelled request still waiting is dropped without running.

>>> import tempfile, mm, mm.testing
>>> from mm.server.adapters import ChatEngine
>>> engine = ChatEngine(mm.pipeline("chat", model=mm.testing.make_tiny_lfm2(tempfile.mkdtemp()), dtype="float32"))
>>> queue = ChatQueue(engine, batch_size=4, queue_size=8)
>>> jobs = [ChatJob(engine.prepare("Hi", {}), Row(max_tokens=4)) for _ in range(3)]
>>> for job in jobs: queue.submit(job)
>>> all(job.wait(60) for job in jobs), {job.row.finish_reason for job in jobs} <= {"stop", "length"}
(True, True)
>>> queue.close()
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mm.server.generation import Row, Sampling, generate_rows

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The model's request queue is full."""


@dataclass
class ChatJob:
    """One queued chat request: its prepared input, its generation row, and how it hears back."""

    item: Any
    row: Row
    sampling: Sampling = field(default_factory=Sampling)
    on_done: Callable[[ChatJob], None] | None = None
    prompt_tokens: int = 0
    batch_size: int = 0
    error: BaseException | None = None
    _done: threading.Event = field(default_factory=threading.Event)

    def finish(self) -> None:
        self._done.set()
        if self.on_done is not None:
            self.on_done(self)

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def compatible(self, other: ChatJob) -> bool:
        """Whether both can share one batch (a seeded request always runs alone, to stay reproducible)."""
        return self.sampling == other.sampling and self.sampling.seed is None


class ChatQueue:
    """The bounded queue and batching worker of one chat model (text or vision-language)."""

    def __init__(self, engine: Any, *, batch_size: int = 8, queue_size: int = 64) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.queue_size = queue_size
        self._waiting: deque[ChatJob] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.batches: list[int] = []  # sizes of the batches run, most recent last (capped), for stats and tests
        self.cancelled = 0  # requests whose client went away before they finished
        self.running = 0  # requests in the batch being generated now
        self.batch_count = 0
        self.largest_batch = 0
        self._thread = threading.Thread(target=self._run, name=f"mm-chat-{engine.kind}", daemon=True)
        self._thread.start()

    def submit(self, job: ChatJob) -> None:
        """Queue ``job`` or raise :class:`QueueFull`."""
        with self._cond:
            if len(self._waiting) >= self.queue_size:
                raise QueueFull(f"{len(self._waiting)} requests are already waiting for this model")
            self._waiting.append(job)
            self._cond.notify()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def stats(self) -> dict[str, int]:
        """Waiting and running requests, batches run (recent), the largest of them, requests cancelled."""
        return {"waiting": len(self._waiting), "running": self.running, "batches": self.batch_count,
                "largest_batch": self.largest_batch, "cancelled": self.cancelled}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    def _take(self) -> list[ChatJob] | None:
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            first = self._waiting.popleft()
            batch = [first]
            for job in list(self._waiting):
                if len(batch) >= self.batch_size:
                    break
                if first.compatible(job):
                    self._waiting.remove(job)
                    batch.append(job)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            live = []
            for job in batch:
                if job.row.cancel.is_set():
                    job.row.finish_reason = "cancelled"
                    self.cancelled += 1
                    job.finish()
                else:
                    live.append(job)
            if live:
                self._generate(live)

    def _generate(self, jobs: list[ChatJob]) -> None:
        t0 = time.perf_counter()
        self.running = len(jobs)
        try:
            inputs = self.engine.encode([job.item for job in jobs])
            counts = inputs["attention_mask"].sum(1).tolist()
            for job, count in zip(jobs, counts, strict=True):
                job.prompt_tokens, job.batch_size = int(count), len(jobs)
            generate_rows(self.engine.backbone, inputs, [job.row for job in jobs], jobs[0].sampling)
        except BaseException as exc:  # handed to each request; the worker keeps serving
            log.exception("batched generation failed")
            for job in jobs:
                job.error = exc
        self.running = 0
        self.batch_count += 1
        self.largest_batch = max(self.largest_batch, len(jobs))
        self.batches = [*self.batches[-999:], len(jobs)]
        self.cancelled += sum(job.row.finish_reason == "cancelled" for job in jobs)
        log.debug("batch of %d in %.2fs", len(jobs), time.perf_counter() - t0)
        for job in jobs:
            job.finish()
