"""LFM2-Audio's audio output path: the depth transformer that turns one backbone hidden state
into one 8-codebook Mimi frame, the codebook embeddings, and the sampling settings.

Per audio step ``x = depth_linear(h).view(8, dim)``; codebook ``i`` feeds ``x[i]`` plus the raw
embedding of code ``i-1`` through the pre-norm blocks (one token at a time, KV cache over the 8
positions), and ``to_logits(embedding_norm(out))`` of codebook ``i`` gives its 2049 logits
(code 2048 = end of audio).

>>> settings = SamplingSettings()           # greedy
>>> settings.greedy
True
>>> SamplingSettings(temperature=0.8, top_k=50).greedy
False
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mm.errors import CheckpointError, InvalidInputError

#: Mimi codes per codebook plus the end-of-audio code
AUDIO_VOCAB = 2049
#: the end-of-audio code (codebook 0 decides; the whole frame is then set to it)
END_OF_AUDIO = 2048
#: hard-coded in the official depthformer
DEPTH_HEADS = 32
DEPTH_KV_HEADS = 8
DEPTH_ROPE_THETA = 1_000_000.0
NORM_EPS = 1e-5


@dataclass(frozen=True)
class SamplingSettings:
    """How to pick one token (text) or one code per codebook (audio).

    Greedy (argmax, ties to the lowest id) when ``temperature`` is None or <= 0 or ``top_k == 1``,
    exactly as the official sampler; otherwise logits / temperature, keep the ``top_k`` best, keep the
    smallest set whose probability reaches ``top_p`` (nucleus; None or 1 keeps all), sample.
    """

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if self.temperature is not None and (not isinstance(self.temperature, int | float)
                                             or math.isnan(self.temperature) or self.temperature < 0):
            raise InvalidInputError(f"temperature must be a number >= 0 (0 or None = greedy), got {self.temperature!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise InvalidInputError(f"top_k must be a positive integer, got {self.top_k!r}")
        if self.top_p is not None and (not isinstance(self.top_p, int | float) or not 0 < self.top_p <= 1):
            raise InvalidInputError(f"top_p must be a number in (0, 1], got {self.top_p!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature is None or self.temperature <= 0 or self.top_k == 1

    def pick(self, logits: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Pick one id from 1-D ``logits``."""
        if self.greedy:
            return int(logits.argmax())
        scaled = logits.float() / float(self.temperature)
        if self.top_k is not None and self.top_k < scaled.numel():
            threshold = torch.topk(scaled, self.top_k).values[-1]
            scaled = scaled.masked_fill(scaled < threshold, float("-inf"))
        if self.top_p is not None and self.top_p < 1:
            ordered, order = scaled.sort()  # ascending, as transformers' TopPLogitsWarper
            drop = ordered.softmax(0).cumsum(0) <= 1 - self.top_p
            drop[-1] = False  # always keep the most likely id
            scaled = scaled.masked_fill(drop.scatter(0, order, drop), float("-inf"))
        probs = scaled.softmax(0)
        return int(torch.multinomial(probs, 1, generator=generator))


class RMSNorm(nn.Module):
    """``weight * x / sqrt(mean(x^2) + eps)``, computed in float32."""

    def __init__(self, dim: int, eps: float = NORM_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)  # one fused kernel
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).to(x.dtype)


class DepthAttentionNorms(nn.Module):
    """Per-head q/k RMSNorms (checkpoint name ``operator.bounded_attention``)."""

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.q_layernorm = RMSNorm(head_dim)
        self.k_layernorm = RMSNorm(head_dim)


