"""A lean CPU decode loop for LFM2 causal LMs (``Lfm2ForCausalLM``), with the same greedy tokens as transformers.

Where transformers' ``generate`` spends a decode step (profiled on LFM2-350M, docs/backbone.md):
building masks and cache objects, generic ``forward`` plumbing and logits processors around ~16
layers of small matrix-vector products. This module keeps the prefill on transformers' own forward
(in bf16, with the products that measure faster in float32 on this CPU upcast: :mod:`mm.bf16_prefill`;
``prefill_upcast="never"`` keeps it exactly transformers'), copies the caches into preallocated
buffers (convolution state + KV per layer), and then runs each decode step as a flat sequence of
tensor ops over the model's own weights:

* :meth:`FastLfm2.prefill` ``(input_ids or inputs_embeds, attention_mask) -> DecodeState``
* :meth:`FastLfm2.step` ``(state, input_ids or inputs_embeds) -> final hidden state [B, H]``
* :meth:`FastLfm2.logits` ``(hidden) -> logits [B, V]`` (the LM head, possibly int8)
* :meth:`FastLfm2.generate` greedy / sampling loop with EOS, stop strings and a per-token callback.

Audio and VQA pipelines drive ``prefill``/``step`` themselves (embeddings in, hidden states out).

>>> import tempfile, torch, mm.testing
>>> from transformers import AutoModelForCausalLM
>>> model = AutoModelForCausalLM.from_pretrained(mm.testing.make_tiny_lfm2(tempfile.mkdtemp())).eval()
>>> fast = FastLfm2(model)
>>> state = fast.prefill(torch.tensor([[1, 6, 20, 30]]), max_new_tokens=4)
>>> hidden = fast.step(state, torch.tensor([40]))
>>> tuple(fast.logits(hidden).shape) == (1, model.config.vocab_size)
True
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mm.errors import InvalidInputError

log = logging.getLogger(__name__)

#: generation-config fields whose non-default values need transformers' generate (the fast loop does not run them)
_UNSUPPORTED_GENERATION = {
    "num_beams": 1, "num_beam_groups": 1, "penalty_alpha": None, "min_length": 0, "min_new_tokens": None,
    "no_repeat_ngram_size": None, "bad_words_ids": None, "force_words_ids": None, "forced_bos_token_id": None,
    "forced_eos_token_id": None, "suppress_tokens": None, "begin_suppress_tokens": None, "sequence_bias": None,
    "min_p": None, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "top_h": None,
    "renormalize_logits": False, "exponential_decay_length_penalty": None, "guidance_scale": None,
    "watermarking_config": None, "remove_invalid_values": False, "encoder_repetition_penalty": 1.0,
    "assistant_model": None, "prompt_lookup_num_tokens": None, "max_length": None,
}


def supports(model: Any) -> bool:
    """True when ``model`` is an LFM2 causal LM this module can drive (``Lfm2ForCausalLM`` layout)."""
    return supports_backbone(getattr(model, "model", None)) and hasattr(model, "lm_head")


def supports_backbone(module: Any) -> bool:
    """True for a bare LFM2 backbone (``Lfm2Model``: embeddings, layers, final norm; no LM head).

    LFM2-VL's ``language_model`` and LFM2-Audio's ``lfm`` are such backbones.
    """
    return (getattr(getattr(module, "config", None), "model_type", None) == "lfm2"
            and all(hasattr(module, name) for name in ("layers", "embed_tokens", "embedding_norm", "rotary_emb")))


def unsupported_generation_fields(generation_config: Any) -> list[str]:
    """Names of generation-config fields set to values the fast loop cannot reproduce (empty = supported)."""
    bad = []
    for name, default in _UNSUPPORTED_GENERATION.items():
        value = getattr(generation_config, name, default)
        if value is not None and value != default and not (name == "max_length" and value):
            bad.append(name)
    return bad


#: ``FastLfm2(kernels=...)``: mm's native kernels when they run here, always, or never
KERNEL_CHOICES = ("auto", "native", "torch")


@dataclass
class DecodeState:
    """Caches of one (batched) generation: conv states, KV buffers, positions and the padding mask."""

    conv: dict[int, Any]             # layer -> [B, H, L_cache] rolling input window of the short conv
    keys: dict[int, Any]             # layer -> [B, kv_heads, capacity, head_dim]
    values: dict[int, Any]
    length: int                      # filled KV positions (prompt + steps taken)
    capacity: int
    positions: Any                   # [B] long, RoPE position of the next token per row
    kv_mask: Any | None              # [B, 1, 1, capacity] bool (True = attend) when the batch had padding
    hidden: Any                      # [B, H] final-normed hidden state of the last position
    native: Any = None               # the native kernels' view of these buffers (mm.kernels.lfm2), built on use

    @property
    def batch_size(self) -> int:
        return int(self.positions.shape[0])


class FastLfm2:
    """Decode steps over an ``Lfm2ForCausalLM``'s own modules and weights (fp32, bf16 or dynamic-int8 linears).

    ``model`` is an ``Lfm2ForCausalLM``, or a bare backbone (``Lfm2Model``, e.g. LFM2-VL's
    ``language_model`` or LFM2-Audio's ``lfm``) with its LM head passed as ``lm_head`` (or none:
    then only ``prefill``/``step`` work, for callers with heads of their own).

    ``fuse=True`` re-lays q/k/v, in_proj and w1/w3 weights of plain ``nn.Linear`` layers into one tensor per
    group (the modules keep views into it, so transformers' path still works and memory is unchanged), turning
    3-4 small matrix-vector products per layer into 1-2.  ``int8_head=True`` keeps an int8 copy of the
    65,536-row LM head for the decode steps.

    ``kernels``: ``"auto"`` runs batch-1 decode steps and the LM head on mm's native kernels (:mod:`mm.kernels`:
    every layer in one C call, compiled for this CPU) when they build here and support the weights, else torch's
    ops; ``"native"`` requires them (an error says why they cannot run); ``"torch"`` never uses them. With the
    native kernels the weights the step reads move into a :class:`mm.kernels.hugepages.HugePagePool` (the modules
    keep views, so memory is unchanged and transformers' path reads the same tensors).

    ``prefill_upcast``: in a bf16 backbone, ``"auto"`` runs the prefill's linears and short convolutions in
    float32 (same products, rounded to bf16 where torch's bf16 op rounds) for each shape and row count where
    that was measured faster on this CPU (:mod:`mm.bf16_prefill`); ``"always"`` / ``"never"`` force it.
    Decode steps are unaffected.
    """

    def __init__(self, model: Any, *, lm_head: Any = None, fuse: bool = True, int8_head: bool = False,
                 kernels: str = "auto", prefill_upcast: str = "auto") -> None:
        import torch

        from mm.bf16_prefill import UpcastPrefill

        if supports(model):
            inner, lm_head = model.model, model.lm_head
        elif supports_backbone(model):
            inner = model
        else:
            raise InvalidInputError(f"the fast decode path needs an LFM2 causal LM or backbone, got "
                                    f"{type(model).__name__}")
        self.lm_head = lm_head
        self.config = inner.config
        self.inner = inner
        self.layers = list(self.inner.layers)
        self.dtype = self.inner.embed_tokens.weight.dtype
        self.fused = fuse
        self.pool = self._pool(kernels)
        if self.pool is not None and type(lm_head) is torch.nn.Linear:
            self._home(lm_head)
        self._plan = [self._layer_plan(i, layer, fuse) for i, layer in enumerate(self.layers)]
        rotary = self.inner.rotary_emb
        if getattr(rotary, "rope_type", "default") != "default":
            raise InvalidInputError(f"the fast decode path supports default RoPE only, got {rotary.rope_type!r}")
        self._inv_freq = rotary.inv_freq.detach().float()
        self._rope_scale = float(getattr(rotary, "attention_scaling", 1.0))
        self._head = self._make_int8_head() if int8_head else None
        self.int8_head = int8_head
        self._torch = torch
        self.native, self._native_head = self._make_native(kernels)
        self.upcast = UpcastPrefill(inner, prefill_upcast)

    # -- weights -------------------------------------------------------------------------------
    @staticmethod
    def _pool(kernels: str) -> Any:
        """The huge-page pool for the native step's weights, when that step may run here."""
        from mm.kernels import available
        from mm.kernels.hugepages import HugePagePool

        if kernels not in KERNEL_CHOICES:
            raise InvalidInputError(f"kernels={kernels!r} is not supported; valid: {', '.join(KERNEL_CHOICES)}")
        return HugePagePool() if kernels != "torch" and available() else None

    def _home(self, linear: Any) -> None:
        """Move a plain linear's weight into the pool (its Parameter now views the pool: tied weights follow)."""
        from mm.kernels.hugepages import in_any_pool

        weight = linear.weight
        if not in_any_pool(weight):  # e.g. a view into a fused group, or homed by an earlier FastLfm2
            weight.data = self.pool.copy(weight.detach())

    @staticmethod
    def _is_plain(*linears: Any) -> bool:
        import torch

        return all(type(m) is torch.nn.Linear and m.bias is None for m in linears)

    def _fuse(self, linears: Sequence[Any]) -> Callable[[Any], Any] | None:
        """One weight for several bias-free linears sharing an input; modules keep views into it."""
        import torch

        if not self._is_plain(*linears):
            return None
        weights = [m.weight.detach() for m in linears]
        rows = sum(w.shape[0] for w in weights)
        fused = consecutive_rows(weights)  # fused by an earlier FastLfm2 on this model: a view, no copy
        if fused is None:
            out = None if self.pool is None else self.pool.empty((rows, *weights[0].shape[1:]), weights[0].dtype)
            fused = torch.cat(weights, dim=0, out=out).contiguous()
            start = 0
            for m, w in zip(linears, weights, strict=True):
                m.weight.data = fused[start:start + w.shape[0]]
                start += w.shape[0]
        return lambda x: torch.nn.functional.linear(x, fused)

    def _call(self, module: Any) -> Callable[[Any], Any]:
        import torch

        if type(module) is torch.nn.Linear:
            if self.pool is not None:
                self._home(module)
            weight, bias = module.weight, module.bias
            return lambda x: torch.nn.functional.linear(x, weight, bias)
        return module  # a dynamic-int8 linear (quantize="int8") or any other module

    def _layer_plan(self, idx: int, layer: Any, fuse: bool) -> dict[str, Any]:
        ff = layer.feed_forward
        plan: dict[str, Any] = {"idx": idx, "attn": layer.is_attention_layer, "op_norm": layer.operator_norm,
                                "ffn_norm": layer.ffn_norm, "w2": self._call(ff.w2)}
        if hasattr(ff, "w13"):  # fused at load (quantize="int8": mm.int8_linear.FusedGatedMLP)
            plan.update(w13=ff.w13, ff_dim=ff.ff_dim)
        else:
            plan.update(w13=self._fuse([ff.w1, ff.w3]) if fuse else None, w1=self._call(ff.w1),
                        w3=self._call(ff.w3), ff_dim=ff.w1.out_features)
        if layer.is_attention_layer:
            at = layer.self_attn
            qkv = self._fuse([at.q_proj, at.k_proj, at.v_proj]) if fuse else None  # first: q/k/v then view it
            plan.update(q=self._call(at.q_proj), k=self._call(at.k_proj), v=self._call(at.v_proj), qkv=qkv,
                        o=self._call(at.out_proj), q_norm=at.q_layernorm, k_norm=at.k_layernorm,
                        head_dim=at.head_dim, groups=at.num_key_value_groups, scale=at.scaling,
                        q_dim=at.q_proj.out_features, kv_dim=at.k_proj.out_features)
        else:
            conv = layer.conv
            plan.update(in_proj=self._call(conv.in_proj), out_proj=self._call(conv.out_proj),
                        conv_w=conv.conv.weight, conv_b=conv.conv.bias,
                        conv_w32=conv.conv.weight.detach()[:, 0, :].float())
        return plan

    def _make_int8_head(self) -> Callable[[Any], Any] | None:
        import torch

        head = self.lm_head
        if type(head) is not torch.nn.Linear:
            return None  # already quantized (quantize="int8")
        weight = head.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-8) / 127.0
        qweight = torch.quantize_per_channel(weight, scale.double(), torch.zeros_like(scale, dtype=torch.long), 0,
                                             torch.qint8)
        packed = torch.ops.quantized.linear_prepack(qweight, None)
        del weight
        return lambda x: torch.ops.quantized.linear_dynamic(x.float(), packed, True)

    def _make_native(self, kernels: str) -> tuple[Any, Any]:
        """(the native step, the native LM head) when ``kernels`` allows and the kernels run here, else Nones."""
        from mm.kernels import KernelUnavailableError, available, unavailable_reason
        from mm.kernels.lfm2 import NativeLfm2, Unsupported, native_weight

        if kernels == "torch":  # (checked by _pool)
            return None, None
        if not available():
            if kernels == "native":
                raise KernelUnavailableError(f"kernels='native': {unavailable_reason()}")
            return None, None
        try:
            step = NativeLfm2(self)
            head = None
            if self.lm_head is not None:
                head = native_weight([self.lm_head], self.pool) if not self.int8_head else self._native_int8_head()
        except Unsupported as exc:
            if kernels == "native":
                raise InvalidInputError(f"kernels='native' cannot run this model: {exc}") from exc
            log.info("native decode kernels skipped: %s", exc)
            return None, None
        return step, head

    def _native_int8_head(self) -> Any:
        from mm.int8_linear import quantize_rows
        from mm.kernels.weights import NativeWeight

        values, scales = quantize_rows(self.lm_head.weight)
        return NativeWeight.q8(self.pool.copy(values), self.pool.copy(scales.float()))

    # -- prefill -------------------------------------------------------------------------------
    def prefill(self, input_ids: Any = None, *, inputs_embeds: Any = None, attention_mask: Any = None,
                max_new_tokens: int = 256) -> DecodeState:
        """Run the prompt through transformers' forward and move its caches into preallocated buffers.

        In bf16, products measured faster in float32 on this CPU run upcast (``prefill_upcast``).
        ``attention_mask`` (``[B, T]``, left padding) gives per-row positions exactly as ``generate`` does.
        """
        import torch

        with torch.inference_mode():
            return self._prefill(input_ids, inputs_embeds, attention_mask, max_new_tokens)

    def _prefill(self, input_ids: Any, inputs_embeds: Any, attention_mask: Any, max_new_tokens: int) -> DecodeState:
        import torch
        from transformers import DynamicCache

        if (input_ids is None) == (inputs_embeds is None):
            raise InvalidInputError("prefill takes exactly one of input_ids or inputs_embeds")
        ref = input_ids if input_ids is not None else inputs_embeds
        batch, length = int(ref.shape[0]), int(ref.shape[1])
        if length == 0:
            raise InvalidInputError("the prompt is empty")
        if attention_mask is not None and bool((attention_mask == 1).all()):
            attention_mask = None
        if attention_mask is not None:
            position_ids = attention_mask.long().cumsum(-1) - 1
            position_ids = position_ids.masked_fill(attention_mask == 0, 0)
        else:
            position_ids = torch.arange(length).unsqueeze(0).expand(batch, -1)
        cache = DynamicCache(config=self.config)
        with self.upcast.applied(batch * length):
            out = self.inner(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                             position_ids=position_ids, cache=cache, use_cache=True)
        hidden = out.last_hidden_state[:, -1]
        capacity = length + int(max_new_tokens)
        conv, keys, values = {}, {}, {}
        for plan in self._plan:
            idx = plan["idx"]
            if plan["attn"]:
                k_src, v_src = cache.layers[idx].keys, cache.layers[idx].values
                shape = (batch, k_src.shape[1], capacity, k_src.shape[3])
                keys[idx] = torch.empty(shape, dtype=k_src.dtype)
                values[idx] = torch.empty(shape, dtype=v_src.dtype)
                keys[idx][:, :, :length].copy_(k_src)
                values[idx][:, :, :length].copy_(v_src)
            else:
                conv[idx] = cache.get_conv_state(idx).clone()
        kv_mask = None
        if attention_mask is not None:
            kv_mask = torch.ones(batch, 1, 1, capacity, dtype=torch.bool)
            kv_mask[:, 0, 0, :length] = attention_mask.bool()
        positions = position_ids[:, -1].clone() + 1
        return DecodeState(conv, keys, values, length, capacity, positions, kv_mask, hidden)

    # -- one decode step ------------------------------------------------------------------------
    def embed(self, input_ids: Any) -> Any:
        """Token embeddings ``[B, 1, H]`` for ``[B]`` ids."""
        return self.inner.embed_tokens(input_ids.view(-1, 1))

    def step(self, state: DecodeState, input_ids: Any = None, *, inputs_embeds: Any = None) -> Any:
        """Feed one token per row (ids ``[B]`` or embeddings ``[B, 1, H]``); return the final hidden ``[B, H]``."""
        import torch

        with torch.inference_mode():
            return self._step(state, input_ids, inputs_embeds)

    def _step(self, state: DecodeState, input_ids: Any, inputs_embeds: Any) -> Any:
        import torch
        import torch.nn.functional as F

        if state.length >= state.capacity:
            raise InvalidInputError(f"the decode state is full ({state.capacity} positions); prefill with a larger "
                                    "max_new_tokens")
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        pos = state.length
        freqs = state.positions.view(-1, 1, 1).float() * self._inv_freq  # [B, 1, D/2], as transformers computes
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos() * self._rope_scale, emb.sin() * self._rope_scale
        batch = x.shape[0]
        if self.native is not None and batch == 1 and state.kv_mask is None:
            if state.native is None:
                state.native = self.native.bind(state)
            hidden = self.native.step(state.native, x.reshape(-1), pos, cos.reshape(-1), sin.reshape(-1))
            state.length += 1
            state.positions += 1
            state.hidden = hidden.view(1, -1).to(self.dtype)
            return state.hidden
        cos, sin = cos.to(x.dtype).unsqueeze(1), sin.to(x.dtype).unsqueeze(1)
        mask = state.kv_mask[..., : pos + 1] if state.kv_mask is not None else None
        for plan in self._plan:
            residual = x
            h = plan["op_norm"](x)
            if plan["attn"]:
                h = self._attention(plan, h, state, pos, cos, sin, mask, batch)
            else:
                h = self._conv(plan, h, state.conv[plan["idx"]])
            x = h + residual
            h = plan["ffn_norm"](x)
            if plan["w13"] is not None:
                gate, up = plan["w13"](h).split(plan["ff_dim"], dim=-1)
            else:
                gate, up = plan["w1"](h), plan["w3"](h)
            x = x + plan["w2"](F.silu(gate) * up)
        state.length += 1
        state.positions += 1
        state.hidden = self.inner.embedding_norm(x)[:, -1]
        return state.hidden

    def _conv(self, plan: dict[str, Any], h: Any, conv_state: Any) -> Any:
        import torch

        bcx = plan["in_proj"](h).transpose(-1, -2)
        b, c, xx = bcx.chunk(3, dim=-2)
        bx = b * xx
        window = torch.cat([conv_state, bx], dim=-1).to(plan["conv_w"].dtype)
        conv_state.copy_(window[:, :, 1:])
        # one output position of a depthwise conv is L_cache multiply-adds per channel: done directly in fp32
        # (profiled: the CPU depthwise conv1d costs ~170 us per call in fp32 via oneDNN, and bf16 falls back
        # to a loop per channel)
        out = (window[:, :, 1:].float() * plan["conv_w32"]).sum(-1, keepdim=True)
        if plan["conv_b"] is not None:
            out = out + plan["conv_b"].float().unsqueeze(-1)
        y = (c * out.to(bx.dtype)).transpose(-1, -2).contiguous()
        return plan["out_proj"](y)

    def _attention(self, plan: dict[str, Any], h: Any, state: DecodeState, pos: int, cos: Any, sin: Any,
                   mask: Any, batch: int) -> Any:
        import torch.nn.functional as F

        hd = plan["head_dim"]
        if plan["qkv"] is not None:
            q, k, v = plan["qkv"](h).split((plan["q_dim"], plan["kv_dim"], plan["kv_dim"]), dim=-1)
        else:
            q, k, v = plan["q"](h), plan["k"](h), plan["v"](h)
        q = plan["q_norm"](q.view(batch, 1, -1, hd)).transpose(1, 2)
        k = plan["k_norm"](k.view(batch, 1, -1, hd)).transpose(1, 2)
        v = v.view(batch, 1, -1, hd).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        idx = plan["idx"]
        keys, values = state.keys[idx], state.values[idx]
        keys[:, :, pos:pos + 1].copy_(k)
        values[:, :, pos:pos + 1].copy_(v)
        keys, values = keys[:, :, : pos + 1], values[:, :, : pos + 1]
        if mask is None:
            out = F.scaled_dot_product_attention(q, keys, values, scale=plan["scale"], enable_gqa=True)
        else:  # one query per kv head group, as transformers' sdpa path does for padded single-token decode
            n_kv = keys.shape[1]
            q = q.reshape(batch, n_kv, plan["groups"], hd)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=plan["scale"])
        out = out.reshape(batch, -1, 1, hd).transpose(1, 2).reshape(batch, 1, -1)
        return plan["o"](out)

    def logits(self, hidden: Any, *, decode: bool = True) -> Any:
        """LM head over ``[B, H]`` hidden states -> ``[B, V]`` logits (the int8 head on decode steps when on)."""
        if not self._torch.is_inference_mode_enabled():
            with self._torch.inference_mode():
                return self.logits(hidden, decode=decode)
        if self.lm_head is None:
            raise InvalidInputError("this FastLfm2 has no LM head; compute logits with the model's own head")
        if decode and self._native_head is not None and hidden.shape[0] <= 16:
            return self._native_head(hidden).to(hidden.dtype)  # rounded like torch's head in bfloat16
        if decode and self._head is not None:
            return self._head(hidden)
        return self.lm_head(hidden)

    # -- generation loop -----------------------------------------------------------------------
    def generate(self, input_ids: Any, attention_mask: Any = None, *, max_new_tokens: int = 256,
                 do_sample: bool = False, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 repetition_penalty: float | None = None, eos_token_ids: Sequence[int] = (),
                 pad_token_id: int = 0, stop_check: Callable[[Any], Any] | None = None,
                 on_tokens: Callable[[Any], None] | None = None, inputs_embeds: Any = None,
                 generator: Any = None) -> Any:
        """Generate up to ``max_new_tokens`` per row; return ``[B, T]`` new ids (finished rows padded).

        ``inputs_embeds`` (``[B, T, H]``, optional) replaces the prompt's token embeddings in the prefill
        (e.g. with image features merged in); ``input_ids`` still feed the logits processors.
        Follows transformers' ``generate`` step for step: the same logits processors in the same order,
        ``torch.multinomial`` on the same probabilities (so a seed reproduces its samples), finished rows
        padded with ``pad_token_id``. ``stop_check(ids [B, L]) -> bool [B]`` ends rows early (stop strings,
        e.g. transformers' ``StopStringCriteria``);
        ``on_tokens(next_tokens)`` sees each step's ``[B]`` tokens (streaming). ``generator`` (a
        ``torch.Generator``) drives the sampling, so a seeded call leaves torch's global RNG alone.
        """
        import torch

        with torch.inference_mode():
            return self._generate(input_ids, attention_mask, max_new_tokens, do_sample, temperature, top_k, top_p,
                                  repetition_penalty, eos_token_ids, pad_token_id, stop_check, on_tokens,
                                  inputs_embeds, generator)

    def _generate(self, input_ids: Any, attention_mask: Any, max_new_tokens: int, do_sample: bool,
                  temperature: float, top_k: int, top_p: float, repetition_penalty: float | None,
                  eos_token_ids: Sequence[int], pad_token_id: int, stop_check: Any, on_tokens: Any,
                  inputs_embeds: Any = None, generator: Any = None) -> Any:
        import torch

        processors = _processors(do_sample, temperature, top_k, top_p, repetition_penalty)
        batch, prompt_len = input_ids.shape
        all_ids = torch.empty(batch, prompt_len + max_new_tokens, dtype=torch.long)
        all_ids[:, :prompt_len] = input_ids
        state = self.prefill(None if inputs_embeds is not None else input_ids, inputs_embeds=inputs_embeds,
                             attention_mask=attention_mask, max_new_tokens=max_new_tokens)
        eos = torch.tensor(list(eos_token_ids), dtype=torch.long)
        unfinished = torch.ones(batch, dtype=torch.long)
        logits = self.logits(state.hidden, decode=False)
        steps = 0
        for step in range(max_new_tokens):
            scores = logits.float()
            for proc in processors:
                scores = proc(all_ids[:, : prompt_len + step], scores)
            if do_sample:
                next_tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1,
                                                generator=generator).squeeze(1)
            else:
                next_tokens = torch.argmax(scores, dim=-1)
            if len(eos) or stop_check is not None:
                next_tokens = next_tokens * unfinished + pad_token_id * (1 - unfinished)
            all_ids[:, prompt_len + step] = next_tokens
            steps = step + 1
            if on_tokens is not None:
                on_tokens(next_tokens)
            if len(eos):
                unfinished = unfinished & ~torch.isin(next_tokens, eos)
            if stop_check is not None:
                unfinished = unfinished & ~stop_check(all_ids[:, : prompt_len + steps]).to(torch.long)
            if steps == max_new_tokens or not bool(unfinished.any()):
                break
            logits = self.logits(self._step(state, next_tokens, None))
        return all_ids[:, prompt_len: prompt_len + steps]


