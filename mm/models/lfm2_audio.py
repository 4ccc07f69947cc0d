"""The LFM2-Audio model on transformers parts, and its strict loader for the official checkpoint.

Built from the modality encoders in ``mm.encoders`` (``audio_in``: FastConformer + adapter,
``audio_out``: depth transformer; the Mimi codec is loaded on first use).

The official directory (``config.json``, ``model.safetensors`` with the ``lfm.*``, ``conformer.*``,
``audio_adapter.*``, ``audio_embedding.*``, ``depthformer.*``, ``depth_linear.*`` and
``depth_embeddings.*`` keys, the Mimi file and the tokenizer) loads unchanged. Unlike the
official loader, :func:`load_lfm2_audio` is strict: every checkpoint tensor must be used (or
be a known buffer / tied duplicate that is then verified) and every parameter filled, otherwise
a :class:`mm.errors.CheckpointError` lists the mismatches.

>>> import json
>>> cfg = LFM2AudioConfig.from_dict(json.loads(MINIMAL_CONFIG_EXAMPLE))
>>> (cfg.codebooks, cfg.interleaved_n_text, cfg.interleaved_n_audio, cfg.depth_dim)
(8, 6, 12, 64)
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mm.encoders.audio_in import AudioAdapter, build_conformer, conformer_key, encode_mel
from mm.encoders.audio_out import AUDIO_VOCAB, AudioHead
from mm.errors import CheckpointError, InvalidInputError
from mm.runtime import restores_global_rng

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
#: top-level keys of the official config.json (``LFM2AudioConfig`` rejects others)
CONFIG_KEYS = {"architectures", "codebooks", "tie_audio_embeddings", "semantic_codebook_factor", "codebook_weight",
               "text_loss_multiplier", "audio_loss_multiplier", "interleaved_n_text", "interleaved_n_audio",
               "preprocessor", "encoder", "lfm", "depthformer"}
REQUIRED_KEYS = ("codebooks", "interleaved_n_text", "interleaved_n_audio", "preprocessor", "encoder", "lfm",
                 "depthformer")

MINIMAL_CONFIG_EXAMPLE = json.dumps({
    "codebooks": 8, "interleaved_n_text": 6, "interleaved_n_audio": 12,
    "preprocessor": {"sample_rate": 16000, "features": 128},
    "encoder": {"feat_in": 128, "n_layers": 1, "d_model": 32, "n_heads": 2},
    "lfm": {"vocab_size": 300, "hidden_size": 32}, "depthformer": {"layers": 1, "dim": 64, "tie": True},
})


@dataclass
class LFM2AudioConfig:
    """The parts of the official ``config.json`` that inference needs (the rest is kept in ``raw``)."""

    codebooks: int
    interleaved_n_text: int
    interleaved_n_audio: int
    preprocessor: dict[str, Any]
    encoder: dict[str, Any]
    lfm: dict[str, Any]
    depth_layers: int
    depth_dim: int
    depth_tie: bool
    tie_audio_embeddings: bool = False
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LFM2AudioConfig:
        unknown = sorted(set(data) - CONFIG_KEYS)
        if unknown:
            raise CheckpointError(f"config.json has unknown top-level keys {unknown}; an LFM2-Audio config has "
                                  f"{sorted(CONFIG_KEYS)}")
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise CheckpointError(f"config.json is missing {missing}; is this an LFM2-Audio checkpoint?")
        depth = data["depthformer"]
        if not isinstance(depth, dict) or not {"layers", "dim"} <= set(depth):
            raise CheckpointError(f"config.json 'depthformer' must have 'layers' and 'dim', got {depth!r}")
        if int(data["codebooks"]) < 1 or int(data["interleaved_n_text"]) < 1 or int(data["interleaved_n_audio"]) < 1:
            raise CheckpointError("config.json: codebooks and interleaved_n_text/audio must be positive")
        return cls(
            codebooks=int(data["codebooks"]), interleaved_n_text=int(data["interleaved_n_text"]),
            interleaved_n_audio=int(data["interleaved_n_audio"]), preprocessor=dict(data["preprocessor"]),
            encoder=dict(data["encoder"]), lfm=dict(data["lfm"]), depth_layers=int(depth["layers"]),
            depth_dim=int(depth["dim"]), depth_tie=bool(depth.get("tie", True)),
            tie_audio_embeddings=bool(data.get("tie_audio_embeddings", False)), raw=dict(data),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> LFM2AudioConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise CheckpointError(f"{str(path)!r} not found; an LFM2-Audio checkpoint has a config.json") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{str(path)!r} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise CheckpointError(f"{str(path)!r} must hold a JSON object")
        return cls.from_dict(data)

    def lfm_config(self):
        """The backbone's ``transformers.Lfm2Config``."""
        from transformers import Lfm2Config

        settings = dict(self.lfm)
        tie = settings.pop("tie_embedding", True)
        settings.setdefault("tie_word_embeddings", tie)
        config = Lfm2Config(**settings)
        config._attn_implementation = "sdpa"
        return config


