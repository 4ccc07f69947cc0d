"""Stage 3 of a job: merge encoded documents into the index, ``segment_docs`` per commit.

Each commit goes through :meth:`mm.index.writer.IndexWriter.commit`: the documents' entries, their
content hashes and the removal of a changed document's stale chunks are one index transaction, so
a job killed at any moment leaves the last committed state and a re-run encodes only what is missing.
"""

from __future__ import annotations

import time
from typing import Any

from mm.index.jobs.options import JobReport
from mm.index.writer import EncodedDoc


class Merger:
    """Buffers encoded documents and commits them to the index in segments of ``segment_docs``."""

    def __init__(self, writer: Any, segment_docs: int, report: JobReport, bar: Any, truncate_at: int = 0) -> None:
        self.writer, self.segment_docs, self.report, self.bar = writer, segment_docs, report, bar
        self.truncate_at = truncate_at
        self.buffer: list[EncodedDoc] = []
        self.seconds = 0.0  # spent committing to the index

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
        t0 = time.perf_counter()
        known = self.writer.known(d.doc_id for d in docs)
        self.writer.commit(docs)
        self.seconds += time.perf_counter() - t0
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
