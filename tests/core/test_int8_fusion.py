"""quantize="int8": LFM2's gated MLPs run w1/w3 as one int8 matrix, with outputs equal to the unfused model."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mm.backbone import Backbone, GenerationSettings  # noqa: E402
from mm.int8_linear import FusedGatedMLP, fuse_gated_mlps  # noqa: E402


def test_int8_load_fuses_every_gated_mlp(tiny_lfm2):
    bb = Backbone.load(tiny_lfm2, dtype="float32", quantize="int8")
    layers = bb.model.model.layers
    assert all(isinstance(layer.feed_forward, FusedGatedMLP) for layer in layers)
    assert fuse_gated_mlps(bb.model) == 0  # nothing left to fuse


def test_fused_model_equals_unfused_logits_and_tokens(tiny_lfm2):
    from torch.ao.quantization import quantize_dynamic

    fused = Backbone.load(tiny_lfm2, dtype="float32", quantize="int8")
    reference = Backbone.load(tiny_lfm2, dtype="float32")
    unfused = quantize_dynamic(reference.model, {torch.nn.Linear}, dtype=torch.qint8, inplace=False)
    ids = torch.tensor([[1, 6, 20, 30, 41, 52, 63]])
    with torch.inference_mode():
        assert torch.equal(fused.model(ids).logits, unfused(ids).logits)
    settings = GenerationSettings(max_new_tokens=12)
    fast = fused.generate({"input_ids": ids}, settings, engine="fast")
    slow = fused.generate({"input_ids": ids}, settings, engine="transformers")
    assert fast == slow
