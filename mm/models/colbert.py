"""LFM2-ColBERT (and any pylate / sentence-transformers ColBERT checkpoint): token model + projections.

>>> load_colbert("/nonexistent")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
mm.errors.ModelNotFoundError: model '/nonexistent' not found: ...
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mm.errors import CheckpointError, InvalidInputError
from mm.models.loading import load_model

log = logging.getLogger(__name__)


def load_colbert(model: str | Path, *, dtype: Any = "float32", batch_size: int = 32, threads: int | None = None):
    """A :class:`mm.encoders.colbert.ColBERTEncoder` for the checkpoint ``model`` (CPU, no quantization).

    ``batch_size`` and ``threads`` (torch threads while encoding, restored after each call) belong to the
    returned encoder, so each call loads its own copy.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
    encoder = load_model("colbert", model, load=_load, device="cpu", dtype=dtype, required=("modules.json",),
                         cpu_only=True, cache=False)
    encoder.batch_size = batch_size
    encoder.threads = threads
    return encoder


def _load(path: Path, device: str, dtype: Any):
    from transformers import AutoModel, AutoTokenizer

    from mm.encoders.colbert import (
        DENSE_TYPES,
        NORMALIZE_TYPES,
        TRANSFORMER_TYPES,
        ColBERTEncoder,
        ColBERTSettings,
        _Projection,
        _read_json,
    )

    modules = _read_json(path / "modules.json")
    if not isinstance(modules, list) or not modules:
        raise CheckpointError(f"{path}/modules.json must be a non-empty list of modules")
    modules = sorted(modules, key=lambda m: int(m.get("idx", 0)))
    first = modules[0]
    if first.get("type") not in TRANSFORMER_TYPES:
        raise CheckpointError(f"{path}: the first module must be a sentence-transformers Transformer, "
                              f"found {first.get('type')!r}")
    projections = []
    for module in modules[1:]:
        kind = module.get("type", "")
        if kind in DENSE_TYPES:
            projections.append(_Projection(path / module.get("path", "")))
        elif kind in NORMALIZE_TYPES:
            continue
        else:
            raise CheckpointError(f"{path}: module {kind!r} is not supported in a ColBERT checkpoint (mm "
                                  f"supports Transformer, Dense and Normalize modules)")
    token_path = path / first.get("path", "")
    settings = ColBERTSettings.from_checkpoint(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(token_path), local_files_only=True)
        backbone = AutoModel.from_pretrained(str(token_path), dtype=dtype, local_files_only=True).eval()
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{token_path}: the token model or tokenizer cannot be loaded ({exc})") from exc
    previous = int(getattr(backbone.config, "hidden_size", 0))
    for proj in projections:
        if proj.in_features != previous:
            raise CheckpointError(f"{path}: a Dense module expects {proj.in_features} inputs but gets {previous}")
        previous = proj.out_features
        proj.to(dtype)
    log.info("loaded ColBERT checkpoint %s (%s, dim %d)", path, type(backbone).__name__, previous)
    return ColBERTEncoder(path, backbone, tokenizer, projections, settings, dtype=dtype)
