"""Data types and protocols of the indexing jobs.

The job engine talks to three small protocols, so the same engine drives the
real encoders/index and the tiny ones used in tests:

* :class:`DocumentSource` — streams :class:`Document` s (never the whole corpus in memory);
* :class:`JobEncoder` — turns chunk texts into vectors (built inside each worker from an
  :class:`EncoderSpec`, a picklable recipe, because encoders are not shipped, recipes are);
* :class:`IndexWriter` — the index the job writes (``add`` replaces an existing id).

>>> doc = Document(id="d1", text="hello world", title="greeting")
>>> len(content_hash(doc))
32
>>> chunk_ids("d1", 1), chunk_ids("d1", 2)
(['d1'], ['d1#0', 'd1#1'])
>>> EncoderSpec("mm.testing.hash_encoder:HashEncoder", {"dim": 4}).load().dim
4
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mm.errors import InvalidInputError


@dataclass(frozen=True)
class Document:
    """One source document (before chunking)."""

    id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class DocumentSource(Protocol):
    """Anything that streams documents; ``count()`` (optional) gives the progress bar a total."""

    def __iter__(self) -> Iterator[Document]: ...


@runtime_checkable
class JobEncoder(Protocol):
    """What a worker needs from an encoder."""

    kind: str  # "multivector" or "dense"
    dim: int
    max_tokens: int  # longest chunk (in tokens, without special tokens) encoded without truncation

    def info(self) -> dict: ...

    def count_tokens(self, texts: list[str]) -> list[int]: ...

    def encode_chunks(self, texts: list[str]) -> list[np.ndarray]: ...


@runtime_checkable
class IndexWriter(Protocol):
    """The part of ``mm.index.Index`` a job writes through."""

    def add(self, ids: list[str], vectors: Any, texts: list[str] | None = None,
            metadata: list[dict] | None = None) -> Any: ...

    def delete(self, ids: list[str]) -> Any: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class EncoderSpec:
    """A picklable recipe for an encoder: ``"module:callable"`` plus keyword arguments.

    Workers (processes, Ray actors on other machines) call :meth:`load`; only this
    small recipe travels, never model weights.
    """

    target: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def load(self) -> JobEncoder:
        """Import the target and call it with ``kwargs``."""
        module_name, _, attr = self.target.partition(":")
        if not module_name or not attr:
            raise InvalidInputError(f"encoder target {self.target!r} must look like 'package.module:callable'")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise InvalidInputError(f"cannot import encoder target {self.target!r}: {exc}") from exc
        return factory(**self.kwargs)

    def describe(self) -> str:
        """Short human-readable form for logs and summaries."""
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.kwargs.items()))
        return f"{self.target}({args})"


def content_hash(doc: Document) -> str:
    """Hash of everything that ends up in the index for ``doc`` (title, text, metadata)."""
    payload = json.dumps([doc.title, doc.text, doc.metadata], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=16).hexdigest()


def chunk_ids(doc_id: str, n_chunks: int) -> list[str]:
    """Index ids of a document's chunks: the doc id itself when it has one chunk, ``id#i`` otherwise."""
    if n_chunks == 1:
        return [doc_id]
    return [f"{doc_id}#{i}" for i in range(n_chunks)]


@dataclass
class EncodedDoc:
    """A document after chunking and encoding, ready to be merged into the index."""

    doc_id: str
    content_hash: str
    chunk_texts: list[str]
    vectors: list[np.ndarray]
    n_tokens: int
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def n_chunks(self) -> int:
        return len(self.chunk_texts)


@dataclass(frozen=True)
class SkippedDoc:
    """A document the worker found unchanged (its content hash is already indexed)."""

    doc_id: str
    content_hash: str