class DepthAttention(nn.Module):
    """GQA self-attention with a fused qkv projection, q/k norms and interleaved-pair RoPE."""

    def __init__(self, dim: int, heads: int = DEPTH_HEADS, kv_heads: int = DEPTH_KV_HEADS) -> None:
        super().__init__()
        if dim % heads or heads % kv_heads or (dim // heads) % 2:
            raise CheckpointError(f"depthformer dim {dim} must split into {heads} heads of even size")
        self.dim, self.heads, self.kv_heads, self.head_dim = dim, heads, kv_heads, dim // heads
        self.qkv_proj = nn.Linear(dim, dim + 2 * kv_heads * self.head_dim, bias=False)
        self.out_proj = nn.Linear(dim, dim, bias=False)
        self.bounded_attention = DepthAttentionNorms(self.head_dim)

    def forward(self, x: torch.Tensor, rotation: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor,
                pos: int) -> torch.Tensor:
        """One token ``x [1, dim]`` at position ``pos``; writes its k/v into ``cache_[kv] [8, kv_heads, hd]``."""
        hd = self.head_dim
        q, k, v = self.qkv_proj(x)[0].split([self.dim, self.kv_heads * hd, self.kv_heads * hd])
        q = self.bounded_attention.q_layernorm(q.view(self.heads, hd))
        k = self.bounded_attention.k_layernorm(k.view(self.kv_heads, hd))
        q = torch.matmul(q.float(), rotation).to(q.dtype)  # RoPE as one [hd, hd] rotation
        k = torch.matmul(k.float(), rotation).to(k.dtype)
        cache_k[:, pos] = k
        cache_v[:, pos] = v.view(self.kv_heads, hd)
        # head h attends with kv head h // (heads / kv_heads), as the official enable_gqa SDPA
        attn = F.scaled_dot_product_attention(q.view(1, self.heads, 1, hd), cache_k[None, :, : pos + 1],
                                              cache_v[None, :, : pos + 1], enable_gqa=True)
        return self.out_proj(attn.reshape(1, self.dim))


def rope_rotations(head_dim: int, positions: int, theta: float = DEPTH_ROPE_THETA) -> torch.Tensor:
    """``[positions, hd, hd]`` matrices R with ``x @ R`` = RoPE of ``x`` rotating pairs (0,1), (2,3), ...
    (the complex-number convention of the official depthformer).

    >>> r = rope_rotations(4, 2); torch.allclose(r[0], torch.eye(4))
    True
    """
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = torch.outer(torch.arange(positions, dtype=torch.float64), inv)  # [P, hd/2]
    cos, sin = angles.cos(), angles.sin()
    rot = torch.zeros(positions, head_dim, head_dim, dtype=torch.float64)
    idx = torch.arange(0, head_dim, 2)
    rot[:, idx, idx] = cos  # out_even = x_even cos - x_odd sin ; out_odd = x_even sin + x_odd cos
    rot[:, idx + 1, idx] = -sin
    rot[:, idx, idx + 1] = sin
    rot[:, idx + 1, idx + 1] = cos
    return rot.float()


class SwiGLU(nn.Module):
    """``w2(silu(w1 x) * w3 x)``."""

    def __init__(self, dim: int, ff_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, ff_dim, bias=False)
        self.w2 = nn.Linear(ff_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, ff_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def swiglu_width(dim: int, multiple_of: int = 256) -> int:
    """The official GLU width: ``2/3 * 4 * dim`` rounded up to a multiple of 256.

    >>> swiglu_width(1024), swiglu_width(64)
    (2816, 256)
    """
    ff = int(2 * (4 * dim) / 3)
    return multiple_of * ((ff + multiple_of - 1) // multiple_of)


class DepthBlock(nn.Module):
    """Pre-norm block: ``h = x + attn(norm(x)); out = h + ffn(norm(h))``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.operator_norm = RMSNorm(dim)
        self.operator = DepthAttention(dim)
        self.ffn_norm = RMSNorm(dim)
        self.feed_forward = SwiGLU(dim, swiglu_width(dim))

    def forward(self, x, rotation, cache_k, cache_v, pos):
        h = x + self.operator(self.operator_norm(x), rotation, cache_k, cache_v, pos)
        return h + self.feed_forward(self.ffn_norm(h))


class Depthformer(nn.Module):
    """The stack of depth blocks (checkpoint prefix ``depthformer.layers``); no final norm."""

    def __init__(self, dim: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DepthBlock(dim) for _ in range(layers))


class CodebookEmbedding(nn.Module):
    """One codebook's embedding, its output norm and (untied only) its own logits matrix."""

    def __init__(self, dim: int, vocab: int = AUDIO_VOCAB, tie: bool = True) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.embedding_norm = RMSNorm(dim)
        self.to_logits = None if tie else nn.Linear(dim, vocab, bias=False)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.embedding.weight if self.to_logits is None else self.to_logits.weight
        return F.linear(self.embedding_norm(x), weight)


class AudioHead(nn.Module):
    """``depth_linear`` + depthformer + per-codebook embeddings: samples one frame from one hidden state."""

    def __init__(self, hidden: int, dim: int, layers: int, codebooks: int = 8, tie: bool = True) -> None:
        super().__init__()
        self.codebooks, self.dim = codebooks, dim
        self.depth_linear = nn.Linear(hidden, dim * codebooks)
        self.depthformer = Depthformer(dim, layers)
        self.depth_embeddings = nn.ModuleList(CodebookEmbedding(dim, AUDIO_VOCAB, tie) for _ in range(codebooks))
        self.register_buffer("rope", rope_rotations(dim // DEPTH_HEADS, codebooks), persistent=False)

    def reset_rope(self) -> None:
        """Recompute the RoPE tables (after building on the meta device)."""
        self.rope = rope_rotations(self.dim // DEPTH_HEADS, self.codebooks)

    def frame_logits(self, hidden: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Logits ``[8, 2049]`` of every codebook given the frame's ``codes`` (teacher forcing)."""
        out = []
        self._run(hidden, lambda i, logits: out.append(logits) or int(codes[i]))
        return torch.stack(out)

    def sample_frame(self, hidden: torch.Tensor, settings: SamplingSettings = SamplingSettings(),
                     generator: torch.Generator | None = None) -> list[int]:
        """Sample one frame (8 codes) from the backbone's last hidden state ``[hidden]``.

        If codebook 0 picks end-of-audio the whole frame becomes ``[2048] * 8`` (after the other
        codebooks were sampled, as in the official code).
        """
        codes = self._run(hidden, lambda i, logits: settings.pick(logits, generator))
        if codes[0] == END_OF_AUDIO:
            codes = [END_OF_AUDIO] * self.codebooks
        return codes

    def _run(self, hidden, choose) -> list[int]:
        x = self.depth_linear(hidden.to(self.depth_embeddings[0].embedding.weight.dtype)[None])
        x = x.view(self.codebooks, 1, self.dim)
        first = self.depthformer.layers[0].operator
        shape = (len(self.depthformer.layers), first.kv_heads, self.codebooks, first.head_dim)
        cache_k = x.new_zeros(shape)
        cache_v = x.new_zeros(shape)
        codes: list[int] = []
        prev = None
        for i in range(self.codebooks):
            h = x[i] if prev is None else x[i] + prev
            rotation = self.rope[i]
            for j, layer in enumerate(self.depthformer.layers):
                h = layer(h, rotation, cache_k[j], cache_v[j], i)
            code = choose(i, self.depth_embeddings[i].logits(h)[0])
            codes.append(code)
            prev = self.depth_embeddings[i].embedding.weight[code]
        return codes
