"""A lean loop for LFM2-Audio's depth transformer: one Mimi frame (8 codes) per backbone hidden state.

The generic :class:`~mm.encoders.audio_out.AudioHead` runs 8 codebooks x 6 pre-norm blocks one token
at a time through ``nn.Module`` calls. Each token is ~15 small ops per block, so on a CPU the time
goes to Python/module overhead and to the 8 passes over the block weights. :class:`FastDepthLoop`
runs the same computation over the head's own weights with

* fused projections: ``w1``/``w3`` as one matrix (q/k/v are fused in the checkpoint already), the 40
  per-head q/k norms as one ``rms_norm`` plus one scale, RoPE as one ``[hd, hd]`` product for q and k;
* a static key/value cache ``[layers, 2, kv_heads, codebooks, hd]`` allocated once per frame;
* no module calls inside the loop: weights are bound once (float ``F.linear``, or fbgemm's dynamic
  int8 GEMV on prepacked weights when the head was quantized with ``quantize="int8"``);
* int8 per-codebook logits (``to_logits``, tied to the embeddings) when the head is int8;
* with ``native=True`` (float32 or int8 heads, when mm's kernels build here) each token's 6 blocks run as one
  C call on :mod:`mm.kernels` (:class:`NativeDepth`: fused projections, int8 GEMVs at memory speed, the
  threads kept inside one parallel region).

With float weights it computes what the generic head computes (same ops, up to float rounding;
the official goldens hold). With ``quantize="int8"`` the int8 values of every block weight are the
generic int8 path's, so the two agree up to rounding of the fused kernels; the logits are int8
here (fp32 in the generic path).

>>> import torch
>>> from mm.encoders.audio_out import AudioHead
>>> head = AudioHead(hidden=32, dim=64, layers=2).eval()
>>> loop = FastDepthLoop(head)
>>> hidden = torch.randn(32)
>>> loop.sample_frame(hidden) == head.sample_frame(hidden)
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from mm.encoders.audio_out import END_OF_AUDIO, AudioHead, SamplingSettings
from torch import nn

from mm.int8_linear import is_dynamic_int8, pack_int8, quantize_rows, stack_int8
from mm.kernels.lfm2 import NativeStack, Unsupported

Linear = Callable[[torch.Tensor], torch.Tensor]


def _bind(modules: list[nn.Module]) -> tuple[Linear, bool]:
    """One callable for several linears sharing an input (outputs concatenated); True when int8."""
    if all(is_dynamic_int8(m) for m in modules):
        return pack_int8(*stack_int8(modules)), True
    if all(type(m) is nn.Linear for m in modules):
        weight = modules[0].weight
        if len(modules) > 1:  # one matrix; the modules keep views into it (no second copy of the weights)
            weight = torch.cat([m.weight.detach() for m in modules]).contiguous()
            start = 0
            for m in modules:
                rows = m.weight.shape[0]
                m.weight.data = weight[start:start + rows]
                start += rows
        biases = [m.bias for m in modules]
        bias = None if all(b is None for b in biases) else torch.cat(
            [b if b is not None else torch.zeros(m.out_features, dtype=m.weight.dtype)
             for b, m in zip(biases, modules, strict=True)])
        return (lambda x: F.linear(x, weight, bias)), False
    if len(modules) == 1:
        return modules[0], False
    raise TypeError(f"cannot fuse linears of types {sorted({type(m).__name__ for m in modules})}")


def head_signature(head: AudioHead) -> tuple:
    """Identity of the head's weights (changes after quantization or a dtype change)."""
    out = []
    for module in head.modules():
        if isinstance(module, nn.Linear | nn.Embedding):
            out.append((id(module), module.weight.data_ptr(), module.weight.dtype))
        elif is_dynamic_int8(module):
            out.append((id(module), id(module._packed_params)))
    return tuple(out)


