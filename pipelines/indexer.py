"""Indexing jobs: read a corpus, chunk long documents, encode, and write an mm index.

``build_index`` validates the whole corpus before writing anything, builds into a temporary
sibling folder and renames it into place at the end, so a failed or killed build leaves no
half-built index (and never touches an existing one). ``add_documents`` adds a corpus to an
existing index with the encoder that built it, one committed batch at a time: ids already in
the index are replaced, so re-running an interrupted ``add`` is safe.

Documents longer than the encoder's window become overlapping chunks ``"<id>#<n>"`` whose
metadata carry ``_doc`` (the document id) and ``_chunk`` (the window number); search maps
hits back to their document.

>>> import tempfile, pathlib
>>> src = pathlib.Path(tempfile.mkdtemp()) / "c.jsonl"
>>> _ = src.write_text('{"_id": "a", "text": "Paris is in France."}\\n{"_id": "b", "text": "Berlin is in Germany."}\\n')
>>> report = build_index(src, pathlib.Path(tempfile.mkdtemp()) / "idx", model="minilm")
>>> report.documents, report.chunks, report.skipped
(2, 2, 0)
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm.corpus import CorpusReader, Document
from mm.errors import InvalidInputError

log = logging.getLogger(__name__)

#: documents encoded and committed per batch
DEFAULT_BATCH_DOCS = 1024
#: metadata keys mm adds to chunks of long documents
DOC_KEY, CHUNK_KEY = "_doc", "_chunk"
#: what happens to documents longer than the encoder's window
LONG_DOC_POLICIES = ("chunk", "truncate")


@dataclass
class IndexReport:
    """What an indexing job did."""

    index: str
    documents: int = 0
    chunks: int = 0
    skipped: int = 0
    skipped_where: list[str] = field(default_factory=list)
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "documents": self.documents, "chunks": self.chunks, "skipped": self.skipped,
                "skipped_where": self.skipped_where, "seconds": round(self.seconds, 3)}


def read_corpus(source: str | Path, *, skip_bad: bool = False) -> tuple[list[Document], CorpusReader]:
    """All documents of ``source`` (raises on the first malformed record unless ``skip_bad``)."""
    reader = CorpusReader(source, skip_bad=skip_bad)
    docs = reader.read_all()
    if not docs:
        raise InvalidInputError(f"{source} holds no documents" + (
            f" ({len(reader.skipped)} malformed record(s) skipped)" if reader.skipped else ""))
    return docs, reader


def chunk_for(encoder, docs: Sequence[Document], *, overlap: int | None = None, long_docs: str = "chunk"):
    """Split ``docs`` into chunks that fit ``encoder`` without truncation (a small safety margin kept).

    ``long_docs="truncate"`` keeps one entry per document with its whole text, which the encoder
    then truncates to its window exactly as the model's own library does; how many documents
    that cuts is logged.
    """
    from mm.encoders.chunking import Chunk, chunk_documents

    check_long_docs(long_docs)
    if long_docs == "truncate":
        limit = encoder.max_document_tokens
        cut = sum(n > limit for n in encoder.token_lengths([d.text for d in docs]))
        if cut:
            log.warning("%d of %d documents are longer than the encoder's %d-token window and were truncated "
                        "(long_docs='truncate'; use 'chunk' to index every window)", cut, len(docs), limit)
        return [Chunk(d.id, d.id, 0, d.text) for d in docs]
    window = max(8, encoder.max_document_tokens - 8)  # re-tokenising a cut text may add a token or two
    return chunk_documents([d.id for d in docs], [d.text for d in docs], encoder.tokenizer, max_tokens=window,
                           overlap=overlap)


def check_long_docs(long_docs: str) -> None:
    """Validate a long-document policy name."""
    if long_docs not in LONG_DOC_POLICIES:
        raise InvalidInputError(f"long_docs must be one of {', '.join(LONG_DOC_POLICIES)}, got {long_docs!r}")


def encode_and_add(index, encoder, docs: Sequence[Document], *, batch_docs: int = DEFAULT_BATCH_DOCS,
                   progress: bool = False, long_docs: str = "chunk") -> int:
    """Chunk, encode and add ``docs`` to ``index`` in committed batches; returns the number of chunks."""
    from tqdm.auto import tqdm

    if batch_docs < 1:
        raise InvalidInputError(f"batch_docs must be >= 1, got {batch_docs}")
    n_chunks = 0
    stored: dict[str, list[str]] = {}
    for stored_id in (index.ids() if len(index) else []):
        stored.setdefault(document_of(stored_id), []).append(stored_id)  # candidates; checked below
    bar = tqdm(total=len(docs), desc="indexing", unit="doc", disable=not progress)
    try:
        for start in range(0, len(docs), batch_docs):
            batch = docs[start:start + batch_docs]
            chunks = chunk_for(encoder, batch, long_docs=long_docs)
            by_id = {d.id: d for d in batch}
            multi = {c.doc_id for c in chunks if c.chunk_id != c.doc_id}
            texts = [c.text for c in chunks]
            vectors = encoder.encode_documents(texts)
            metadata = []
            for c in chunks:
                meta = dict(by_id[c.doc_id].metadata)
                if c.doc_id in multi:
                    meta[DOC_KEY], meta[CHUNK_KEY] = c.doc_id, c.index
                metadata.append(meta)
            new_ids = {c.chunk_id for c in chunks}
            stale = [i for d in batch for i in stored.get(d.id, ())
                     if i not in new_ids and (i == d.id or document_of(i, index) == d.id)]
            index.add([c.chunk_id for c in chunks], vectors, texts=texts, metadata=metadata)
            if stale:
                index.delete(stale)
            n_chunks += len(chunks)
            bar.update(len(batch))
    finally:
        bar.close()
    return n_chunks


def document_of(stored_id: str, index=None) -> str:
    """The document id of a stored id (``"doc#3"`` -> ``"doc"``; other ids unchanged).

    With ``index``, a ``#N`` suffix only counts when the stored entry is really a chunk (its
    metadata name the document), so a document whose own id ends in ``#N`` stays itself.
    """
    base, sep, tail = stored_id.rpartition("#")
    if not (sep and tail.isdigit()):
        return stored_id
    if index is not None:
        stored = index.get(stored_id)
        if stored is None or stored.metadata.get(DOC_KEY) != base:
            return stored_id
    return base


def ids_of_documents(index, doc_ids: Iterable[str]) -> list[str]:
    """Every stored id (the document itself or its chunks) belonging to ``doc_ids``."""
    wanted = set(doc_ids)
    return [i for i in index.ids() if i in wanted or (document_of(i) in wanted and document_of(i, index) in wanted)]


def build_index(source: str | Path, index_dir: str | Path, *, model: str | Path | None = None, kind: str = "auto",
                skip_bad: bool = False, nbits: int = 2, batch_docs: int = DEFAULT_BATCH_DOCS,
                threads: int | None = None, progress: bool = False, encoder=None,
                long_docs: str = "chunk") -> IndexReport:
    """Build a new index at ``index_dir`` from the corpus ``source``.

    ``long_docs``: ``"chunk"`` (overlapping windows, one hit per document) or ``"truncate"``
    (the encoder's own truncation, logged); the index remembers it for later ``add``.

    ``index_dir`` must not hold an index already (use :func:`add_documents`). ``encoder`` may be
    passed pre-loaded (else ``model``/``kind`` select it, see :func:`mm.encoders.loader.load_encoder`).
    """
    from mm.encoders.loader import load_encoder
    from mm.index import create_index

    t0 = time.perf_counter()
    check_long_docs(long_docs)
    target = Path(index_dir).expanduser()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InvalidInputError(f"{target} already exists and is not empty; build into a new folder, or add "
                                f"documents to an existing index with `mm index add`")
    docs, reader = read_corpus(source, skip_bad=skip_bad)
    encoder = encoder or load_encoder(model, kind=kind, threads=threads)
    staging = target.with_name(f".{target.name}.building-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    try:
        options = {"nbits": nbits} if encoder.kind == "multivector" else {}
        info = {**encoder.describe(), "long_docs": long_docs}
        index = create_index(staging, kind=encoder.kind, dim=encoder.dim, encoder_info=info,
                             **options)
        n_chunks = encode_and_add(index, encoder, docs, batch_docs=batch_docs, progress=progress,
                                  long_docs=long_docs)
        if index.info().get("segments", 1) > 1:
            index.compact()
        del index
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    from mm.index import open_index

    report = IndexReport(str(target), documents=len(docs), chunks=n_chunks, skipped=len(reader.skipped),
                         skipped_where=[s.where for s in reader.skipped], seconds=time.perf_counter() - t0)
    report.info = open_index(target).info()
    log.info("built %s: %d documents (%d chunks) in %.1f s", target, report.documents, n_chunks, report.seconds)
    return report


def add_documents(source: str | Path, index_dir: str | Path, *, skip_bad: bool = False,
                  batch_docs: int = DEFAULT_BATCH_DOCS, threads: int | None = None, progress: bool = False,
                  encoder=None) -> IndexReport:
    """Add (or replace) the documents of ``source`` in the existing index at ``index_dir``.

    Long documents follow the policy the index was built with.
    """
    from mm.encoders.loader import load_encoder_for_index
    from mm.index import open_index

    t0 = time.perf_counter()
    index = open_index(index_dir)
    docs, reader = read_corpus(source, skip_bad=skip_bad)
    encoder = encoder or load_encoder_for_index(index.encoder_info, threads=threads)
    check_encoder_matches(index, encoder)
    n_chunks = encode_and_add(index, encoder, docs, batch_docs=batch_docs, progress=progress,
                              long_docs=index.encoder_info.get("long_docs", "chunk"))
    return IndexReport(str(index_dir), documents=len(docs), chunks=n_chunks, skipped=len(reader.skipped),
                       skipped_where=[s.where for s in reader.skipped], seconds=time.perf_counter() - t0,
                       info=index.info())


def check_encoder_matches(index, encoder) -> None:
    """Raise if ``encoder`` cannot produce vectors for ``index`` (kind or dimension differ)."""
    if encoder.kind != index.kind or encoder.dim != index.dim:
        raise InvalidInputError(f"the encoder gives {encoder.kind} {encoder.dim}-d vectors but the index at "
                                f"{index.path} holds {index.kind} {index.dim}-d vectors")
