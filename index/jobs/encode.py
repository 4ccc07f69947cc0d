"""Stage 2 of a job, worker side: chunk documents and encode them in length-sorted batches.

The same :class:`DocEncoder` runs in the job's own process, in each local worker process and in
each Ray actor, which is why all engines produce the same vectors for the same input.

>>> from mm.corpus import Document
>>> from mm.encoders.chunking import ChunkPolicy
>>> from mm.index.jobs.options import EncoderSpec
>>> spec = EncoderSpec("mm.testing.hash_encoder:HashEncoder", {"dim": 8, "max_tokens": 12})
>>> worker = DocEncoder.from_spec(spec, ChunkPolicy(), "fp", batch_size=2)
>>> [d.n_chunks for d in worker.process([Document("a", "one two three four five six")])]
[2]
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import numpy as np
from mm.encoders.chunking import ChunkPolicy
from mm.index.jobs.options import EncoderSpec
from mm.index.writer import EncodedDoc, content_hash

from mm.corpus import Document
from mm.errors import InvalidInputError

log = logging.getLogger(__name__)


class DocEncoder:
    """Chunks and encodes units of documents inside one worker (process or Ray actor)."""

    def __init__(self, encoder: Any, policy: ChunkPolicy, fingerprint_text: str, batch_size: int = 32) -> None:
        self.encoder = encoder
        self.policy = policy.resolve(encoder)
        self.fingerprint_text = fingerprint_text
        self.batch_size = batch_size
        self.seconds = {"chunk": 0.0, "encode": 0.0}  # where this worker's time went (the job reports it)

    @classmethod
    def from_spec(cls, spec: EncoderSpec, policy: ChunkPolicy, fingerprint_text: str, batch_size: int = 32,
                  threads: int | None = None) -> DocEncoder:
        """In a worker process: set its torch threads, load the encoder from its recipe."""
        if threads:  # this process is a worker of ours: size its thread pools before the libraries start them
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                os.environ[var] = str(threads)
        encoder = spec.load()
        if threads and "torch" in sys.modules:  # only when the encoder uses torch (importing it costs seconds)
            sys.modules["torch"].set_num_threads(threads)
        log.debug("worker %d loaded %s", os.getpid(), spec.describe())
        return cls(encoder, policy, fingerprint_text, batch_size)

    def hash(self, doc: Document) -> str:
        return content_hash(doc, self.fingerprint_text)

    def process(self, docs: list[Document]) -> list[EncodedDoc]:
        """Chunk ``docs``, encode all their chunks in length-sorted batches, regroup per document."""
        t0 = time.perf_counter()
        per_doc = [self.policy.split(doc.text, self.encoder) for doc in docs]
        texts = [t for chunks in per_doc for t in chunks]
        t1 = time.perf_counter()
        vectors, tokens = encode_sorted(self.encoder, texts, self.batch_size)
        self.seconds["chunk"] += t1 - t0
        self.seconds["encode"] += time.perf_counter() - t1
        out, pos = [], 0
        for doc, chunks in zip(docs, per_doc, strict=True):
            n = len(chunks)
            out.append(EncodedDoc(doc.id, self.hash(doc), chunks, vectors[pos:pos + n],
                                  int(sum(tokens[pos:pos + n])), doc.metadata))
            pos += n
        return out


def encode_sorted(encoder: Any, texts: list[str], batch_size: int) -> tuple[list[np.ndarray], list[int]]:
    """Encode ``texts`` in batches of similar length (less padding); results in input order.

    Returns the vectors and each text's token count.
    """
    if not texts:
        return [], []
    tokens = encoder.token_lengths(texts)
    order = sorted(range(len(texts)), key=lambda i: (-tokens[i], i))
    vectors: list[np.ndarray | None] = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        encoded = encoder.encode_documents([texts[i] for i in idx], batch_size=len(idx))
        if len(encoded) != len(idx):
            raise InvalidInputError(f"encoder returned {len(encoded)} results for {len(idx)} texts")
        for i, vec in zip(idx, encoded, strict=True):
            vectors[i] = np.asarray(vec, dtype=np.float32)
    return vectors, tokens  # type: ignore[return-value]
