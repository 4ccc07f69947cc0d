"""One LFM2 decode step (batch 1, every layer) on the native kernels, over a :class:`mm.fast_decode.FastLfm2`'s weights.

:class:`NativeLfm2` reads the backbone's weights in place where their format allows (float32 and bfloat16
matrices, the fused q|k|v, in_proj and w1|w3 tensors of ``FastLfm2(fuse=True)``, :class:`mm.quant.Int4Linear`
codes) and packs int8 copies of fbgemm's dynamic-int8 linears (``quantize="int8"``, whose packed form the
kernels cannot read). Norm and convolution weights are copied to float32 (a few KB per layer). A step then is one
C call: the layers run inside one OpenMP parallel region (see ``lfm2_step.cpp``), the residual stream in float32.

>>> import tempfile, torch, mm.testing
>>> from transformers import AutoModelForCausalLM
>>> from mm.fast_decode import FastLfm2
>>> from mm.kernels import available
>>> model = AutoModelForCausalLM.from_pretrained(mm.testing.make_tiny_lfm2(tempfile.mkdtemp())).eval()
>>> fast, ref = FastLfm2(model), FastLfm2(model, kernels="torch")
>>> ids = torch.tensor([[1, 6, 20, 30]])
>>> a, b = fast.prefill(ids, max_new_tokens=4), ref.prefill(ids, max_new_tokens=4)
>>> (fast.native is not None) == available()
True
>>> bool(torch.allclose(fast.step(a, torch.tensor([40])), ref.step(b, torch.tensor([40])), atol=1e-4))
True
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch

from mm.fast_decode import consecutive_rows
from mm.int8_linear import int8_parts, is_dynamic_int8, stack_int8
from mm.kernels.build import require
from mm.kernels.hugepages import HugePagePool
from mm.kernels.weights import NativeWeight, WeightStruct


class LayerStruct(ctypes.Structure):
    _fields_ = [("attn", ctypes.c_int32), ("op_norm", ctypes.c_void_p), ("ffn_norm", ctypes.c_void_p),
                ("in_proj", WeightStruct), ("out_proj", WeightStruct), ("qkv", WeightStruct), ("o", WeightStruct),
                ("w13", WeightStruct), ("w2", WeightStruct), ("conv_w", ctypes.c_void_p), ("conv_b", ctypes.c_void_p),
                ("q_norm", ctypes.c_void_p), ("k_norm", ctypes.c_void_p)]


class ModelStruct(ctypes.Structure):
    _fields_ = [("hidden", ctypes.c_int32), ("n_layers", ctypes.c_int32), ("ff_dim", ctypes.c_int32),
                ("n_heads", ctypes.c_int32), ("n_kv", ctypes.c_int32), ("head_dim", ctypes.c_int32),
                ("conv_L", ctypes.c_int32), ("state_dtype", ctypes.c_int32), ("bf16_acts", ctypes.c_int32),
                ("rope_pairs", ctypes.c_int32), ("eps", ctypes.c_float),
                ("attn_scale", ctypes.c_float), ("layers", ctypes.POINTER(LayerStruct)),
                ("final_norm", ctypes.c_void_p)]


class StateStruct(ctypes.Structure):
    _fields_ = [("conv", ctypes.POINTER(ctypes.c_void_p)), ("keys", ctypes.POINTER(ctypes.c_void_p)),
                ("values", ctypes.POINTER(ctypes.c_void_p)), ("capacity", ctypes.c_int32)]


class Unsupported(ValueError):
    """This model (or one of its layers) cannot run on the native step; FastLfm2 keeps torch's ops."""


