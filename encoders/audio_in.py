"""LFM2-Audio's audio input path: log-mel features -> FastConformer -> adapter.

The features are transformers' ``ParakeetFeatureExtractor`` (NeMo's filterbank), the
FastConformer is transformers' ``ParakeetEncoder`` (the official ``conformer.*`` keys map onto
it with :func:`conformer_key`), and the adapter is LayerNorm -> Linear -> GELU -> Linear.

>>> conformer_key("conformer.layers.0.self_attn.linear_q.weight")
'layers.0.self_attn.q_proj.weight'
>>> encoder_frames(201)
26
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from mm.errors import CheckpointError

#: the encoder's time downsampling (three stride-2 convolutions)
SUBSAMPLING = 8

_CONFORMER_RENAMES = (
    ("pre_encode.conv.", "subsampling.layers."),
    ("pre_encode.out.", "subsampling.linear."),
    ("self_attn.linear_q.", "self_attn.q_proj."),
    ("self_attn.linear_k.", "self_attn.k_proj."),
    ("self_attn.linear_v.", "self_attn.v_proj."),
    ("self_attn.linear_out.", "self_attn.o_proj."),
    ("self_attn.linear_pos.", "self_attn.relative_k_proj."),
    ("self_attn.pos_bias_u", "self_attn.bias_u"),
    ("self_attn.pos_bias_v", "self_attn.bias_v"),
    ("conv.batch_norm.", "conv.norm."),
)


def conformer_key(official: str) -> str:
    """Map an official ``conformer.*`` key to the ``ParakeetEncoder`` parameter name."""
    name = official.removeprefix("conformer.")
    for old, new in _CONFORMER_RENAMES:
        name = name.replace(old, new)
    return name


def encoder_frames(mel_frames: int) -> int:
    """Encoder output length for ``mel_frames`` input frames: ``ceil(T / 8)``."""
    return math.ceil(mel_frames / SUBSAMPLING)


def check_preprocessor(cfg: dict[str, Any]) -> None:
    """Reject preprocessor settings mm's feature path does not implement (instead of ignoring them)."""
    expected = {"normalize": "per_feature", "window": "hann", "log": True, "frame_splicing": 1, "pad_to": 0}
    wrong = {k: cfg.get(k) for k, v in expected.items() if k in cfg and cfg.get(k) != v}
    if wrong:
        raise CheckpointError(f"unsupported audio preprocessor settings {wrong}; mm implements {expected}")


def build_feature_extractor(cfg: dict[str, Any]):
    """A ``ParakeetFeatureExtractor`` matching the checkpoint's ``preprocessor`` config."""
    from transformers import ParakeetFeatureExtractor

    check_preprocessor(cfg)
    rate = int(cfg.get("sample_rate", 16000))
    return ParakeetFeatureExtractor(
        feature_size=int(cfg.get("features", 128)), sampling_rate=rate,
        hop_length=round(float(cfg.get("window_stride", 0.01)) * rate),
        n_fft=int(cfg.get("n_fft", 512)), win_length=round(float(cfg.get("window_size", 0.025)) * rate),
        preemphasis=0.97,
    )


def log_mel(extractor: Any, samples: np.ndarray) -> torch.Tensor:
    """Log-mel features ``[T, n_mels]`` of 16 kHz mono ``samples``; ``T = len // hop + 1``.

    Like the official ``ChatState`` every frame is kept, including the trailing one that the
    per-feature normalisation leaves at zero.
    """
    out = extractor(np.asarray(samples, dtype=np.float32), sampling_rate=extractor.sampling_rate,
                    return_tensors="pt", return_attention_mask=False)
    return out["input_features"][0]


def build_conformer(cfg: dict[str, Any]):
    """A transformers ``ParakeetEncoder`` shaped like the official FastConformer config."""
    from transformers import ParakeetEncoder, ParakeetEncoderConfig

    supported = {"subsampling": "dw_striding", "self_attention_model": "rel_pos", "conv_norm_type": "batch_norm",
                 "causal_downsampling": False, "untie_biases": True, "reduction": None, "feat_out": -1,
                 "subsampling_factor": SUBSAMPLING}
    wrong = {k: cfg[k] for k, v in supported.items() if k in cfg and cfg[k] != v}
    if cfg.get("att_context_size", [-1, -1]) != [-1, -1]:
        wrong["att_context_size"] = cfg["att_context_size"]
    if wrong:
        raise CheckpointError(f"unsupported FastConformer settings {wrong}; mm implements {supported}")
    d_model = int(cfg["d_model"])
    config = ParakeetEncoderConfig(
        hidden_size=d_model, num_hidden_layers=int(cfg["n_layers"]), num_attention_heads=int(cfg["n_heads"]),
        intermediate_size=int(cfg.get("ff_expansion_factor", 4)) * d_model, num_mel_bins=int(cfg["feat_in"]),
        conv_kernel_size=int(cfg.get("conv_kernel_size", 9)), subsampling_factor=SUBSAMPLING,
        subsampling_conv_channels=int(cfg.get("subsampling_conv_channels", 256)),
        max_position_embeddings=int(cfg.get("pos_emb_max_len", 5000)), scale_input=bool(cfg.get("xscaling", False)),
        dropout=0.0, dropout_positions=0.0, layerdrop=0.0, activation_dropout=0.0, attention_dropout=0.0,
    )
    config._attn_implementation = "sdpa"
    return ParakeetEncoder(config)


class AudioAdapter(nn.Module):
    """LayerNorm -> Linear -> GELU(erf) -> Linear, as ``audio_adapter.model.{0,1,3}`` in the checkpoint."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim), nn.GELU(),
                                   nn.Linear(out_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def encode_mel(conformer: nn.Module, adapter: nn.Module, mel: torch.Tensor) -> torch.Tensor:
    """Run one mel segment ``[T, n_mels]`` through the FastConformer and adapter -> ``[ceil(T/8), hidden]``."""
    dtype = next(adapter.parameters()).dtype
    hidden = conformer(input_features=mel[None].to(dtype)).last_hidden_state[0]
    return adapter(hidden)
