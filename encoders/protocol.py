"""The one encoder protocol of indexing: what the dense, token and ColBERT encoders implement.

:class:`~mm.encoders.dense.DenseEncoder`, :class:`~mm.encoders.dense.TokenEncoder`,
:class:`~mm.encoders.colbert.ColBERTEncoder` and the test encoder
:class:`~mm.testing.hash_encoder.HashEncoder` all satisfy :class:`DocumentEncoder` directly; the
indexing job (:mod:`mm.index.jobs`) and the index writer (:mod:`mm.index.writer`) use nothing else.

>>> from mm.testing.hash_encoder import HashEncoder
>>> isinstance(HashEncoder(dim=4), DocumentEncoder)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class DocumentEncoder(Protocol):
    """Turns document texts into vectors: one ``(dim,)`` array each (``kind="dense"``) or ``(tokens, dim)``."""

    kind: str  # "dense" or "multivector"
    dim: int

    @property
    def max_document_tokens(self) -> int:
        """Text tokens one document can hold before the model truncates it (special tokens excluded)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What an index records about the encoder (``mm search`` reloads it from this)."""
        ...

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, without special tokens."""
        ...

    def encode_documents(self, texts: Sequence[str], *, batch_size: int | None = None) -> Sequence[Any]:
        """One vector (dense) or token-vector matrix (multivector) per text, in input order."""
        ...

    def encode_queries(self, texts: Sequence[str], *, batch_size: int | None = None) -> Sequence[Any]:
        """Query vectors, as :meth:`encode_documents`."""
        ...