def native_weight(modules: list[Any], pool: HugePagePool | None = None) -> NativeWeight:
    """One native weight computing the outputs of ``modules`` (same input) concatenated; :class:`Unsupported`
    when the kernels have no format for them (e.g. an int8 weight whose width is not a multiple of 32).
    The packed copies (int8 rows, int4 codes) are made in ``pool`` when one is given (float weights are read in
    place: :class:`mm.fast_decode.FastLfm2` puts them in its pool)."""
    from mm.quant import Int4DecodeLinear, Int4Linear

    modules = [m.int4 if isinstance(m, Int4DecodeLinear) else m for m in modules]
    try:
        if all(type(m) is torch.nn.Linear for m in modules):
            return _dense(modules)
        if all(is_dynamic_int8(m) for m in modules):
            values, scales, bias = int8_parts(modules[0]) if len(modules) == 1 else stack_int8(modules)
            if pool is not None:
                values, scales = pool.copy(values), pool.copy(scales.float())
            return NativeWeight.q8(values, scales, bias)
        if all(isinstance(m, Int4Linear) for m in modules) and len({m.group_size for m in modules}) == 1:
            return Int4Linear.fuse_native(modules, pool)
    except ValueError as exc:
        raise Unsupported(str(exc)) from exc
    raise Unsupported(f"no native format for {[type(m).__name__ for m in modules]}")


def _dense(linears: list[Any]) -> NativeWeight:
    weights = [m.weight.detach() for m in linears]
    biases = [m.bias for m in linears]
    bias = None if all(b is None for b in biases) else torch.cat(
        [b.detach().float() if b is not None else torch.zeros(w.shape[0]) for b, w in zip(biases, weights,
                                                                                        strict=True)])
    view = consecutive_rows(weights)  # FastLfm2's fused tensor: one weight over the same memory, no copy
    return NativeWeight.dense(view if view is not None else torch.cat(weights), bias)


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().float().contiguous()