class AudioEmbedding(nn.Module):
    """The backbone-side audio embedding table (``8 * 2049`` rows, codebook ``i`` at offset ``i * 2049``)."""

    def __init__(self, codebooks: int, hidden: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(codebooks * AUDIO_VOCAB, hidden)

    def frames(self, codes: torch.Tensor) -> torch.Tensor:
        """Sum of the 8 codebook embeddings of ``codes [8, n]`` -> ``[n, hidden]`` (raw, no norm)."""
        offsets = torch.arange(codes.shape[0], device=codes.device)[:, None] * AUDIO_VOCAB
        return self.embedding(codes + offsets).sum(0)


class LFM2AudioModel(nn.Module):
    """Backbone (``Lfm2Model``) + FastConformer + adapter + audio embeddings + depth transformer."""

    def __init__(self, config: LFM2AudioConfig) -> None:
        super().__init__()
        from transformers import Lfm2Model

        self.config = config
        self.lfm = Lfm2Model(config.lfm_config())
        hidden = self.lfm.config.hidden_size
        self.conformer = build_conformer(config.encoder)
        self.audio_adapter = AudioAdapter(int(config.encoder["d_model"]), hidden)
        self.audio_embedding = AudioEmbedding(config.codebooks, hidden)
        self.audio_head = AudioHead(hidden, config.depth_dim, config.depth_layers, config.codebooks,
                                    tie=config.depth_tie)
        #: an int8 copy of the tied text head, set by :func:`quantize_linears`
        self.text_head: nn.Module | None = None
        self._fast: dict[str, Any] = {}  # FastLfm2 per kernels choice

    @property
    def on_cpu(self) -> bool:
        return self.lfm.embed_tokens.weight.device.type == "cpu"

    def fast_backbone(self, kernels: str = "auto") -> Any:
        """:class:`mm.fast_decode.FastLfm2` over the backbone (built once per ``kernels`` choice, after any dtype
        change/quantization): ``auto``/``native`` on mm's native kernels where they run (bf16 prefill products upcast
        where measured faster, :mod:`mm.bf16_prefill`), ``torch`` on torch's ops with transformers' exact prefill."""
        if kernels not in self._fast:
            from mm.fast_decode import FastLfm2

            upcast = "never" if kernels == "torch" else "auto"  # torch's ops: transformers' exact bf16 prefill
            self._fast[kernels] = FastLfm2(self.lfm, kernels=kernels, prefill_upcast=upcast)
        return self._fast[kernels]

    @property
    def hidden_size(self) -> int:
        return self.lfm.config.hidden_size

    @property
    def dtype(self) -> torch.dtype:
        return self.lfm.embed_tokens.weight.dtype

    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """One mel segment ``[T, 128]`` -> adapter output ``[ceil(T/8), hidden]``."""
        return encode_mel(self.conformer, self.audio_adapter, mel)

    def text_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Text head: ``hidden @ embed_tokens.weight.T`` (tied)."""
        if self.text_head is not None:
            return self.text_head(hidden.reshape(-1, hidden.shape[-1]).float()).reshape(*hidden.shape[:-1], -1)
        return nn.functional.linear(hidden, self.lfm.embed_tokens.weight)

    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lfm.embed_tokens(ids)

    def embed_frames(self, codes: torch.Tensor) -> torch.Tensor:
        return self.audio_embedding.frames(codes)


# -- checkpoint mapping --------------------------------------------------------------------------


def model_key(official: str) -> str | None:
    """The parameter name in :class:`LFM2AudioModel` for an official checkpoint key (None: no parameter)."""
    if official.startswith("conformer."):
        return "conformer." + conformer_key(official)
    if official.startswith(("depthformer.", "depth_linear.", "depth_embeddings.")):
        return "audio_head." + official
    if official == "audio_embedding.embedding.weight" or official.startswith(("lfm.", "audio_adapter.")):
        return official
    return None


def _accounted(key: str, config: LFM2AudioConfig) -> str | None:
    """Why a checkpoint key with no parameter is fine, or None when it is unexpected."""
    if key == "codebook_offsets":
        return "buffer"
    if key == "audio_loss_weights":
        return "training-only buffer"
    if key in ("audio_embedding.to_logits.weight", "audio_embedding.embedding_norm.weight"):
        return "unused at inference"
    if config.depth_tie and key.startswith("depth_embeddings.") and key.endswith(".to_logits.weight"):
        return "tied"
    return None


def _verify_extra(key: str, tensor: torch.Tensor, params: dict[str, torch.Tensor], config: LFM2AudioConfig,
                  problems: list[str]) -> None:
    if key == "codebook_offsets":
        expected = torch.arange(config.codebooks) * AUDIO_VOCAB
        if tensor.shape != expected.shape or not torch.equal(tensor.long(), expected):
            problems.append(f"codebook_offsets = {tensor.tolist()} (expected {expected.tolist()})")
    elif key.startswith("depth_embeddings.") and key.endswith(".to_logits.weight"):
        twin = "audio_head." + key.replace(".to_logits.", ".embedding.")
        if twin in params and (params[twin].shape != tensor.shape
                               or not torch.equal(params[twin], tensor.to(params[twin].dtype))):
            problems.append(f"{key} should be tied to (equal to) {twin.removeprefix('audio_head.')} but differs")
    elif key == "audio_embedding.to_logits.weight" and config.tie_audio_embeddings:
        twin = "audio_embedding.embedding.weight"
        if twin in params and (params[twin].shape != tensor.shape
                               or not torch.equal(params[twin], tensor.to(params[twin].dtype))):
            problems.append(f"{key} should be tied to {twin} but differs")


def _build_empty(config: LFM2AudioConfig, dtype: torch.dtype) -> LFM2AudioModel:
    """Build the model without initialising weights (meta device), then allocate it on the CPU."""
    with torch.device("meta"):
        model = LFM2AudioModel(config)
    model = _fp32_depthwise(model.to(dtype)).to_empty(device="cpu")
    _reset_nonpersistent(model)
    return model


def _to_fp32_input(module: nn.Module, args: tuple) -> tuple | None:
    if module._mm_out_dtype is None:
        return None
    return (args[0].float(), *args[1:])


def _to_model_dtype(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output if module._mm_out_dtype is None else output.to(module._mm_out_dtype)


def _fp32_depthwise(model: LFM2AudioModel) -> LFM2AudioModel:
    """Keep depthwise (grouped) convolutions in float32 when the model is bf16/fp16.

    PyTorch's CPU bf16 grouped convolution falls back to one slow kernel call per channel (10x
    slower than fp32 here); the backbone's short-conv weights (hidden x 3) and the encoder's
    depthwise kernels are tiny, so they stay fp32: the backbone's conv helpers already compute in
    the weight's dtype, and the encoder convs get hooks that cast their input up and output back.
    """
    from transformers.models.lfm2.modeling_lfm2 import Lfm2ShortConv

    dtype = model.lfm.embed_tokens.weight.dtype
    reduced = dtype != torch.float32
    for module in model.lfm.modules():
        if isinstance(module, Lfm2ShortConv):
            module.conv.float()
    for module in model.conformer.modules():
        if isinstance(module, nn.Conv1d | nn.Conv2d) and module.groups > 1:
            module.float()
            module._mm_out_dtype = dtype if reduced else None
            if reduced and not getattr(module, "_mm_hooked", False):
                module.register_forward_pre_hook(_to_fp32_input)
                module.register_forward_hook(_to_model_dtype)
                module._mm_hooked = True
    return model


def _reset_nonpersistent(model: LFM2AudioModel) -> None:
    from transformers.models.lfm2.modeling_lfm2 import Lfm2RotaryEmbedding
    from transformers.models.parakeet.modeling_parakeet import ParakeetEncoderRelPositionalEncoding

    model.lfm.rotary_emb = Lfm2RotaryEmbedding(config=model.lfm.config)
    model.conformer.encode_positions = ParakeetEncoderRelPositionalEncoding(model.conformer.config)
    model.audio_head.reset_rope()


def load_state(model: LFM2AudioModel, weights: dict[str, torch.Tensor] | Any, where: str) -> None:
    """Copy official-named ``weights`` into ``model`` strictly; raise :class:`CheckpointError` on any mismatch."""
    config = model.config
    params = dict(model.state_dict())
    filled: set[str] = set()
    unexpected, shape_errors, problems = [], [], []
    extras: list[str] = []
    for key in list(weights.keys()):
        target = model_key(key)
        if target is None or target not in params:
            if _accounted(key, config) is None:
                unexpected.append(key)
            else:
                extras.append(key)
            continue
        tensor = weights[key] if isinstance(weights, dict) else weights.get_tensor(key)
        if tuple(tensor.shape) != tuple(params[target].shape):
            shape_errors.append(f"{key}: checkpoint {tuple(tensor.shape)} vs model {tuple(params[target].shape)}")
            continue
        with torch.no_grad():
            params[target].copy_(tensor)
        filled.add(target)
    for key in extras:
        tensor = weights[key] if isinstance(weights, dict) else weights.get_tensor(key)
        _verify_extra(key, tensor, params, config, problems)
    missing = sorted(set(params) - filled)
    if missing or unexpected or shape_errors or problems:
        lines = [f"checkpoint {where} does not match the LFM2-Audio model built from its config.json:"]
        for title, items in (("missing (model parameters not in the checkpoint)", missing),
                             ("unexpected (checkpoint tensors the model does not use)", sorted(unexpected)),
                             ("shape mismatches", shape_errors), ("inconsistent tensors", problems)):
            if items:
                shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
                lines.append(f"  {title}: " + ", ".join(shown))
        raise CheckpointError("\n".join(lines))


def load_lfm2_audio(path: str | Path, *, dtype: torch.dtype = torch.float32) -> LFM2AudioModel:
    """Load an LFM2-Audio checkpoint directory (official layout) strictly, in eval mode."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    config = LFM2AudioConfig.from_file(path / CONFIG_FILE)
    weights_path = path / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"{str(weights_path)!r} not found; the official layout has one model.safetensors")
    model = _build_empty(config, dtype)
    try:
        with safe_open(str(weights_path), framework="pt") as handle:
            load_state(model, handle, repr(str(weights_path)))
    except (OSError, RuntimeError, SafetensorError) as exc:
        raise CheckpointError(f"could not read {str(weights_path)!r} (corrupt or not safetensors): {exc}") from exc
    model.eval().requires_grad_(False)
    log.info("loaded LFM2-Audio from %s (%s)", path, dtype)
    return model


