"""LFM2 text models (``Lfm2ForCausalLM``, or any causal LM a checkpoint names) with their tokenizer.

>>> import tempfile, mm.testing
>>> bb = load_lfm2(mm.testing.make_tiny_lfm2(tempfile.mkdtemp()), dtype="float32", quantize="int8")
>>> type(bb).__name__, bb.quantize, "DynamicQuantizedLinear" in repr(bb.model)
('Backbone', 'int8', True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mm.errors import CheckpointError
from mm.models.loading import load_model, quantize_int8


def load_lfm2(model: str | Path, *, device: str = "auto", dtype: Any = "auto", quantize: str | None = None):
    """A :class:`mm.backbone.Backbone` over the checkpoint ``model`` (shared per path/device/dtype/quantize)."""
    return load_model("causal-lm", model, load=_load, quantizers={"int8": _quantize, "int4": _quantize_int4}, device=device, dtype=dtype,
                      quantize=quantize)


def _load(path: Path, device: str, dtype: Any):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mm.backbone import Backbone

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"could not load a causal language model from {str(path)!r}: {exc}") from exc
    model = model.to(device).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Backbone(model, tokenizer, path, device, dtype)


def _quantize(backbone):
    backbone.model = quantize_int8(backbone.model)
    backbone.quantize = "int8"
    return backbone


def _quantize_int4(backbone):
    from mm.quant import quantize_int4

    backbone.model = quantize_int4(backbone.model)
    backbone.quantize = "int4"
    return backbone
