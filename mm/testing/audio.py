"""Tiny random LFM2-Audio checkpoints in the official layout (``config.json``, ``model.safetensors``
with the official key names, the Mimi file with moshi key names plus ``mimi_config.json``, and
tokenizer files with LFM2-Audio's special tokens).

>>> import tempfile
>>> path = make_tiny_lfm2_audio(tempfile.mkdtemp())
>>> sorted(p.name for p in path.iterdir())[:3]
['chat_template.jinja', 'config.json', 'mimi_config.json']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mm.testing.tokenizer import LFM2_SPECIAL_TOKENS, save_fast_tokenizer, train_tokenizer

#: LFM2-Audio's special tokens: LFM2's first 14, reserved ones, 128 <|audio_start|>, 130 <|text_end|>
AUDIO_SPECIAL_TOKENS: list[str] = [
    *LFM2_SPECIAL_TOKENS,
    *(f"<|reserved_{i}|>" for i in range(len(LFM2_SPECIAL_TOKENS), 128)),
    "<|audio_start|>", "<|reserved_129|>", "<|text_end|>",
]

#: the chat template the official checkpoint ships (the official code builds prompts itself)
AUDIO_CHAT_TEMPLATE = (
    "{{- bos_token -}}\n{%- for message in messages -%}\n"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}\n"
    "{%- endfor -%}\n{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}\n"
)

AUDIO_CORPUS = [
    "What is the weather like in Paris today? It is sunny and warm.",
    "Respond with interleaved text and audio.", "Perform ASR.", "Perform TTS. Use the US male voice.",
    "Can you repeat that, please? Sure, here it is again.", "Hello! How are you today? I am fine, thank you.",
    "The quick brown fox jumps over the lazy dog.", "system user assistant speech audio text answer",
]


def tiny_lfm2_audio_config(vocab_size: int, **overrides: Any) -> dict[str, Any]:
    """The official ``config.json`` content for a tiny model (same structure as the real one)."""
    config: dict[str, Any] = {
        "architectures": ["Lfm2AudioForConditionalGeneration"], "codebooks": 8, "tie_audio_embeddings": False,
        "semantic_codebook_factor": 100, "codebook_weight": "log", "interleaved_n_text": 6,
        "interleaved_n_audio": 12,
        "preprocessor": {"sample_rate": 16000, "normalize": "per_feature", "window_size": 0.025,
                         "window_stride": 0.01, "window": "hann", "features": 128, "n_fft": 512, "log": True,
                         "frame_splicing": 1, "dither": 1e-05, "pad_to": 0, "pad_value": 0.0},
        "encoder": {"feat_in": 128, "feat_out": -1, "n_layers": 2, "d_model": 64, "subsampling": "dw_striding",
                    "subsampling_factor": 8, "subsampling_conv_channels": 32, "causal_downsampling": False,
                    "reduction": None, "reduction_position": None, "reduction_factor": 1,
                    "ff_expansion_factor": 4, "self_attention_model": "rel_pos", "n_heads": 4,
                    "att_context_size": [-1, -1], "xscaling": False, "untie_biases": True,
                    "pos_emb_max_len": 5000, "conv_kernel_size": 9, "conv_norm_type": "batch_norm",
                    "conv_context_size": None, "dropout": 0.1, "dropout_pre_encoder": 0.1, "dropout_emb": 0.0,
                    "dropout_att": 0.1},
        "lfm": {"vocab_size": vocab_size, "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4,
                "num_key_value_heads": 2, "max_position_embeddings": 4096, "norm_eps": 1e-05, "conv_bias": False,
                "conv_L_cache": 3, "block_ff_dim": 192, "block_multiple_of": 256, "block_ffn_dim_multiplier": 1.0,
                "block_auto_adjust_ff_dim": True, "layer_types": ["conv", "full_attention", "conv"],
                "rope_theta": 1000000.0, "eos_token_id": 7, "bos_token_id": 1, "pad_token_id": 0,
                "tie_embedding": True},
        "depthformer": {"layers": 2, "dim": 64, "tie": True},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def make_tiny_lfm2_audio(directory: str | Path, *, seed: int = 0, vocab_size: int = 640,
                         mimi_config: Any = None, **config_overrides: Any) -> Path:
    """Write a tiny random LFM2-Audio checkpoint in the official layout; return its directory.

    ``config_overrides`` update the top-level keys of ``config.json`` (dicts are merged), and
    ``mimi_config`` (a ``MimiConfig`` or dict) replaces the tiny Mimi hyper-parameters.
    """
    import torch
    from safetensors.torch import save_file

    from mm.encoders.mimi import tiny_mimi_config, write_mimi_checkpoint
    from mm.models.lfm2_audio import LFM2AudioConfig, official_state_dict, random_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(vocab_size, AUDIO_SPECIAL_TOKENS, corpus=AUDIO_CORPUS)
    config = tiny_lfm2_audio_config(tokenizer.get_vocab_size(), **config_overrides)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    model = random_model(LFM2AudioConfig.from_dict(config), seed=seed)
    with torch.no_grad():  # larger residual outputs so greedy text does not lock onto one token
        for name, param in model.named_parameters():
            if name.endswith(("out_proj.weight", "w2.weight", "o_proj.weight")) and name.startswith("lfm."):
                param.mul_(4.0)
    state = {k: v.contiguous() for k, v in official_state_dict(model).items()}
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    write_mimi_checkpoint(directory, mimi_config if mimi_config is not None else tiny_mimi_config(), seed=seed)
    save_fast_tokenizer(tokenizer, directory, chat_template=AUDIO_CHAT_TEMPLATE)
    return directory