@restores_global_rng
def random_model(config: LFM2AudioConfig, *, dtype: torch.dtype = torch.float32, seed: int = 0) -> LFM2AudioModel:
    """A randomly initialised model (benchmarks and tests): unit-scale-ish weights, BatchNorm stats set."""
    torch.manual_seed(seed)
    model = _build_empty(config, dtype)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2:
                param.normal_(0.0, 1.0 / math.sqrt(param.shape[-1]))
            elif name.endswith("bias"):
                param.zero_()
            else:
                param.fill_(1.0)
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.zero_()
            elif name.endswith("running_var"):
                buf.fill_(1.0)
            elif name.endswith("num_batches_tracked"):
                buf.zero_()
    return model.eval().requires_grad_(False)


# -- the loaded bundle (model + tokenizer + features + codec) -------------------------------------


class LFM2Audio:
    """Everything inference needs from one checkpoint directory; build with :meth:`load` (cached).

    ``codec`` (the Mimi decoder) is loaded on first use, so ASR never reads the codec file.
    """

    def __init__(self, model: LFM2AudioModel, tokenizer: Any, feature_extractor: Any, path: Path,
                 dtype: torch.dtype, quantize: str | None) -> None:
        import threading

        self.model = model
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self.path = path
        self.dtype = dtype
        self.quantize = quantize
        # a plain Lock, not an RLock: a streaming generator holds it across yields and may be resumed (and
        # closed) on another thread, e.g. by a web server's worker pool; an RLock would refuse that release
        self.lock = threading.Lock()
        self._codec_lock = threading.Lock()
        self._codec = None

    @classmethod
    def load(cls, model: str | Path, *, device: str = "auto", dtype: Any = "auto",
             quantize: str | None = None) -> LFM2Audio:
        """Resolve ``model`` (directory, HF-cache id or hub id) and load it once per (path, dtype, quantize).

        The sequence of :func:`mm.models.loading.load_model`; ``quantize="int8"``: every linear layer
        and the tied text head (:func:`quantize_linears`); ``quantize="int4"``: the LFM2 backbone's linears
        group-wise 4-bit (:func:`quantize_backbone_int4`: half the bytes per decode step), the rest int8. ``dtype="auto"`` picks float32 or bfloat16 by a short
        measurement on this CPU (:func:`mm.encoders.audio_dtype.fastest_dtype`).
        """
        from mm.models.loading import load_model

        if dtype == "auto":  # measured on this CPU (int8 keeps float32 activations)
            from mm.encoders.audio_dtype import fastest_dtype

            dtype = torch.float32 if quantize else fastest_dtype()
        if quantize == "int4" and str(dtype).removeprefix("torch.") != "float32":
            raise InvalidInputError(f"quantize='int4' for LFM2-Audio needs dtype='float32' (its 4-bit backbone "
                                    f"runs float32 activations and the other layers int8), got dtype={dtype!r}")
        return load_model("lfm2-audio", model, load=cls._load_uncached,
                          quantizers={"int8": cls._quantized, "int4": cls._quantized_int4},
                          device=device, dtype=dtype, quantize=quantize, required=(CONFIG_FILE, WEIGHTS_FILE),
                          cpu_only=True)

    @classmethod
    def _load_uncached(cls, path: Path, device: str, dtype: torch.dtype) -> LFM2Audio:
        from transformers import AutoTokenizer

        from mm.encoders.audio_in import build_feature_extractor

        model = load_lfm2_audio(path, dtype=dtype)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"could not load the tokenizer of {str(path)!r}: {exc}") from exc
        return cls(model, tokenizer, build_feature_extractor(model.config.preprocessor), path, dtype, None)

    @staticmethod
    def _quantized(bundle: LFM2Audio) -> LFM2Audio:
        bundle.model = quantize_linears(bundle.model)
        bundle.quantize = "int8"
        return bundle

    @staticmethod
    def _quantized_int4(bundle: LFM2Audio) -> LFM2Audio:
        bundle.model = quantize_backbone_int4(bundle.model)
        bundle.quantize = "int4"
        return bundle

    @property
    def codec(self):
        """The Mimi codec (``tokenizer-e351c8d8-checkpoint125.safetensors`` + optional ``mimi_config.json``)."""
        if self._codec is None:
            from mm.encoders.mimi import load_mimi

            with self._codec_lock:
                if self._codec is None:
                    quantize = "int8" if self.quantize else None  # int4 is the backbone's; Mimi runs int8
                    self._codec = load_mimi(self.path, dtype=torch.float32,
                                            num_codebooks=self.model.config.codebooks, quantize=quantize)
        return self._codec

    def new_history(self):
        """An empty chat history (just ``<|startoftext|>``)."""
        from mm.encoders.audio_generate import ChatHistory

        return ChatHistory(self.tokenizer, self.feature_extractor)