def consecutive_rows(weights: Sequence[Any]) -> Any:
    """One view stacking ``weights`` by rows (dim 0) when they lie back to back in memory (contiguous, same
    dtype and trailing shape), else None.

    >>> import torch
    >>> base = torch.arange(12.0).view(6, 2)
    >>> consecutive_rows([base[:2], base[2:6]]).shape, consecutive_rows([base[2:6], base[:2]])
    (torch.Size([6, 2]), None)
    """
    import itertools

    first = weights[0]
    if not all(w.dim() >= 1 and w.is_contiguous() and w.dtype == first.dtype and w.shape[1:] == first.shape[1:]
               for w in weights) or not all(b.data_ptr() == a.data_ptr() + a.nbytes
                                            for a, b in itertools.pairwise(weights)):
        return None
    return first.as_strided((sum(w.shape[0] for w in weights), *first.shape[1:]), first.stride())


def _rotate_half(x: Any) -> Any:
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _processors(do_sample: bool, temperature: float, top_k: int, top_p: float,
                repetition_penalty: float | None) -> list[Any]:
    """transformers' own logits processors, in the order ``generate`` applies them."""
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    procs: list[Any] = []
    if repetition_penalty is not None and repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(penalty=repetition_penalty))
    if do_sample:
        if temperature is not None and temperature != 1.0:
            procs.append(TemperatureLogitsWarper(temperature))
        if top_k is not None and top_k != 0:
            procs.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
        if top_p is not None and top_p < 1.0:
            procs.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    return procs
