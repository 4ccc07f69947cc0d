"""Worker side of an indexing job: chunk documents and encode them in length-sorted batches.

The same :class:`DocEncoder` runs in the single-process engine, in each local
worker process and in each Ray actor, which is why all engines produce the same
vectors for the same input.

>>> from mm.index.job_types import Document, EncoderSpec
>>> worker = DocEncoder.from_spec(EncoderSpec("mm.testing.hash_encoder:HashEncoder", {"dim": 8}),
...                               Chunking(max_tokens=4, overlap=1), batch_size=2)
>>> [d.n_chunks for d in worker.process([Document("a", "one two three four five six")])]
[2]
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import asdict, dataclass

import numpy as np
from mm.index.job_types import Document, EncodedDoc, EncoderSpec, JobEncoder

from mm.errors import InvalidInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chunking:
    """Split documents into overlapping windows of at most ``max_tokens`` encoder tokens.

    Encoders with a tokenizer (``split_text``, see :mod:`mm.index.job_models`) cut windows through
    the tokenizer's character offsets. Otherwise a window is the longest run of whole words whose
    token count fits; a single word longer than
    a window (a URL, a base64 blob) is cut into pieces that fit, so nothing is ever truncated.
    ``overlap`` tokens of context are repeated at the start of the next window.
    """

    max_tokens: int = 256
    overlap: int = 32
    title: bool = True  # prepend the title (and a blank line) to the text before chunking
    truncate: bool = False  # no chunking: one chunk per document, the model truncates long ones (logged)

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise InvalidInputError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not 0 <= self.overlap < self.max_tokens:
            raise InvalidInputError(f"overlap must be in [0, max_tokens), got {self.overlap}")

    def describe(self) -> dict:
        return asdict(self)

    def full_text(self, doc: Document) -> str:
        """The text that is chunked for ``doc``."""
        if self.title and doc.title:
            return f"{doc.title}\n\n{doc.text}" if doc.text else doc.title
        return doc.text

    def split(self, doc: Document, encoder: JobEncoder) -> list[str]:
        """Chunks of ``doc`` (at least one, even for an empty document)."""
        text = self.full_text(doc)
        if self.truncate:
            return [text]
        if hasattr(encoder, "split_text"):  # the encoder cuts through its own tokenizer's offsets
            return encoder.split_text(text, self.max_tokens, self.overlap) or [text]
        words = text.split()
        if not words:
            return [text]
        counts = encoder.count_tokens(words)
        if sum(counts) <= self.max_tokens:
            return [text]
        if max(counts) > self.max_tokens:
            words, counts = self._split_long_words(words, counts, encoder)
        chunks: list[str] = []
        start = 0
        while start < len(words):
            end, used = start, 0
            while end < len(words) and (end == start or used + counts[end] <= self.max_tokens):
                used += counts[end]
                end += 1
            chunks.append(" ".join(words[start:end]))
            if end >= len(words):
                break
            # step back over up to `overlap` tokens of whole words, always moving forward
            back, kept = end, 0
            while back - 1 > start and kept + counts[back - 1] <= self.overlap:
                back -= 1
                kept += counts[back]
            start = back
        return chunks


    def _split_long_words(self, words: list[str], counts: list[int],
                          encoder: JobEncoder) -> tuple[list[str], list[int]]:
        out_words: list[str] = []
        out_counts: list[int] = []
        for word, count in zip(words, counts, strict=True):
            pending = [(word, count)]
            while pending:
                piece, n = pending.pop()
                if n <= self.max_tokens or len(piece) == 1:
                    out_words.append(piece)
                    out_counts.append(n)
                    continue
                half = len(piece) // 2
                left, right = piece[:half], piece[half:]
                n_left, n_right = encoder.count_tokens([left, right])
                pending.extend([(right, n_right), (left, n_left)])
        return out_words, out_counts


class DocEncoder:
    """Chunks and encodes batches of documents inside one worker (process or Ray actor)."""

    def __init__(self, encoder: JobEncoder, chunking: Chunking, batch_size: int = 32) -> None:
        self.encoder = encoder
        self.chunking = chunking
        self.batch_size = batch_size

    @classmethod
    def from_spec(cls, spec: EncoderSpec, chunking: Chunking, batch_size: int = 32,
                  threads: int | None = None) -> DocEncoder:
        """Set this process's torch threads, load the encoder from its recipe."""
        if threads:  # before the encoder's libraries start their thread pools
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                os.environ[var] = str(threads)
        encoder = spec.load()
        if threads and "torch" in sys.modules:  # only when the encoder uses torch (importing it costs seconds)
            sys.modules["torch"].set_num_threads(threads)
        log.debug("worker %d loaded %s", os.getpid(), spec.describe())
        return cls(encoder, chunking, batch_size)

    def process(self, docs: list[Document]) -> list[EncodedDoc]:
        """Chunk ``docs``, encode all their chunks in length-sorted batches, regroup per document."""
        per_doc = [self.chunking.split(doc, self.encoder) for doc in docs]
        texts = [t for chunks in per_doc for t in chunks]
        vectors, tokens = encode_sorted(self.encoder, texts, self.batch_size)
        out, pos = [], 0
        from mm.index.job_types import content_hash

        for doc, chunks in zip(docs, per_doc, strict=True):
            n = len(chunks)
            out.append(EncodedDoc(doc.id, content_hash(doc), chunks, vectors[pos:pos + n],
                                  int(sum(tokens[pos:pos + n])), doc.title, doc.metadata))
            pos += n
        return out


def encode_sorted(encoder: JobEncoder, texts: list[str], batch_size: int) -> tuple[list[np.ndarray], list[int]]:
    """Encode ``texts`` in batches of similar length (less padding); results in input order.

    Returns the vectors and each text's token count.
    """
    if not texts:
        return [], []
    tokens = encoder.count_tokens(texts)
    order = sorted(range(len(texts)), key=lambda i: (-tokens[i], i))
    vectors: list[np.ndarray | None] = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        encoded = encoder.encode_chunks([texts[i] for i in idx])
        if len(encoded) != len(idx):
            raise InvalidInputError(f"encoder returned {len(encoded)} results for {len(idx)} texts")
        for i, vec in zip(idx, encoded, strict=True):
            vectors[i] = np.asarray(vec, dtype=np.float32)
    return vectors, tokens  # type: ignore[return-value]