def quantize_linears(model: LFM2AudioModel) -> LFM2AudioModel:
    """Dynamic int8 quantization, in place, of every ``nn.Linear`` (backbone, encoder, adapter, depth
    transformer) plus an int8 copy of the tied text head; activations stay float32."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    from mm.int8_linear import fuse_gated_mlps

    if model.dtype != torch.float32:
        raise CheckpointError("int8 quantization needs a float32 model")
    model._fast = {}  # their plans hold the float linears
    head = nn.Linear(model.hidden_size, model.lfm.config.vocab_size, bias=False)
    head.weight = model.lfm.embed_tokens.weight
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
        model.text_head = quantize_dynamic(nn.Sequential(head), {nn.Linear}, dtype=torch.qint8, inplace=False)[0]
    fuse_gated_mlps(model.lfm)  # the backbone's w1/w3 as one int8 matrix (same outputs)
    return model


def quantize_backbone_int4(model: LFM2AudioModel) -> LFM2AudioModel:
    """``quantize="int4"``, in place: every LFM2 backbone linear becomes a :class:`mm.quant.Int4DecodeLinear`, its
    decode steps on a group-wise 4-bit copy (mm's native int4 kernel: half the int8 bytes per step) and the prompt's
    prefill on an int8 copy (fbgemm: about twice the int4 kernel's speed on prompt-sized inputs); then
    :func:`quantize_linears` makes every other linear int8 (encoder, adapter, depth transformer, text head).
    Memory: 5 + 8 bits per backbone weight, against 8 + 8 for ``int8`` (fbgemm's packed weights plus the native
    kernels' int8 copy)."""
    from mm.quant import Int4DecodeLinear, Int4Linear

    if model.dtype != torch.float32:
        raise CheckpointError("int4 quantization of LFM2-Audio needs a float32 model")
    model._fast = {}
    targets = [(name, module) for name, module in model.lfm.named_modules()
               if type(module) is nn.Linear and module.in_features % 32 == 0]
    for name, linear in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.lfm.get_submodule(parent_name) if parent_name else model.lfm
        # the float linear stays as the prefill copy: quantize_linears below turns it into fbgemm int8
        setattr(parent, attr, Int4DecodeLinear(Int4Linear.from_linear(linear), linear))
    return quantize_linears(model)


def convert_dtype(model: LFM2AudioModel, dtype: torch.dtype) -> LFM2AudioModel:
    """Cast the weights to ``dtype`` in place, keeping the RoPE/position tables in float32."""
    model._fast = {}
    model.to(dtype)
    _fp32_depthwise(model)
    _reset_nonpersistent(model)
    return model


def official_key(name: str) -> str:
    """The official checkpoint key for a :class:`LFM2AudioModel` parameter name (inverse of :func:`model_key`).

    >>> official_key("conformer.layers.0.self_attn.q_proj.weight")
    'conformer.layers.0.self_attn.linear_q.weight'
    """
    from mm.encoders.audio_in import _CONFORMER_RENAMES

    if name.startswith("conformer."):
        inner = name.removeprefix("conformer.")
        for old, new in _CONFORMER_RENAMES:
            inner = inner.replace(new, old)
        return "conformer." + inner
    return name.removeprefix("audio_head.")


def official_state_dict(model: LFM2AudioModel) -> dict[str, torch.Tensor]:
    """The complete official ``state_dict`` of ``model``: parameters plus the buffers, the unused
    ``audio_embedding`` norm/logits and the tied ``depth_embeddings.*.to_logits`` duplicates."""
    config = model.config
    out = {official_key(k): v.detach().clone() for k, v in model.state_dict().items()}
    hidden = model.hidden_size
    out["codebook_offsets"] = torch.arange(config.codebooks) * AUDIO_VOCAB
    out["audio_loss_weights"] = (torch.linspace(1, 0, config.codebooks) * math.log(100.0)).exp()
    out["audio_embedding.embedding_norm.weight"] = torch.ones(hidden)
    out["audio_embedding.to_logits.weight"] = out["audio_embedding.embedding.weight"].clone()
    if config.depth_tie:
        for i in range(config.codebooks):
            out[f"depth_embeddings.{i}.to_logits.weight"] = out[f"depth_embeddings.{i}.embedding.weight"].clone()
    return out