class NativeStack:
    """A stack of pre-norm blocks on ``mm_step``: LFM2's conv/attention layers, or attention-only stacks (the
    LFM2-Audio depth transformer). Subclasses fill :attr:`layers` and call :meth:`_finish`."""

    def __init__(self, n_layers: int, pool: HugePagePool | None = None) -> None:
        self.lib = require()
        self.keep: list[Any] = []  # everything the C structs point into
        self.layers = (LayerStruct * n_layers)()
        self.pool = pool if pool is not None else HugePagePool()  # packed copies (int8, int4) go here

    def _finish(self, *, hidden: int, ff_dim: int, n_heads: int, n_kv: int, head_dim: int, conv_L: int, eps: float,
                attn_scale: float, final_norm: torch.Tensor | None, bf16_acts: bool, rope_pairs: bool) -> None:
        self.hidden, self.head_dim = hidden, head_dim
        self.model = ModelStruct(hidden, len(self.layers), ff_dim, n_heads, n_kv, head_dim, conv_L, 0,
                                 int(bf16_acts), int(rope_pairs), float(eps), float(attn_scale), self.layers,
                                 self._ptr(final_norm))

    def _keep(self, t: torch.Tensor | None) -> torch.Tensor | None:
        if t is not None:
            self.keep.append(t)
        return t

    def _ptr(self, t: Any) -> int | None:
        t = self._keep(_f32(t))
        return None if t is None else t.data_ptr()

    def _weight(self, modules: list[Any]) -> WeightStruct:
        weight = native_weight(modules, self.pool)
        self.keep.append(weight)
        return weight.struct

    def _attention(self, s: LayerStruct, qkv: list[Any], out: list[Any], q_norm: Any, k_norm: Any) -> None:
        s.attn = 1
        s.qkv, s.o = self._weight(qkv), self._weight(out)
        s.q_norm, s.k_norm = self._ptr(q_norm), self._ptr(k_norm)

    # -- per decode state ----------------------------------------------------------------------------
    def bind_buffers(self, conv: dict[int, Any], keys: dict[int, Any], values: dict[int, Any],
                     capacity: int) -> Any:
        """The C view of per-layer state buffers (conv states; keys/values ``[kv_heads, capacity, hd]``) + scratch."""
        n = len(self.layers)
        tensors = list(conv.values()) + list(keys.values()) + list(values.values())
        dtypes = {t.dtype for t in tensors}
        if not dtypes <= {torch.float32, torch.bfloat16} or len(dtypes) > 1 or not all(
                t.is_contiguous() for t in tensors):
            raise Unsupported(f"decode state buffers must be contiguous float32 or bfloat16, got {dtypes}")

        def pointers(buffers: dict[int, Any]) -> Any:
            return (ctypes.c_void_p * n)(*[buffers[i].data_ptr() if i in buffers else None for i in range(n)])

        arrays = (pointers(conv), pointers(keys), pointers(values))
        c_state = StateStruct(*arrays, capacity)
        scratch = torch.empty(self.lib.mm_scratch_floats(ctypes.byref(self.model), capacity))
        return (c_state, scratch, 1 if dtypes == {torch.bfloat16} else 0, arrays, tensors)

    def step(self, bound: Any, x: torch.Tensor, pos: int, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Run every layer for one token: ``x`` ``[H]`` -> the last block's output ``[H]`` float32 (final-normed
        when the stack has a final norm)."""
        c_state, scratch, dtype, _, _ = bound
        if x.numel() != self.hidden or not 0 <= pos < c_state.capacity:
            raise ValueError(f"a native step takes {self.hidden} values at a position below {c_state.capacity}, "
                             f"got {x.numel()} at {pos}")
        self.model.state_dtype = dtype
        x = x.float().contiguous().clone()
        if self.model.bf16_acts:  # torch's bfloat16 path multiplies by bfloat16 cos/sin
            cos, sin = cos.to(torch.bfloat16), sin.to(torch.bfloat16)
        cos, sin = cos.float().contiguous(), sin.float().contiguous()
        self.lib.mm_step(ctypes.byref(self.model), ctypes.byref(c_state), ctypes.c_void_p(x.data_ptr()), pos,
                         ctypes.c_void_p(cos.data_ptr()), ctypes.c_void_p(sin.data_ptr()),
                         ctypes.c_void_p(scratch.data_ptr()), torch.get_num_threads())
        return x


class NativeLfm2(NativeStack):
    """The native step of one :class:`mm.fast_decode.FastLfm2` (raises :class:`Unsupported` for other layouts)."""

    def __init__(self, fast: Any) -> None:
        super().__init__(len(fast.layers), fast.pool)
        cfg = fast.config
        for i, (layer, plan) in enumerate(zip(fast.layers, fast._plan, strict=True)):
            self._fill(self.layers[i], layer, plan)
        first_attn = next((p for p in fast._plan if p["attn"]), None)
        self._finish(hidden=cfg.hidden_size, ff_dim=fast._plan[0]["ff_dim"], n_heads=cfg.num_attention_heads,
                     n_kv=cfg.num_key_value_heads,
                     head_dim=first_attn["head_dim"] if first_attn else cfg.hidden_size // cfg.num_attention_heads,
                     conv_L=cfg.conv_L_cache, eps=cfg.norm_eps,
                     attn_scale=first_attn["scale"] if first_attn else 1.0,
                     final_norm=fast.inner.embedding_norm.weight, bf16_acts=fast.dtype == torch.bfloat16,
                     rope_pairs=False)

    def _fill(self, s: LayerStruct, layer: Any, plan: dict[str, Any]) -> None:
        ff = layer.feed_forward
        s.op_norm, s.ffn_norm = self._ptr(layer.operator_norm.weight), self._ptr(layer.ffn_norm.weight)
        s.w13 = self._weight([ff.w13] if hasattr(ff, "w13") else [ff.w1, ff.w3])
        s.w2 = self._weight([ff.w2])
        if plan["attn"]:
            at = layer.self_attn
            self._attention(s, [at.q_proj, at.k_proj, at.v_proj], [at.out_proj], at.q_layernorm.weight,
                            at.k_layernorm.weight)
        else:
            conv = layer.conv
            if conv.conv.weight.shape[1] != 1:
                raise Unsupported("the short convolution must be depthwise")
            s.in_proj, s.out_proj = self._weight([conv.in_proj]), self._weight([conv.out_proj])
            s.conv_w = self._ptr(conv.conv.weight[:, 0, :])
            s.conv_b = self._ptr(conv.conv.bias)

    def bind(self, state: Any) -> Any:
        """The C view of a :class:`~mm.fast_decode.DecodeState`'s buffers (+ scratch), built once per state."""
        keys = {i: k[0] for i, k in state.keys.items()}  # batch 1: [kv_heads, capacity, hd]
        values = {i: v[0] for i, v in state.values.items()}
        return self.bind_buffers({i: c[0] for i, c in state.conv.items()}, keys, values, state.capacity)
