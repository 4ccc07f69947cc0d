"""Stage 1 of a job: decide what to encode by comparing the source with what the index holds now.

A document is encoded when the index has no entries for it, or holds it with another content hash
(:func:`mm.index.writer.content_hash`); otherwise it is skipped as unchanged. Nothing but the
index decides: a document deleted from the index comes back, one edited by ``add`` is compared
against its new content.

>>> import tempfile, pathlib
>>> from mm.corpus import Document
>>> from mm.encoders.chunking import ChunkPolicy
>>> from mm.index.jobs.options import JobReport
>>> from mm.index.writer import IndexWriter
>>> from mm.testing.hash_encoder import HashEncoder
>>> writer = IndexWriter.open_or_create(pathlib.Path(tempfile.mkdtemp()) / "i", HashEncoder(dim=4), ChunkPolicy())
>>> planner = Planner(writer, JobReport("local", 1))
>>> [[d.id for d in unit] for unit in planner.units([Document("a", "x"), Document("b", "y")], 64)]
[['a', 'b']]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from mm.index.jobs.options import JobReport

from mm.corpus import Document
from mm.errors import InvalidInputError, MMError


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


class Planner:
    """Streams the source in units of documents to encode; remembers every id the source yielded."""

    def __init__(self, writer: Any, report: JobReport, bar: Any = None) -> None:
        self.writer, self.report, self.bar = writer, report, bar or _NoBar()
        self.seen: set[str] = set()

    def mark_seen(self, doc_ids: Iterable[str]) -> None:
        """Record ids the source yielded in this run; a repeated id is an error."""
        for doc_id in doc_ids:
            if doc_id in self.seen:
                raise InvalidInputError(f"document id {doc_id!r} occurs more than once in the source; ids must "
                                        "be unique (each id is one document in the index)")
            self.seen.add(doc_id)

    def units(self, src: Iterable[Document], docs_per_unit: int) -> Iterator[list[Document]]:
        """Units of at most ``docs_per_unit`` documents that are new or changed."""
        for docs in batched(iter(src), docs_per_unit):
            self.mark_seen(d.id for d in docs)
            known = self.writer.known(d.id for d in docs)
            todo = [d for d in docs if known.get(d.id, ("",))[0] != self.writer.hash(d)]
            self.report.docs_seen += len(docs)
            self.report.docs_unchanged += len(docs) - len(todo)
            self.bar.update(len(docs) - len(todo))
            if todo:
                yield todo

    def check_ray_stream(self, items: Iterator[Any], check_every: int = 512) -> Iterator[Any]:
        """Ray results: record seen ids, verify the workers' skips exactly against the index."""
        from mm.index.jobs.engines import BadRecord, SkippedDoc

        pending: list[Any] = []
        for item in items:
            if isinstance(item, BadRecord):
                self.report.skipped_where.append(item.where)
                continue
            self.report.docs_seen += 1
            self.mark_seen([item.doc_id])
            if isinstance(item, SkippedDoc):
                pending.append(item)
            else:
                yield item
            if len(pending) >= check_every:
                self._settle(pending)
        self._settle(pending)

    def _settle(self, skipped: list[Any]) -> None:
        known = self.writer.known(s.doc_id for s in skipped)
        for s in skipped:
            if known.get(s.doc_id, ("",))[0] != s.content_hash:
                raise MMError(f"a Ray worker skipped document {s.doc_id!r} as unchanged but the index holds "
                              "another version; re-run the job (no data was lost)")
        self.report.docs_unchanged += len(skipped)
        self.bar.update(len(skipped))
        skipped.clear()


def dry_run(src: Iterable[Document], writer: Any, worker: Any, report: JobReport, prune: bool) -> None:
    """Count what a real run would encode (``writer``: the existing index, or None), writing nothing."""
    planner = Planner(writer, report) if writer is not None else None
    seen: set[str] = set()
    for docs in batched(iter(src), 512):
        if planner is not None:
            planner.mark_seen(d.id for d in docs)
            known = writer.known(d.id for d in docs)
        else:
            _unique(seen, docs)
            known = {}
        for doc in docs:
            previous = known.get(doc.id)
            if previous is not None and previous[0] == worker.hash(doc):
                report.docs_unchanged += 1
                continue
            chunks = worker.policy.split(doc.text, worker.encoder)
            report.chunks += len(chunks)
            report.tokens += sum(worker.encoder.token_lengths(chunks))
            if previous is None:
                report.docs_new += 1
            else:
                report.docs_changed += 1
        report.docs_seen += len(docs)
    if writer is not None:
        if prune:
            report.docs_deleted = len(writer.documents_not_in(planner.seen))
        report.index_docs, report.index_chunks = writer.totals()


def _unique(seen: set[str], docs: list[Document]) -> None:
    for doc in docs:
        if doc.id in seen:
            raise InvalidInputError(f"document id {doc.id!r} occurs more than once in the source")
        seen.add(doc.id)


def batched(it: Iterator[Any], n: int) -> Iterator[list[Any]]:
    """Lists of ``n`` items (the last one shorter)."""
    while batch := list(islice(it, n)):
        yield batch