class FastDepthLoop:
    """The depth transformer of an :class:`AudioHead` as a flat loop (see the module docstring).

    Build once per head and weight state (:func:`fast_depth_loop` caches it); ``sample_frame`` is
    the drop-in for :meth:`AudioHead.sample_frame`.
    """

    def __init__(self, head: AudioHead, native: bool = False) -> None:
        self.codebooks, self.dim = head.codebooks, head.dim
        first = head.depthformer.layers[0].operator
        self.heads, self.kv_heads, self.hd = first.heads, first.kv_heads, first.head_dim
        self.dtype = head.depth_embeddings[0].embedding.weight.dtype
        self.depth_linear, _ = _bind([head.depth_linear])
        self.layers = []
        int8 = False
        for block in head.depthformer.layers:
            attn, ff = block.operator, block.feed_forward
            qkv, q8 = _bind([attn.qkv_proj])
            w13, f8 = _bind([ff.w1, ff.w3])
            norms = attn.bounded_attention
            qk_scale = torch.cat([norms.q_layernorm.weight.detach().float().expand(self.heads, -1),
                                  norms.k_layernorm.weight.detach().float().expand(self.kv_heads, -1)])
            self.layers.append((block.operator_norm.weight, qkv, qk_scale, _bind([attn.out_proj])[0],
                                block.ffn_norm.weight, w13, _bind([ff.w2])[0], ff.w1.out_features))
            int8 = int8 or q8 or f8
        self.int8 = int8
        self.eps = head.depthformer.layers[0].operator_norm.eps
        self.rope = head.rope.float()
        self.embeddings = [cb.embedding.weight for cb in head.depth_embeddings]
        self.out_norms = [cb.embedding_norm.weight for cb in head.depth_embeddings]
        self.logits_fns: list[Linear] = []
        for cb in head.depth_embeddings:
            weight = cb.embedding.weight if cb.to_logits is None else cb.to_logits.weight
            if int8:
                self.logits_fns.append(pack_int8(*quantize_rows(weight), None))
            else:
                self.logits_fns.append(lambda x, w=weight: F.linear(x, w))
        self.signature = head_signature(head)  # after the fused weights were bound
        self.native = _native_depth(head) if native else None

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and weight.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), weight, self.eps)
        return F.rms_norm(x.float(), (x.shape[-1],), weight.float(), self.eps).to(x.dtype)

    def logits(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """Codebook ``i``'s logits ``[AUDIO_VOCAB]`` from the stack's output ``h [1, dim]``."""
        x = self._rms(h, self.out_norms[i])
        return self.logits_fns[i](x.float() if self.int8 else x)[0]

    def _token(self, h: torch.Tensor, pos: int, cache: Any) -> torch.Tensor:
        if self.native is not None:
            return self.native.token(cache, h, pos)
        heads, kv, hd, eps = self.heads, self.kv_heads, self.hd, self.eps
        rot = self.rope[pos]
        q_width = heads * hd
        for j, (op_norm, qkv, qk_scale, out_proj, ffn_norm, w13, w2, ff) in enumerate(self.layers):
            a = qkv(self._rms(h, op_norm))[0]
            qk = a[: q_width + kv * hd].view(heads + kv, hd)
            qk = F.rms_norm(qk.float(), (hd,), eps=eps) * qk_scale
            qk = (qk @ rot).to(h.dtype)
            cache[j, 0, :, pos] = qk[heads:]
            cache[j, 1, :, pos] = a[q_width + kv * hd:].view(kv, hd)
            attn = F.scaled_dot_product_attention(qk[:heads].view(1, heads, 1, hd), cache[j, 0, None, :, : pos + 1],
                                                  cache[j, 1, None, :, : pos + 1], enable_gqa=True)
            h = h + out_proj(attn.reshape(1, q_width))
            gate, up = w13(self._rms(h, ffn_norm)).split(ff, dim=-1)
            h = h + w2(F.silu(gate) * up)
        return h

    def _run(self, hidden: torch.Tensor, choose: Callable[[int, torch.Tensor], int]) -> list[int]:
        x = self.depth_linear(hidden.to(self.dtype)[None]).view(self.codebooks, 1, self.dim)
        if self.native is not None:
            cache = self.native.new_frame()
        else:
            cache = x.new_empty(len(self.layers), 2, self.kv_heads, self.codebooks, self.hd)
        codes: list[int] = []
        prev = None
        for i in range(self.codebooks):
            h = x[i] if prev is None else x[i] + prev
            h = self._token(h, i, cache)
            code = choose(i, self.logits(i, h))
            codes.append(code)
            prev = self.embeddings[i][code]
        return codes

    def sample_frame(self, hidden: torch.Tensor, settings: SamplingSettings = SamplingSettings(),
                     generator: torch.Generator | None = None) -> list[int]:
        """Sample one frame (8 codes) from the backbone's last hidden state (as :meth:`AudioHead.sample_frame`)."""
        with torch.inference_mode():
            codes = self._run(hidden, lambda i, logits: settings.pick(logits, generator))
        if codes[0] == END_OF_AUDIO:
            codes = [END_OF_AUDIO] * self.codebooks
        return codes

    def frame_logits(self, hidden: torch.Tensor, codes: Any) -> torch.Tensor:
        """Logits ``[8, 2049]`` given the frame's ``codes`` (teacher forcing)."""
        out: list[torch.Tensor] = []
        with torch.inference_mode():
            self._run(hidden, lambda i, logits: out.append(logits.float()) or int(codes[i]))
        return torch.stack(out)


def fast_depth_loop(head: AudioHead, native: bool = False) -> FastDepthLoop:
    """The head's :class:`FastDepthLoop` (on mm's native kernels with ``native`` where they run), rebuilt when its
    weights changed (quantization, dtype)."""
    loops = head.__dict__.setdefault("_mm_fast_loops", {})
    loop = loops.get(native)
    if loop is None or loop.signature != head_signature(head):
        loop = FastDepthLoop(head, native=native)
        loops[native] = loop
    return loop


def _native_depth(head: AudioHead) -> Any:
    """The head's :class:`NativeDepth`, or None where the native kernels do not run it (bfloat16 heads keep
    torch's ops, whose rounding the official goldens were made with; no compiler; unsupported widths)."""
    from mm import kernels

    if head.depth_embeddings[0].embedding.weight.dtype != torch.float32 or not kernels.available():
        return None
    try:
        return NativeDepth(head)
    except Unsupported:
        return None


class NativeDepth(NativeStack):
    """The depth transformer's 6 blocks as one native stack (attention-only, pair-wise RoPE, no final norm)."""

    def __init__(self, head: AudioHead) -> None:
        blocks = head.depthformer.layers
        super().__init__(len(blocks))
        for s, block in zip(self.layers, blocks, strict=True):
            attn, ff, norms = block.operator, block.feed_forward, block.operator.bounded_attention
            s.op_norm, s.ffn_norm = self._ptr(block.operator_norm.weight), self._ptr(block.ffn_norm.weight)
            self._attention(s, [attn.qkv_proj], [attn.out_proj], norms.q_layernorm.weight, norms.k_layernorm.weight)
            s.w13, s.w2 = self._weight([ff.w1, ff.w3]), self._weight([ff.w2])
        first = blocks[0].operator
        self.kv_heads, self.hd, self.codebooks = first.kv_heads, first.head_dim, head.codebooks
        self._finish(hidden=head.dim, ff_dim=blocks[0].feed_forward.w1.out_features, n_heads=first.heads,
                     n_kv=first.kv_heads, head_dim=first.head_dim, conv_L=0, eps=blocks[0].operator_norm.eps,
                     attn_scale=first.head_dim ** -0.5, final_norm=None, bf16_acts=False, rope_pairs=True)
        pairs = torch.arange(0, first.head_dim, 2)
        rope = head.rope.float()  # rotations [positions, hd, hd]: cos on the diagonal, sin at (2i, 2i + 1)
        self.cos, self.sin = rope[:, pairs, pairs].contiguous(), rope[:, pairs, pairs + 1].contiguous()

    def new_frame(self) -> Any:
        """Key/value buffers (+ scratch) for one frame's 8 tokens (per call: frames may run in several threads)."""
        n = len(self.layers)
        keys = {j: torch.zeros(self.kv_heads, self.codebooks, self.hd) for j in range(n)}
        values = {j: torch.zeros(self.kv_heads, self.codebooks, self.hd) for j in range(n)}
        return self.bind_buffers({}, keys, values, self.codebooks)

    def token(self, bound: Any, h: torch.Tensor, pos: int) -> torch.Tensor:
        """One codebook token ``h [1, dim]`` at position ``pos`` through every block."""
        return self.step(bound, h.reshape(-1), pos, self.cos[pos], self.sin[pos]).view(1, -1)
