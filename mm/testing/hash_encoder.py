"""A tiny deterministic text encoder for indexing-job tests.

Every lower-cased word is a token; its embedding is a unit vector drawn from a
random generator seeded by the word's hash, mixed with a small position term.
The output of a text never depends on the batch it is encoded in, so two
engines that batch differently still produce bit-identical vectors — exactly
what the job tests compare. It follows the encoder protocol of indexing
(:class:`mm.encoders.protocol.DocumentEncoder`), like the real encoders.

>>> enc = HashEncoder(dim=8)
>>> [v.shape for v in enc.encode_documents(["a b c", "d"])]
[(3, 8), (1, 8)]
>>> enc.token_lengths(["a b c", ""])
[3, 0]
>>> HashEncoder(dim=8, kind="dense").encode_documents(["a b"])[0].shape
(8,)
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)


class HashEncoder:
    """Word-hashing encoder: multi-vector (tokens x dim) or dense (mean-pooled, normalised)."""

    def __init__(self, dim: int = 32, kind: str = "multivector", delay_s: float = 0.0,
                 pid_dir: str | None = None, max_tokens: int = 512) -> None:
        if kind not in ("multivector", "dense"):
            raise ValueError(f"kind must be 'multivector' or 'dense', not {kind!r}")
        self.dim = int(dim)
        self.kind = kind
        self.max_document_tokens = int(max_tokens)
        #: seconds slept per encoded text (makes jobs slow enough to be killed mid-way in tests)
        self.delay_s = float(delay_s)
        if pid_dir:  # lets a test find (and kill) the worker processes that loaded an encoder
            Path(pid_dir, f"{os.getpid()}.pid").write_text(str(os.getpid()))
        self._cache: dict[str, np.ndarray] = {}

    def describe(self) -> dict:
        """What an index records about its encoder (:func:`load` rebuilds it from this)."""
        return {"model": "hash-encoder", "family": "hash", "kind": self.kind, "dim": self.dim,
                "max_tokens": self.max_document_tokens}

    def tokenize(self, text: str) -> list[str]:
        """Lower-cased words."""
        return _WORD.findall(text.lower())

    def token_lengths(self, texts: list[str]) -> list[int]:
        """Tokens per text."""
        return [len(self.tokenize(t)) for t in texts]

    def _word(self, word: str) -> np.ndarray:
        vec = self._cache.get(word)
        if vec is None:
            seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
            vec = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            self._cache[word] = vec
        return vec

    def _encode_one(self, text: str) -> np.ndarray:
        words = self.tokenize(text) or ["[empty]"]
        words = words[:self.max_document_tokens]  # like a model: anything past its limit is cut
        rows = np.stack([self._word(w) for w in words])
        rows += 0.05 * np.sin(np.arange(len(words), dtype=np.float32))[:, None]
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        if self.kind == "dense":
            mean = rows.mean(axis=0)
            return (mean / np.linalg.norm(mean)).astype(np.float32)
        return rows.astype(np.float32)

    def encode_documents(self, texts: list[str], *, batch_size: int | None = None) -> list[np.ndarray]:
        """One array per text: (tokens, dim) for multi-vector, (dim,) for dense."""
        if self.delay_s:
            time.sleep(self.delay_s * len(texts))
        return [self._encode_one(t) for t in texts]

    def encode_queries(self, texts: list[str], *, batch_size: int | None = None) -> list[np.ndarray]:
        """Queries are encoded like documents."""
        return [self._encode_one(t) for t in texts]
