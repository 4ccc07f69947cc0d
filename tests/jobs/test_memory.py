"""Memory of add/sync does not grow with the index: no per-entry Python objects (issue 12, streaming).

Python allocations (numpy's included) are traced with tracemalloc around a job against a small and
a 10x larger index (small segments and commits, so that one segment's or one batch's transient
memory is the same in both). Per-entry objects (a dict of every entry's metadata, a table of every
document) cost ~550 bytes per entry; the compact columns of :mod:`mm.index.entries` about 100.
"""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
from mm.encoders.chunking import ChunkPolicy
from mm.index import open_index
from mm.index.jobs import build_job, sync
from mm.index.writer import EncodedDoc, IndexWriter

from mm.corpus import Document
from mm.testing.hash_encoder import HashEncoder

CHUNKS = 3


def _docs(n: int, prefix: str = "d") -> list[Document]:
    return [Document(f"{prefix}{i}", f"text of document {i} " + "word " * 20, {"n": i}) for i in range(n)]


def _index(path, docs: list[Document], enc: HashEncoder) -> None:
    """An index holding ``docs`` as CHUNKS entries each (random vectors, real content hashes)."""
    IndexWriter.open_or_create(path, enc, ChunkPolicy())
    writer = IndexWriter.open_or_create(path, enc, ChunkPolicy(), index=open_index(path))
    rng = np.random.default_rng(0)
    for start in range(0, len(docs), 100):  # small segments: opening one costs little
        writer.commit([EncodedDoc(d.id, writer.hash(d), [f"{d.id} part {j}" for j in range(CHUNKS)],
                                  list(rng.standard_normal((CHUNKS, enc.dim), dtype=np.float32)), 0, d.metadata)
                       for d in docs[start:start + 100]])


def _traced_peak(job) -> tuple[int, object]:
    gc.collect()
    tracemalloc.start()
    try:
        report = job()
        return tracemalloc.get_traced_memory()[1], report
    finally:
        tracemalloc.stop()


def test_add_and_sync_memory_is_flat_in_index_size(tmp_path):
    enc = HashEncoder(dim=8, kind="dense", max_tokens=64)
    small_n, large_n = 300, 3000
    new = _docs(30, prefix="new")
    peaks = {}
    for n in (small_n, large_n):
        docs = _docs(n)
        _index(tmp_path / f"i{n}", docs, enc)
        add_peak, add = _traced_peak(lambda: build_job(new, tmp_path / f"i{n}", encoder=enc, resume=True,  # noqa: B023
                                                       progress=False, workers=1, segment_docs=64))
        assert (add.docs_new, add.index_docs, add.index_chunks) == (30, n + 30, n * CHUNKS + 30)
        sync_peak, report = _traced_peak(lambda: sync(docs, tmp_path / f"i{n}", encoder=enc,  # noqa: B023
                                                      progress=False, workers=1, segment_docs=64))
        assert (report.docs_unchanged, report.docs_deleted, report.docs_encoded) == (n, 30, 0)
        peaks[n] = add_peak, sync_peak
    grown_entries = (large_n - small_n) * CHUNKS
    add_per_entry = (peaks[large_n][0] - peaks[small_n][0]) / grown_entries
    # an add of a fixed batch: what the open index costs per entry (was ~550 B with lists of dicts)
    assert add_per_entry < 200, (peaks, add_per_entry)
    # a sync of a corpus as large as the index: the index's columns plus the set of the source's ids,
    # ~620 B per document of 3 entries (was ~2000 with a dict per entry and a table of every document)
    sync_per_doc = (peaks[large_n][1] - peaks[small_n][1]) / (large_n - small_n)
    assert sync_per_doc < 1000, (peaks, sync_per_doc)
