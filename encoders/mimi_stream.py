"""Stateful (streaming) forward passes over the weights of transformers' Mimi decoder.

transformers' ``MimiModel.decode`` always starts from zero padding, so decoding a
stream frame by frame with it would need the whole history each time. The
classes here reuse the same weights but carry the state a causal decoder needs
between calls:

* a causal ``Conv1d`` keeps its last ``(kernel - 1) * dilation`` input steps,
* a causal ``ConvTranspose1d`` keeps the ``kernel - stride`` output steps that later
  input still adds to, and only emits the finished part,
* the decoder transformer keeps a key/value cache of its sliding context
  (``sliding_window`` steps, 250 for Mimi) and the absolute RoPE position.

Decoding frames in any chunking therefore gives the same waveform as decoding
all frames at once (up to float rounding).

>>> import torch
>>> conv = torch.nn.Conv1d(2, 3, 3, dilation=2)
>>> step = StreamingConv1d(conv)
>>> x = torch.randn(1, 2, 10)
>>> state = step.initial_state(x.dtype)
>>> a, state = step(x[..., :4], state)
>>> b, state = step(x[..., 4:], state)
>>> full, _ = step(x, step.initial_state(x.dtype))
>>> torch.allclose(torch.cat([a, b], -1), full, atol=1e-6)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mm.runtime import cpu_has_fast_bf16

__all__ = [
    "SeanetDecoderPlan",
    "StreamingConv1d",
    "StreamingConvTranspose1d",
    "StreamingTransformer",
    "TransformerState",
]


def _fast_matmul(dtype: torch.dtype) -> bool:
    """Whether the matmul paths pay off for ``dtype``: measured on an AVX2 CPU, they do for float32
    (2-2.5x faster frame-by-frame); for bfloat16 without native bf16 instructions torch's own
    convolution kernels are faster, so they are kept there."""
    return dtype == torch.float32 or (dtype == torch.bfloat16 and cpu_has_fast_bf16())


class StreamingConv1d:
    """A causal, stride-1 ``Conv1d`` that keeps its left context between calls.

    The state is the last ``(kernel_size - 1) * dilation`` input steps (zeros at the
    start, which is exactly the causal zero padding of a full decode).
    """

    def __init__(self, conv: nn.Conv1d) -> None:
        if conv.stride[0] != 1:
            raise ValueError(f"streaming decode supports stride-1 convolutions only, got stride {conv.stride[0]}")
        if conv.padding_mode != "zeros" or conv.padding[0] != 0:
            raise ValueError("streaming convolutions must not pad themselves (the state replaces the padding)")
        self.weight = conv.weight
        self.bias = conv.bias
        self.dilation = conv.dilation[0]
        self.groups = conv.groups
        self.in_channels = conv.in_channels
        self.context = (conv.kernel_size[0] - 1) * self.dilation
        self.int8: Any = None  # prepacked int8 weight (set by quantize_int8) for the matmul path

    def quantize_int8(self) -> None:
        """Run the matmul path as an fbgemm dynamic-int8 GEMM (per-output-channel int8 weights)."""
        self.int8 = _prepack_int8(self.weight.reshape(self.weight.shape[0], -1), self.bias)

    def initial_state(self, dtype: torch.dtype) -> torch.Tensor:
        """Zero left context, shape ``[1, in_channels, context]``."""
        return torch.zeros(1, self.in_channels, self.context, dtype=dtype, device=self.weight.device)

    #: use the unfold + matmul path up to this many unfolded elements (bounds the copy it makes)
    MATMUL_MAX_ELEMENTS = 1 << 21
    #: class-wide switch of the matmul path (for A/B measurements)
    matmul_enabled = True

    def _matmul(self, x: torch.Tensor) -> torch.Tensor | None:
        """The convolution as one matrix product over unfolded input, for short inputs; else None.

        ``conv1d`` on CPU takes a slow generic kernel for a few output steps; the product reads
        each weight once, which is what bounds a frame-by-frame decode.
        """
        kernel = self.weight.shape[-1]
        steps = x.shape[-1] - self.context
        if (not self.matmul_enabled or not _fast_matmul(x.dtype) or kernel == 1 or self.groups != 1 or x.shape[0] != 1
                or steps > 4 * self.in_channels or steps * self.in_channels * kernel > self.MATMUL_MAX_ELEMENTS):
            return None
        cols = x[0].unfold(1, self.context + 1, 1)[:, :, :: self.dilation]  # [C_in, steps, kernel]
        cols = cols.permute(1, 0, 2).reshape(steps, self.in_channels * kernel)
        if self.int8 is not None:
            return torch.ops.quantized.linear_dynamic(cols.contiguous(), self.int8, True).T[None]
        return F.linear(cols, self.weight.view(self.weight.shape[0], -1), self.bias).T[None]

    def __call__(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.context:
            x = torch.cat([state, x], dim=-1)
            state = x[..., x.shape[-1] - self.context:].clone()  # not a view: keeps no large buffer alive
        y = self._matmul(x)
        if y is None:
            y = F.conv1d(x, self.weight, self.bias, dilation=self.dilation, groups=self.groups)
        return y, state


class StreamingConvTranspose1d:
    """A causal ``ConvTranspose1d`` (all padding trimmed on the right) that emits only finished steps.

    For ``n`` input steps it emits ``n * stride`` output steps; the remaining
    ``kernel_size - stride`` steps still receive contributions from the next input
    and are kept (without bias) as state.

    When the kernel is a multiple of the stride (always in Mimi) and the input is short, the
    product is one matrix multiply plus an overlap-add: on CPU this is several times faster than
    ``conv_transpose1d``, which falls back to a slow generic kernel for few input steps.
    """

    def __init__(self, conv: nn.ConvTranspose1d) -> None:
        kernel, stride = conv.kernel_size[0], conv.stride[0]
        if kernel < stride:
            raise ValueError(f"conv-transpose kernel {kernel} is smaller than its stride {stride}")
        if conv.padding[0] != 0 or conv.output_padding[0] != 0 or conv.dilation[0] != 1:
            raise ValueError("streaming conv-transpose expects no padding, output padding or dilation")
        self.weight = conv.weight
        self.bias = conv.bias
        self.stride = stride
        self.kernel = kernel
        self.groups = conv.groups
        self.in_channels = conv.in_channels
        self.out_channels = conv.out_channels
        self.overlap = kernel - stride
        self.taps = kernel // stride if kernel % stride == 0 else 0
        self.depthwise = self.groups == self.in_channels == self.out_channels
        self.int8: Any = None  # prepacked int8 weight (set by quantize_int8) for the matmul path

    def quantize_int8(self) -> None:
        """Run the (non-grouped) matmul path as an fbgemm dynamic-int8 GEMM."""
        if self.groups == 1 and self.taps:
            self.int8 = _prepack_int8(self.weight.reshape(self.in_channels, -1).T, None)

    def initial_state(self, dtype: torch.dtype) -> torch.Tensor:
        """Zero overlap tail, shape ``[1, out_channels, kernel - stride]``."""
        return torch.zeros(1, self.out_channels, self.overlap, dtype=dtype, device=self.weight.device)

    #: class-wide switch of the matmul path (for A/B measurements)
    matmul_enabled = True

    def _matmul(self, x: torch.Tensor) -> torch.Tensor | None:
        """``conv_transpose1d`` without bias as a product + overlap-add, or None when not applicable."""
        n = x.shape[-1]
        if not self.matmul_enabled or not _fast_matmul(x.dtype) or not self.taps or x.shape[0] != 1 or n > 2 * self.in_channels:
            return None
        if self.depthwise:  # weight [C, 1, k]
            cols = (x[0][:, :, None] * self.weight[:, 0, None, :]).view(self.out_channels, n, self.taps, self.stride)
        elif self.groups == 1:  # weight [C_in, C_out, k]
            if self.int8 is not None:
                cols = torch.ops.quantized.linear_dynamic(x[0].T.contiguous(), self.int8, True)
            else:
                cols = x[0].T @ self.weight.reshape(self.in_channels, -1)
            cols = cols.view(n, self.out_channels, self.taps, self.stride).transpose(0, 1)
        else:
            return None
        y = x.new_zeros(self.out_channels, n + self.taps - 1, self.stride)
        for tap in range(self.taps):
            y[:, tap: tap + n] += cols[:, :, tap]
        return y.view(1, self.out_channels, -1)

    def __call__(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self._matmul(x)
        if y is None:
            y = F.conv_transpose1d(x, self.weight, None, stride=self.stride, groups=self.groups)
        if self.overlap:
            y[..., : self.overlap] += state
        finished = x.shape[-1] * self.stride
        out, state = y[..., :finished], y[..., finished:].clone()
        if self.bias is not None:
            out = out + self.bias[:, None]
        return out, state


def _prepack_int8(weight: torch.Tensor, bias: torch.Tensor | None) -> Any:
    """fbgemm-prepacked symmetric per-row int8 copy of a float ``[out, in]`` weight."""
    weight = weight.detach().float()
    scales = (weight.abs().amax(dim=1).clamp(min=1e-8) / 127.0).double()
    qweight = torch.quantize_per_channel(weight, scales, torch.zeros_like(scales, dtype=torch.long), 0, torch.qint8)
    return torch.ops.quantized.linear_prepack(qweight, None if bias is None else bias.detach().float())


@dataclass
class TransformerState:
    """KV cache of the decoder transformer: ``position`` steps seen so far, per-layer (keys, values)."""

    position: int
    cache: list[tuple[torch.Tensor, torch.Tensor]]


class StreamingTransformer:
    """Causal sliding-window forward of a transformers ``MimiTransformerModel`` with a KV cache.

    A query at position ``p`` attends to keys at positions ``p - window + 1 .. p`` (the same
    rule as transformers' sliding-window mask and moshi's ``context``), so the cache keeps
    the last ``window - 1`` keys and values per layer.
    """

    def __init__(self, transformer: nn.Module, window: int) -> None:
        if window < 1:
            raise ValueError(f"sliding window must be >= 1, got {window}")
        self.layers = list(transformer.layers)
        self.rotary = transformer.rotary_emb
        self.window = window
        attn = self.layers[0].self_attn
        self.num_heads = attn.num_heads
        self.num_kv_heads = attn.num_key_value_heads
        self.head_dim = attn.head_dim
        self.scaling = attn.scaling

    def initial_state(self, dtype: torch.dtype) -> TransformerState:
        """Empty cache at position 0."""
        device = self.layers[0].input_layernorm.weight.device  # (q_proj may be a quantized module)
        empty = torch.zeros(1, self.num_kv_heads, 0, self.head_dim, dtype=dtype, device=device)
        return TransformerState(0, [(empty, empty) for _ in self.layers])

    def _mask(self, start: int, n_query: int, n_cached: int, device: torch.device) -> torch.Tensor | None:
        """Boolean attend-mask ``[n_query, n_cached + n_query]``; None when every key is visible."""
        if n_query == 1 and n_cached < self.window:
            return None
        q_pos = torch.arange(start, start + n_query, device=device)
        k_pos = torch.arange(start - n_cached, start + n_query, device=device)
        delta = q_pos[:, None] - k_pos[None, :]
        return (delta >= 0) & (delta < self.window)

    def __call__(self, x: torch.Tensor, state: TransformerState) -> tuple[torch.Tensor, TransformerState]:
        """``x``: ``[1, steps, hidden]`` -> same shape; returns the advanced state."""
        from transformers.models.mimi.modeling_mimi import apply_rotary_pos_emb

        n = x.shape[1]
        positions = torch.arange(state.position, state.position + n, device=x.device)[None]
        cos, sin = self.rotary(x, positions)
        n_cached = state.cache[0][0].shape[2]
        mask = self._mask(state.position, n, n_cached, x.device)
        keep = self.window - 1
        new_cache = []
        for layer, (k_cache, v_cache) in zip(self.layers, state.cache, strict=True):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(1, n, self.num_heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(1, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(1, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            k = torch.cat([k_cache, k], dim=2)
            v = torch.cat([v_cache, v], dim=2)
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, scale=self.scaling, enable_gqa=self.num_kv_heads != self.num_heads
            )
            out = attn.o_proj(out.transpose(1, 2).reshape(1, n, self.num_heads * self.head_dim))
            x = x + layer.self_attn_layer_scale(out)
            x = x + layer.mlp_layer_scale(layer.mlp(layer.post_attention_layernorm(x)))
            start = max(0, k.shape[2] - keep)
            new_cache.append((k[:, :, start:], v[:, :, start:]))
        return x, TransformerState(state.position + n, new_cache)


class _Elu:
    """Stateless ELU step (SEANet uses alpha 1)."""

    def __init__(self, module: nn.ELU) -> None:
        self.alpha = module.alpha

    def __call__(self, x: torch.Tensor, states: list[Any]) -> torch.Tensor:
        return F.elu(x, self.alpha)


class _Stateful:
    """Binds a streaming op to its slot in the per-stream state list."""

    def __init__(self, op: StreamingConv1d | StreamingConvTranspose1d, slot: int) -> None:
        self.op = op
        self.slot = slot

    def __call__(self, x: torch.Tensor, states: list[Any]) -> torch.Tensor:
        y, states[self.slot] = self.op(x, states[self.slot])
        return y


class _Residual:
    """SEANet residual block: ``shortcut(x) + block(x)``."""

    def __init__(self, block: Sequence[Any], shortcut: Any | None) -> None:
        self.block = list(block)
        self.shortcut = shortcut

    def __call__(self, x: torch.Tensor, states: list[Any]) -> torch.Tensor:
        y = x
        for step in self.block:
            y = step(y, states)
        residual = self.shortcut(x, states) if self.shortcut is not None else x
        return residual + y


class SeanetDecoderPlan:
    """The SEANet decoder (``MimiDecoder``) as a list of streaming steps sharing one state list.

    Built once per model; each stream owns its own ``states`` list from :meth:`initial_states`.
    """

    def __init__(self, seanet: nn.Module) -> None:
        from transformers.models.mimi.modeling_mimi import MimiConv1d, MimiConvTranspose1d, MimiResnetBlock

        self._ops: list[StreamingConv1d | StreamingConvTranspose1d] = []

        def convert(module: nn.Module) -> Any:
            if isinstance(module, nn.ELU):
                return _Elu(module)
            if isinstance(module, MimiConv1d):
                if not module.causal:
                    raise ValueError("streaming decode needs causal convolutions (use_causal_conv=True)")
                if module.pad_mode != "constant":
                    raise ValueError(f"streaming decode supports constant (zero) padding, not {module.pad_mode!r}")
                return self._bind(StreamingConv1d(module.conv))
            if isinstance(module, MimiConvTranspose1d):
                if not module.causal or module.padding_left != 0:
                    raise ValueError("streaming decode needs causal conv-transposes trimmed on the right "
                                     "(use_causal_conv=True, trim_right_ratio=1.0)")
                return self._bind(StreamingConvTranspose1d(module.conv))
            if isinstance(module, MimiResnetBlock):
                shortcut = None if isinstance(module.shortcut, nn.Identity) else convert(module.shortcut)
                return _Residual([convert(m) for m in module.block], shortcut)
            raise ValueError(f"unsupported SEANet decoder layer {type(module).__name__}")

        self.steps = [convert(layer) for layer in seanet.layers]

    def _bind(self, op: StreamingConv1d | StreamingConvTranspose1d) -> _Stateful:
        self._ops.append(op)
        return _Stateful(op, len(self._ops) - 1)

    def quantize_int8(self, min_params: int = 1 << 20) -> int:
        """int8 weights for the convolutions with at least ``min_params`` weights (the weight-bound ones:
        few time steps, many channels); returns how many were quantized."""
        done = 0
        for op in self._ops:
            if op.weight.numel() >= min_params:
                op.quantize_int8()
                done += op.int8 is not None
        return done

    @property
    def num_stateful(self) -> int:
        """Number of convolutions that carry state."""
        return len(self._ops)

    def initial_states(self, dtype: torch.dtype) -> list[torch.Tensor]:
        """Fresh (all-zero) state of every convolution."""
        return [op.initial_state(dtype) for op in self._ops]

    def __call__(self, x: torch.Tensor, states: list[Any]) -> torch.Tensor:
        """``x``: ``[1, hidden, steps]`` -> ``[1, channels, steps * hop]``; updates ``states`` in place."""
        for step in self.steps:
            x = step(x, states)
        return x
