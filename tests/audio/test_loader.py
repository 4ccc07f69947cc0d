"""The strict LFM2-Audio loader: every checkpoint tensor used, every parameter filled, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from mm.errors import CheckpointError
from mm.models.lfm2_audio import load_lfm2_audio, official_state_dict


def rewrite(ckpt, change):
    path = ckpt / "model.safetensors"
    state = load_file(str(path))
    change(state)
    save_file(state, str(path))


def test_loads_every_tensor(fixture_checkpoint):
    model = load_lfm2_audio(fixture_checkpoint)
    file_keys = set(load_file(str(fixture_checkpoint / "model.safetensors")))
    assert set(official_state_dict(model)) == file_keys  # the exact official key set, 176 keys
    assert len(file_keys) == 176
    assert not any(p.requires_grad for p in model.parameters())


def test_missing_tensor_is_listed(ckpt_copy):
    rewrite(ckpt_copy, lambda s: s.pop("lfm.layers.1.self_attn.q_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing.*lfm\.layers\.1\.self_attn\.q_proj\.weight"):
        load_lfm2_audio(ckpt_copy)


def test_misnamed_tensor_is_listed_both_ways(ckpt_copy):
    def rename(state):
        state["conformer.layers.0.self_attn.linear_query.weight"] = state.pop("conformer.layers.0.self_attn.linear_q.weight")

    rewrite(ckpt_copy, rename)
    with pytest.raises(CheckpointError) as info:
        load_lfm2_audio(ckpt_copy)
    text = str(info.value)
    assert "conformer.layers.0.self_attn.q_proj.weight" in text  # missing parameter
    assert "conformer.layers.0.self_attn.linear_query.weight" in text  # unused tensor


def test_shape_mismatch(ckpt_copy):
    rewrite(ckpt_copy, lambda s: s.update({"depth_linear.bias": torch.zeros(7)}))
    with pytest.raises(CheckpointError, match=r"shape mismatches: depth_linear\.bias"):
        load_lfm2_audio(ckpt_copy)


def test_tied_duplicate_must_match(ckpt_copy):
    rewrite(ckpt_copy, lambda s: s["depth_embeddings.3.to_logits.weight"].add_(1.0))
    with pytest.raises(CheckpointError, match=r"depth_embeddings\.3\.to_logits\.weight should be tied"):
        load_lfm2_audio(ckpt_copy)


def test_buffer_checked(ckpt_copy):
    rewrite(ckpt_copy, lambda s: s.update({"codebook_offsets": torch.arange(8)}))
    with pytest.raises(CheckpointError, match="codebook_offsets"):
        load_lfm2_audio(ckpt_copy)


def test_optional_duplicates_may_be_absent(ckpt_copy):
    def drop(state):
        for key in [k for k in state if k.endswith("to_logits.weight") or k in ("codebook_offsets",
                                                                              "audio_loss_weights")]:
            state.pop(key)

    rewrite(ckpt_copy, drop)
    load_lfm2_audio(ckpt_copy)


def test_bad_config(ckpt_copy):
    config = json.loads((ckpt_copy / "config.json").read_text())
    config["surprise"] = 1
    (ckpt_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unknown top-level keys"):
        load_lfm2_audio(ckpt_copy)
    (ckpt_copy / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_lfm2_audio(ckpt_copy)


def test_unsupported_encoder_setting_rejected():
    from mm.encoders.audio_in import build_conformer

    with pytest.raises(CheckpointError, match="self_attention_model"):
        build_conformer({"feat_in": 128, "n_layers": 1, "d_model": 32, "n_heads": 2,
                         "self_attention_model": "abs_pos"})


def test_corrupt_weights_file(ckpt_copy):
    (ckpt_copy / "model.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError):
        load_lfm2_audio(ckpt_copy)


def test_factory_checkpoint_official_layout(tiny_audio, fixture_checkpoint):
    """The factory writes the same key set as the official fixture, and it loads strictly."""
    ours = set(load_file(str(tiny_audio / "model.safetensors")))
    official = set(load_file(str(fixture_checkpoint / "model.safetensors")))
    assert ours == official
    load_lfm2_audio(tiny_audio)
    names = {p.name for p in tiny_audio.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer-e351c8d8-checkpoint125.safetensors",
            "mimi_config.json", "tokenizer.json", "tokenizer_config.json"} <= names
