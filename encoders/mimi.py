"""The Mimi audio codec of LFM2-Audio: strict loader for the official moshi-keyed file, full and streaming decode.

LFM2-Audio speaks through Kyutai's Mimi codec (24 kHz, 12.5 frames/s, 1920 samples per
frame, 8 of its 32 codebooks). The official checkpoint ships it as
``tokenizer-e351c8d8-checkpoint125.safetensors`` with moshi key names. This module maps
those keys onto transformers' ``MimiModel`` (which equals the official codec), checks the
mapping strictly, and adds a streaming decoder (:mod:`mm.encoders.mimi_stream`) that keeps
convolution and transformer state, so frame-by-frame decoding equals a full decode and the
first audio is available one frame after the first codes.

Hyper-parameters: the real Mimi values are built in (:data:`REAL_MIMI_CONFIG`, like the
official code); a transformers ``MimiConfig`` saved as ``mimi_config.json`` next to the
codec file overrides them (the tiny test checkpoints carry one).

Strictness: every tensor of the file must map to a parameter or buffer of ``MimiModel``
built with the file's full configuration (all codebooks, encoder and decoder), with the right
shape, and every such parameter must be in the file; otherwise :class:`~mm.errors.CheckpointError`
lists the mismatches. Deliberately not loaded into memory (but still checked): codebooks 9..32
(LFM2-Audio uses the first 8) and, until :meth:`MimiCodec.encode` is first called, the
encoder side (``encoder.*``, ``encoder_transformer.*``, ``downsample.*``).

Use ``load_mimi(checkpoint_dir)`` for a checkpoint directory. Codes ``[8, T]`` decode to
``T * 1920`` float32 samples; a stream gives the same samples frame by frame:

>>> cfg = tiny_mimi_config()
>>> codec = MimiCodec.from_state_dict(random_mimi_state_dict(cfg), cfg)
>>> codes = torch.randint(0, 2048, (8, 3))
>>> wave = codec.decode(codes)
>>> wave.shape
torch.Size([5760])
>>> stream = codec.stream()
>>> pieces = [stream.decode_frame(codes[:, t]) for t in range(3)]
>>> bool((torch.cat(pieces) - wave).abs().max() < 1e-4)
True
"""

from __future__ import annotations

import copy
import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from mm.encoders.mimi_stream import SeanetDecoderPlan, StreamingConvTranspose1d, StreamingTransformer

from mm.errors import CheckpointError, InvalidInputError, ModelNotFoundError
from mm.runtime import cached_model, resolve_dtype

log = logging.getLogger(__name__)

__all__ = [
    "EOAUDIO_CODE",
    "MIMI_CONFIG_FILENAME",
    "MIMI_FILENAME",
    "NUM_CODEBOOKS",
    "REAL_MIMI_CONFIG",
    "MimiCodec",
    "MimiStreamDecoder",
    "check_moshi_keys",
    "find_mimi_file",
    "hf_to_moshi_state_dict",
    "load_mimi",
    "mimi_config",
    "moshi_to_hf_names",
    "moshi_to_hf_state_dict",
    "random_mimi_state_dict",
    "tiny_mimi_config",
    "write_mimi_checkpoint",
]

#: the codec file of the official LFM2-Audio checkpoint directory
MIMI_FILENAME = "tokenizer-e351c8d8-checkpoint125.safetensors"
#: optional transformers ``MimiConfig`` next to it that overrides :data:`REAL_MIMI_CONFIG`
MIMI_CONFIG_FILENAME = "mimi_config.json"
#: codebooks LFM2-Audio uses (the file holds 32)
NUM_CODEBOOKS = 8
#: the end-of-audio code of LFM2-Audio's depth decoder; not a Mimi code
EOAUDIO_CODE = 2048

#: Kyutai Mimi as the official ``get_mimi()`` builds it, in transformers ``MimiConfig`` terms
REAL_MIMI_CONFIG: dict[str, Any] = {
    "sampling_rate": 24000, "audio_channels": 1, "hidden_size": 512, "num_filters": 64,
    "num_residual_layers": 1, "upsampling_ratios": [8, 6, 5, 4], "kernel_size": 7, "last_kernel_size": 3,
    "residual_kernel_size": 3, "dilation_growth_rate": 2, "use_causal_conv": True, "pad_mode": "constant",
    "compress": 2, "trim_right_ratio": 1.0, "codebook_size": 2048, "codebook_dim": 256, "num_quantizers": 32,
    "use_conv_shortcut": False, "vector_quantization_hidden_dimension": 256, "num_semantic_quantizers": 1,
    "upsample_groups": 512, "num_hidden_layers": 8, "intermediate_size": 2048, "num_attention_heads": 8,
    "num_key_value_heads": 8, "head_dim": 64, "hidden_act": "gelu", "max_position_embeddings": 8000,
    "norm_eps": 1e-5, "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"}, "sliding_window": 250,
    "layer_scale_initial_scale": 0.01, "attention_bias": False, "frame_rate": 12.5,
}

#: frames per internal chunk of a full decode (bounds attention and activation memory; the result
#: does not depend on it, see :class:`MimiStreamDecoder`)
FULL_DECODE_CHUNK = 125


# --------------------------------------------------------------------------- configuration


def mimi_config(checkpoint_dir: Path | None = None):
    """The ``MimiConfig`` for a checkpoint: ``mimi_config.json`` there if present, else the real Mimi.

    >>> mimi_config().frame_size, mimi_config().sampling_rate
    (1920, 24000)
    """
    from transformers import MimiConfig

    if checkpoint_dir is not None:
        path = Path(checkpoint_dir) / MIMI_CONFIG_FILENAME
        if path.is_file():
            try:
                config = MimiConfig.from_json_file(str(path))
            except Exception as exc:  # JSON errors, and huggingface_hub's strict-dataclass validation errors
                raise CheckpointError(f"{path} is not a valid transformers MimiConfig: {exc}") from exc
            log.info("Mimi hyper-parameters from %s", path)
            return config
    return MimiConfig(**REAL_MIMI_CONFIG)


# --------------------------------------------------------------------------- key mapping

_TRANSFORMER_RENAMES = {
    "self_attn.out_projs.0.weight": "self_attn.o_proj.weight",
    "linear1.weight": "mlp.fc1.weight",
    "linear2.weight": "mlp.fc2.weight",
    "norm1.weight": "input_layernorm.weight",
    "norm1.bias": "input_layernorm.bias",
    "norm2.weight": "post_attention_layernorm.weight",
    "norm2.bias": "post_attention_layernorm.bias",
    "layer_scale_1.scale": "self_attn_layer_scale.scale",
    "layer_scale_2.scale": "mlp_layer_scale.scale",
}
_CODEBOOK_RENAMES = {"embedding_sum": "embed_sum", "cluster_usage": "cluster_usage", "_initialized": "initialized"}
_RVQ = {"rvq_first": "semantic_residual_vector_quantizer", "rvq_rest": "acoustic_residual_vector_quantizer"}

_SEANET = re.compile(r"^(encoder|decoder)\.model\.(\d+)\.(?:(block\.\d+|shortcut)\.)?(?:conv\.conv|convtr\.convtr)\.(weight|bias)$")
_TRANSFORMER = re.compile(r"^(encoder|decoder)_transformer\.transformer\.layers\.(\d+)\.(.+)$")
_CODEBOOK = re.compile(r"^quantizer\.(rvq_first|rvq_rest)\.vq\.layers\.(\d+)\._codebook\.(\w+)$")
_RVQ_PROJ = re.compile(r"^quantizer\.(rvq_first|rvq_rest)\.(input_proj|output_proj)\.weight$")


def _rope_permutation(num_heads: int, head_dim: int) -> torch.Tensor:
    """Row order taking moshi's interleaved RoPE pairs (0,1),(2,3).. to transformers' rotate_half halves."""
    per_head = torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])
    return (torch.arange(num_heads)[:, None] * head_dim + per_head[None]).reshape(-1)


def _moshi_name(key: str) -> str | None:
    """transformers name of a single (non-qkv) moshi key, or None when the key is not a known Mimi tensor."""
    if m := _SEANET.match(key):
        side, idx, sub, param = m.groups()
        sub = f"{sub}." if sub else ""
        return f"{side}.{side}_seanet.layers.{idx}.{sub}conv.{param}"
    if m := _TRANSFORMER.match(key):
        side, layer, rest = m.groups()
        if rest in _TRANSFORMER_RENAMES:
            return f"{side}.{side}_transformer.layers.{layer}.{_TRANSFORMER_RENAMES[rest]}"
        return None
    if m := _CODEBOOK.match(key):
        rvq, idx, name = m.groups()
        if name in _CODEBOOK_RENAMES:
            return f"quantizer.{_RVQ[rvq]}.layers.{idx}.codebook.{_CODEBOOK_RENAMES[name]}"
        return None
    if m := _RVQ_PROJ.match(key):
        return f"quantizer.{_RVQ[m.group(1)]}.{m.group(2)}.weight"
    if key == "upsample.convtr.convtr.convtr.weight":
        return "decoder.upsample.conv.weight"
    if key == "downsample.conv.conv.conv.weight":
        return "encoder.downsample.conv.weight"
    return None


def moshi_to_hf_names(keys: Iterable[str]) -> tuple[dict[str, str | tuple[str, str, str]], list[str]]:
    """Map moshi key names to transformers ``MimiModel`` names (no tensors touched).

    Returns ``(mapping, unknown)``: ``mapping[moshi_key]`` is one transformers name, or for a fused
    attention ``in_projs.0.weight`` the triple of q/k/v names; ``unknown`` lists keys with no
    counterpart.

    >>> moshi_to_hf_names(["decoder.model.2.convtr.convtr.bias", "x"])
    ({'decoder.model.2.convtr.convtr.bias': 'decoder.decoder_seanet.layers.2.conv.bias'}, ['x'])
    """
    mapping: dict[str, str | tuple[str, str, str]] = {}
    unknown: list[str] = []
    for key in keys:
        m = _TRANSFORMER.match(key)
        if m and m.group(3) == "self_attn.in_projs.0.weight":
            base = f"{m.group(1)}.{m.group(1)}_transformer.layers.{m.group(2)}.self_attn"
            mapping[key] = (f"{base}.q_proj.weight", f"{base}.k_proj.weight", f"{base}.v_proj.weight")
            continue
        name = _moshi_name(key)
        if name is None:
            unknown.append(key)
        else:
            mapping[key] = name
    return mapping, unknown


def _split_qkv(weight: torch.Tensor, config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split moshi's fused in-projection into q/k/v and reorder q/k rows for rotate_half RoPE."""
    q_rows = config.num_attention_heads * config.head_dim
    kv_rows = config.num_key_value_heads * config.head_dim
    if weight.shape[0] != q_rows + 2 * kv_rows:
        raise CheckpointError(
            f"fused attention in-projection has {weight.shape[0]} rows; the config needs "
            f"{q_rows + 2 * kv_rows} (q {q_rows} + k {kv_rows} + v {kv_rows})"
        )
    q, k, v = weight.split([q_rows, kv_rows, kv_rows])
    q = q[_rope_permutation(config.num_attention_heads, config.head_dim)]
    k = k[_rope_permutation(config.num_key_value_heads, config.head_dim)]
    return q, k, v


def moshi_to_hf_state_dict(state: Mapping[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """Convert a moshi-keyed Mimi state dict to transformers ``MimiModel`` names (unknown keys raise).

    >>> cfg = mimi_config()
    >>> hf = moshi_to_hf_state_dict(hf_to_moshi_state_dict({"decoder.upsample.conv.weight": torch.ones(512, 1, 4)}, cfg), cfg)
    >>> list(hf)
    ['decoder.upsample.conv.weight']
    """
    mapping, unknown = moshi_to_hf_names(state)
    if unknown:
        raise CheckpointError(f"unknown Mimi keys: {_listing(unknown)}")
    out: dict[str, torch.Tensor] = {}
    for key, name in mapping.items():
        if isinstance(name, tuple):
            out.update(zip(name, _split_qkv(state[key], config), strict=True))
        else:
            out[name] = state[key]
    return out


_HF_SEANET = re.compile(r"^(encoder|decoder)\.(?:encoder|decoder)_seanet\.layers\.(\d+)\.(?:(block\.\d+|shortcut)\.)?conv\.(weight|bias)$")
_HF_TRANSFORMER = re.compile(r"^(encoder|decoder)\.(?:encoder|decoder)_transformer\.layers\.(\d+)\.(.+)$")
_HF_CODEBOOK = re.compile(r"^quantizer\.(\w+)\.layers\.(\d+)\.codebook\.(\w+)$")
_HF_RVQ_PROJ = re.compile(r"^quantizer\.(\w+)\.(input_proj|output_proj)\.weight$")


def _decoder_convtr_layers(config) -> set[str]:
    from transformers.models.mimi.modeling_mimi import MimiConvTranspose1d

    return {str(i) for i, layer in enumerate(_meta_model(config).decoder.decoder_seanet.layers)
            if isinstance(layer, MimiConvTranspose1d)}


def _hf_to_moshi_name(name: str, decoder_convtr: set[str]) -> str:
    """moshi name of a transformers ``MimiModel`` name (q/k/v map to the fused ``in_projs.0.weight``)."""
    if m := _HF_SEANET.match(name):
        side, idx, sub, param = m.groups()
        kind = "convtr.convtr" if side == "decoder" and idx in decoder_convtr and not sub else "conv.conv"
        sub = f"{sub}." if sub else ""
        return f"{side}.model.{idx}.{sub}{kind}.{param}"
    if m := _HF_TRANSFORMER.match(name):
        side, layer, rest = m.groups()
        prefix = f"{side}_transformer.transformer.layers.{layer}."
        renames = {v: k for k, v in _TRANSFORMER_RENAMES.items()}
        if rest in renames:
            return prefix + renames[rest]
        if rest in ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"):
            return prefix + "self_attn.in_projs.0.weight"
    elif m := _HF_CODEBOOK.match(name):
        rvq = {v: k for k, v in _RVQ.items()}
        books = {v: k for k, v in _CODEBOOK_RENAMES.items()}
        if m.group(1) in rvq and m.group(3) in books:
            return f"quantizer.{rvq[m.group(1)]}.vq.layers.{m.group(2)}._codebook.{books[m.group(3)]}"
    elif m := _HF_RVQ_PROJ.match(name):
        rvq = {v: k for k, v in _RVQ.items()}
        if m.group(1) in rvq:
            return f"quantizer.{rvq[m.group(1)]}.{m.group(2)}.weight"
    elif name == "decoder.upsample.conv.weight":
        return "upsample.convtr.convtr.convtr.weight"
    elif name == "encoder.downsample.conv.weight":
        return "downsample.conv.conv.conv.weight"
    raise CheckpointError(f"no moshi name for the MimiModel tensor {name}")


def hf_to_moshi_state_dict(state: Mapping[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """Inverse of :func:`moshi_to_hf_state_dict` (fuses q/k/v back, with interleaved RoPE rows)."""
    decoder_convtr = _decoder_convtr_layers(config)
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in state.items():
        key = _hf_to_moshi_name(name, decoder_convtr)
        if key.endswith("in_projs.0.weight"):
            fused.setdefault(key, {})[name.rsplit(".", 2)[1][0]] = tensor
        else:
            out[key] = tensor
    inv_q = torch.argsort(_rope_permutation(config.num_attention_heads, config.head_dim))
    inv_k = torch.argsort(_rope_permutation(config.num_key_value_heads, config.head_dim))
    for key, parts in fused.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"{key}: need the q, k and v projections, got {sorted(parts)}")
        out[key] = torch.cat([parts["q"][inv_q], parts["k"][inv_k], parts["v"]])
    return out


# --------------------------------------------------------------------------- strict check


def _listing(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" ... ({len(items) - limit} more)" if len(items) > limit else "")


def _meta_model(config):
    """``MimiModel(config)`` without memory (for names and shapes)."""
    from transformers import MimiModel

    with torch.device("meta"):
        return MimiModel(config)


def _expected_shapes(config) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in _meta_model(config).state_dict().items()}


def check_moshi_keys(file_shapes: Mapping[str, tuple[int, ...]], config, source: str = "Mimi file") -> dict:
    """Strictly compare a moshi-keyed file (names -> shapes) with ``MimiModel(config)``.

    Returns the name mapping of :func:`moshi_to_hf_names`. Raises :class:`CheckpointError` listing
    unknown keys, missing parameters and shape mismatches.
    """
    mapping, unknown = moshi_to_hf_names(file_shapes)
    expected = _expected_shapes(config)
    q_rows = config.num_attention_heads * config.head_dim
    kv_rows = config.num_key_value_heads * config.head_dim
    filled: set[str] = set()
    unexpected, mismatched = list(unknown), []
    for key, name in mapping.items():
        shape = tuple(file_shapes[key])
        if isinstance(name, tuple):
            want = (q_rows + 2 * kv_rows, *expected.get(name[0], (None,))[1:])
            if name[0] not in expected:
                unexpected.append(key)
            elif shape != want:
                mismatched.append(f"{key} {list(shape)} (expected {list(want)})")
            filled.update(name)
        elif name not in expected:
            unexpected.append(key)
        else:
            if shape != expected[name]:
                mismatched.append(f"{key} {list(shape)} (expected {list(expected[name])})")
            filled.add(name)
    missing = sorted(set(expected) - filled)
    if unexpected or missing or mismatched:
        convtr = _decoder_convtr_layers(config)
        moshi_missing = sorted({_hf_to_moshi_name(name, convtr) for name in missing})
        problems = []
        if missing:
            problems.append(f"missing {len(moshi_missing)}: {_listing(moshi_missing)}")
        if unexpected:
            problems.append(f"unexpected {len(unexpected)}: {_listing(sorted(unexpected))}")
        if mismatched:
            problems.append(f"wrong shape {len(mismatched)}: {_listing(mismatched)}")
        raise CheckpointError(
            f"{source} does not match the Mimi configuration ({config.num_quantizers} codebooks, "
            f"{config.num_hidden_layers} transformer layers, hidden {config.hidden_size}); "
            + "; ".join(problems)
            + ". Use the official tokenizer-e351c8d8-checkpoint125.safetensors, or put the matching "
            f"transformers MimiConfig as {MIMI_CONFIG_FILENAME} next to it."
        )
    return mapping


# --------------------------------------------------------------------------- loading


def find_mimi_file(checkpoint_dir: Path) -> Path:
    """The Mimi codec file of a checkpoint directory (or the file itself when given one)."""
    path = Path(checkpoint_dir)
    if path.is_file() and path.suffix == ".safetensors":
        return path
    if not path.is_dir():
        raise ModelNotFoundError(f"checkpoint directory {str(path)!r} does not exist")
    candidate = path / MIMI_FILENAME
    if candidate.is_file():
        return candidate
    others = sorted(path.glob("tokenizer-*.safetensors"))
    if len(others) == 1:
        return others[0]
    raise ModelNotFoundError(
        f"no Mimi codec file in {path}: expected {MIMI_FILENAME} (the file LiquidAI/LFM2-Audio-1.5B ships); "
        f"found {[p.name for p in path.iterdir()] if path.is_dir() else []}"
    )


def load_mimi(checkpoint_dir: Path, *, dtype: Any = torch.float32, num_codebooks: int = NUM_CODEBOOKS,
              quantize: str | None = None) -> MimiCodec:
    """Load the Mimi codec of an LFM2-Audio checkpoint directory (cached per path, dtype, codebooks, quantize).

    ``dtype`` is a torch dtype or a name (``"float32"``, ``"bfloat16"``); decoded audio is always float32.
    ``quantize="int8"`` (float32 only): see :meth:`MimiCodec.quantize_int8`.

    >>> codec = load_mimi(Path("LFM2-Audio-1.5B"))  # doctest: +SKIP
    >>> codec.sample_rate, codec.frame_size          # doctest: +SKIP
    (24000, 1920)
    """
    file = find_mimi_file(Path(checkpoint_dir))
    torch_dtype = resolve_dtype(dtype)
    config_file = file.parent / MIMI_CONFIG_FILENAME
    stamp = (file.stat().st_mtime_ns, config_file.stat().st_mtime_ns if config_file.is_file() else None)
    if quantize not in (None, "int8"):
        raise InvalidInputError(f"Mimi quantize must be None or 'int8', got {quantize!r}")
    key = ("mimi", str(file.resolve()), stamp, str(torch_dtype), int(num_codebooks), quantize)

    def build() -> MimiCodec:
        codec = MimiCodec.from_file(file, dtype=torch_dtype, num_codebooks=num_codebooks)
        return codec.quantize_int8() if quantize == "int8" else codec

    return cached_model(key, build)


def _open_safetensors(file: Path):
    from safetensors import safe_open

    try:
        return safe_open(str(file), framework="pt")
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"cannot read {file} as safetensors: {exc}") from exc


class _TensorSource:
    """Where the moshi-keyed tensors come from: a safetensors file (read lazily) or a dict in memory."""

    def __init__(self, tensors: dict[str, torch.Tensor] | None = None, file: Path | None = None) -> None:
        self.tensors = tensors
        self.file = file
        self.name = str(file) if file is not None else "Mimi state dict"

    @classmethod
    def from_file(cls, file: Path) -> _TensorSource:
        source = cls(file=file)
        source.shapes()  # fail early on a corrupt header
        return source

    def shapes(self) -> dict[str, tuple[int, ...]]:
        if self.tensors is not None:
            return {key: tuple(t.shape) for key, t in self.tensors.items()}
        handle = _open_safetensors(self.file)
        return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118

    def read(self, keys: Iterable[str]) -> dict[str, torch.Tensor]:
        """The tensors as float32."""
        if self.tensors is not None:
            return {key: self.tensors[key].float() for key in keys}
        handle = _open_safetensors(self.file)
        try:
            return {key: handle.get_tensor(key).float() for key in keys}
        except Exception as exc:
            raise CheckpointError(f"cannot read tensors from {self.file}: {exc}") from exc


def _decoder_side(name: str, num_codebooks: int) -> bool:
    """True for the transformers names the decoder path needs (first ``num_codebooks`` codebooks)."""
    if name.startswith("decoder."):
        return True
    if m := re.match(r"^quantizer\.(\w+)\.layers\.(\d+)\.", name):
        index = int(m.group(2)) + (0 if m.group(1) == "semantic_residual_vector_quantizer" else 1)
        return index < num_codebooks
    return name.startswith("quantizer.") and name.endswith("_proj.weight")


# --------------------------------------------------------------------------- codec


class MimiCodec:
    """Mimi decode (full and streaming) and encode over transformers' ``MimiModel`` weights.

    Build with :func:`load_mimi`. Attributes: ``sample_rate`` (24000), ``frame_size`` (1920
    samples per frame), ``num_codebooks`` (8), ``codebook_size`` (2048), ``dtype``, ``config``.
    """

    def __init__(self, model: torch.nn.Module, config, *, num_codebooks: int, dtype: torch.dtype | None = None,
                 source: _TensorSource | None = None, full_config=None) -> None:
        self.dtype = dtype or next(model.parameters()).dtype
        self.config = config
        self.full_config = full_config or config
        self._source = source
        self.file = source.file if source is not None else None
        self.num_codebooks = num_codebooks
        self.codebook_size = config.codebook_size
        self.sample_rate = int(config.sampling_rate)
        self.frame_size = int(config.frame_size)
        self.model = model.eval()
        self._build_codebooks()  # from the buffers as loaded (fp32), before any cast
        self.model = model.to(self.dtype)
        sem = model.quantizer.semantic_residual_vector_quantizer
        aco = model.quantizer.acoustic_residual_vector_quantizer
        self._proj_semantic = sem.output_proj.weight[..., 0] if sem.output_proj is not None else None
        self._proj_acoustic = aco.output_proj.weight[..., 0] if aco.output_proj is not None else None
        decoder = model.decoder
        self._steps_per_frame = int(config.latent_stride) if decoder.upsample is not None else 1
        hop = 1
        for ratio in config.upsampling_ratios:
            hop *= ratio
        if hop * self._steps_per_frame != self.frame_size:
            raise CheckpointError(f"Mimi config is inconsistent: {hop} x {self._steps_per_frame} != frame size {self.frame_size}")
        self.upsample = StreamingConvTranspose1d(decoder.upsample.conv) if decoder.upsample is not None else None
        self.transformer = StreamingTransformer(decoder.decoder_transformer, int(config.sliding_window))
        self.seanet = SeanetDecoderPlan(decoder.decoder_seanet)
        self._encoder = None
        self._encoder_lock = threading.Lock()
        #: None (weights in ``dtype``) or "int8" (see :meth:`quantize_int8`)
        self.quantized: str | None = None

    @classmethod
    def from_file(cls, file: Path, *, dtype: torch.dtype = torch.float32, num_codebooks: int = NUM_CODEBOOKS) -> MimiCodec:
        """Strictly load a moshi-keyed Mimi file; the config is ``mimi_config.json`` beside it or the real Mimi."""
        file = Path(file)
        return cls._build(_TensorSource.from_file(file), mimi_config(file.parent), dtype, num_codebooks)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], config=None, *, dtype: torch.dtype = torch.float32,
                        num_codebooks: int = NUM_CODEBOOKS) -> MimiCodec:
        """Strictly load moshi-keyed tensors held in memory (``config`` defaults to the real Mimi).

        >>> cfg = tiny_mimi_config()
        >>> MimiCodec.from_state_dict(random_mimi_state_dict(cfg), cfg).frame_size
        1920
        """
        return cls._build(_TensorSource(dict(state)), config or mimi_config(None), dtype, num_codebooks)

    @classmethod
    def _build(cls, source: _TensorSource, config, dtype: torch.dtype, num_codebooks: int) -> MimiCodec:
        from transformers import MimiModel

        if not 1 <= num_codebooks <= config.num_quantizers:
            raise InvalidInputError(f"num_codebooks must be in 1..{config.num_quantizers}, got {num_codebooks}")
        mapping = check_moshi_keys(source.shapes(), config, source=source.name)
        model_config = copy.deepcopy(config)
        model_config.num_quantizers = num_codebooks
        model_config.encoder_config = None  # the encoder is read on the first encode()
        model = MimiModel(model_config)
        keys = [k for k, name in mapping.items()
                if any(_decoder_side(n, num_codebooks) for n in (name if isinstance(name, tuple) else (name,)))]
        result = model.load_state_dict(moshi_to_hf_state_dict(source.read(keys), config), strict=False)
        if result.missing_keys or result.unexpected_keys:  # excluded by check_moshi_keys; a bug if reached
            raise CheckpointError(f"Mimi load mismatch: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
        if source.tensors is not None:  # keep only what a later encode() reads, not a second copy of everything
            source.tensors = {k: source.tensors[k] for k, name in mapping.items()
                              if (name[0] if isinstance(name, tuple) else name).startswith("encoder.")}
        log.info("loaded Mimi from %s (%d codebooks, %s)", source.name, num_codebooks, dtype)
        return cls(model, model_config, num_codebooks=num_codebooks, dtype=dtype, source=source, full_config=config)

    # -- quantizer ---------------------------------------------------------------------------

    def _build_codebooks(self) -> None:
        """Codebook tables ``[n_q, codebook_size, dim]`` (embedding_sum / clamp(cluster_usage, 1e-5))."""
        quantizer = self.model.quantizer
        books = []
        for rvq in (quantizer.semantic_residual_vector_quantizer, quantizer.acoustic_residual_vector_quantizer):
            for layer in rvq.layers:
                book = layer.codebook
                usage = book.cluster_usage.float().clamp(min=book.epsilon)
                books.append(book.embed_sum.float() / usage[:, None])
        self._codebooks = torch.stack(books[: self.num_codebooks]).to(self.dtype)
        self._n_semantic = min(quantizer.num_semantic_quantizers, self.num_codebooks)

    def latents(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[num_codebooks, n]`` -> quantized latents ``[1, hidden, n]`` (no validation)."""
        entries = self._codebooks[torch.arange(self.num_codebooks)[:, None], codes]  # [n_q, n, dim]
        out = entries[: self._n_semantic].sum(0)
        if self._proj_semantic is not None:
            out = out @ self._proj_semantic.T
        if self.num_codebooks > self._n_semantic:
            acoustic = entries[self._n_semantic:].sum(0)
            if self._proj_acoustic is not None:
                acoustic = acoustic @ self._proj_acoustic.T
            out = out + acoustic
        return out.T[None]

    # -- validation --------------------------------------------------------------------------

    def check_codes(self, codes: Any, *, frames: bool = True) -> torch.Tensor:
        """Validate codes: integer ``[num_codebooks, T]`` (``frames``) or ``[num_codebooks]``; returns int64.

        Raises :class:`InvalidInputError` for a wrong type, shape or dtype, for the end-of-audio code
        2048 (filter EOAudio frames before decoding) and for values outside ``0..codebook_size-1``.
        """
        if not isinstance(codes, torch.Tensor):
            try:
                codes = torch.as_tensor(codes)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise InvalidInputError(f"Mimi codes must be an integer tensor, got {type(codes).__name__}") from exc
        want = f"[{self.num_codebooks}, frames]" if frames else f"[{self.num_codebooks}]"
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise InvalidInputError(f"Mimi codes must be integers, got dtype {codes.dtype}")
        if codes.dim() != (2 if frames else 1) or codes.shape[0] != self.num_codebooks:
            raise InvalidInputError(f"Mimi codes must have shape {want}, got {list(codes.shape)}")
        codes = codes.to(torch.int64)
        if codes.numel():
            if bool((codes == EOAUDIO_CODE).any()):
                raise InvalidInputError(
                    f"Mimi codes contain the end-of-audio code {EOAUDIO_CODE}; drop frames containing it before decoding"
                )
            low, high = int(codes.min()), int(codes.max())
            if low < 0 or high >= self.codebook_size:
                raise InvalidInputError(
                    f"Mimi codes must be in 0..{self.codebook_size - 1}, got values in {low}..{high}"
                )
        return codes

    # -- decoding ----------------------------------------------------------------------------

    def quantize_int8(self) -> MimiCodec:
        """int8 weights where decoding one frame is bound by reading weights (float32 codecs only), in place.

        The decoder transformer's linear layers become fbgemm dynamic-int8 layers and the SEANet
        convolutions with >= 1 M weights (the first conv and the first two upsampling conv-transposes,
        ~14 M of its ~17 M weights) run their matmul path on per-channel int8 weights; activations stay
        float32. The waveform changes slightly (tests/audio measure its SNR against float32).
        Returns the codec.
        """
        import warnings

        from torch.ao.quantization import quantize_dynamic

        if self.dtype != torch.float32:
            raise InvalidInputError(f"int8 Mimi needs a float32 codec, this one is {self.dtype}")
        if self.quantized is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_dynamic(self.model.decoder.decoder_transformer, {torch.nn.Linear}, dtype=torch.qint8,
                                 inplace=True)
            self.seanet.quantize_int8()
            self.quantized = "int8"
        return self

    def stream(self) -> MimiStreamDecoder:
        """A fresh streaming decoder (its own conv and KV state; the weights are shared)."""
        return MimiStreamDecoder(self)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode codes ``[num_codebooks, T]`` to a float32 waveform ``[T * frame_size]`` (empty for T = 0).

        Equal to transformers' ``MimiModel.decode`` (and the official Mimi) up to float rounding;
        long inputs are processed in chunks of :data:`FULL_DECODE_CHUNK` frames with carried state.
        """
        codes = self.check_codes(codes)
        stream = self.stream()
        pieces = [stream._decode(codes[:, i: i + FULL_DECODE_CHUNK])
                  for i in range(0, codes.shape[1], FULL_DECODE_CHUNK)]
        return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.float32)

    def reference_decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode with transformers' own ``MimiModel.decode`` (no state; for checks and baselines)."""
        codes = self.check_codes(codes)
        if codes.shape[1] == 0:
            return torch.zeros(0, dtype=torch.float32)
        with torch.no_grad():  # not inference_mode: callers may modify the returned tensors
            out = self.model.decode(codes[None], return_dict=True).audio_values
        return out.reshape(-1).float()

    # -- encoding ----------------------------------------------------------------------------

    def _load_encoder(self) -> torch.nn.Module:
        """transformers ``MimiEncoderModel`` with the file's encoder weights (read on first use)."""
        from transformers.models.mimi.modeling_mimi import MimiEncoderModel

        with self._encoder_lock:
            if self._encoder is None:
                if self._source is None:
                    raise CheckpointError("this MimiCodec was built from a model without its checkpoint; it cannot encode")
                encoder = MimiEncoderModel(copy.deepcopy(self.full_config).encoder_config)
                mapping, _ = moshi_to_hf_names(self._source.shapes())
                keys = [k for k, n in mapping.items()
                        if (n[0] if isinstance(n, tuple) else n).startswith("encoder.")]
                tensors = moshi_to_hf_state_dict(self._source.read(keys), self.full_config)
                tensors = {name.removeprefix("encoder."): t for name, t in tensors.items()}
                result = encoder.load_state_dict(tensors, strict=False)
                if result.missing_keys or result.unexpected_keys:
                    raise CheckpointError(f"Mimi encoder load mismatch: missing {result.missing_keys}, "
                                          f"unexpected {result.unexpected_keys}")
                self._encoder = encoder.to(self.dtype).eval()
        return self._encoder

    def encode(self, wave: Any) -> torch.Tensor:
        """Encode a 24 kHz mono waveform ``[N]`` to codes ``[num_codebooks, ceil(N / frame_size)]``.

        The encoder side is read from the file on the first call.
        """
        if not isinstance(wave, torch.Tensor):
            try:
                wave = torch.as_tensor(wave)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise InvalidInputError(f"waveform must be a float array, got {type(wave).__name__}") from exc
        if wave.dim() != 1 or not wave.dtype.is_floating_point:
            raise InvalidInputError(f"waveform must be a 1-D float array [samples], got {wave.dtype} {list(wave.shape)}")
        if wave.numel() == 0:
            raise InvalidInputError("waveform is empty")
        if not bool(torch.isfinite(wave).all()):
            raise InvalidInputError("waveform contains NaN or infinite samples")
        encoder = self._load_encoder()
        with torch.no_grad():  # not inference_mode: callers may modify the returned tensors
            latents = encoder(wave.to(self.dtype)[None, None], return_dict=True).latents
            codes = self.model.quantizer.encode(latents, self.num_codebooks)  # [K, B, T]
        return codes[:, 0].to(torch.int64)


class MimiStreamDecoder:
    """Frame-by-frame Mimi decoding with carried state; equals :meth:`MimiCodec.decode` of all frames.

    State: the overlap tail of the upsampling conv-transpose, the decoder transformer's KV cache
    (its last ``sliding_window - 1`` steps) and position, and the left context or overlap tail of
    every SEANet convolution. One stream serves one audio stream from one thread; make one per
    conversation (they share the codec's weights). Decoding several frames per call
    (:meth:`decode_frames`) reads the weights once for all of them, so it costs less per frame.

    >>> stream = codec.stream()                         # doctest: +SKIP
    >>> first = stream.decode_frame(codes[:, 0])        # doctest: +SKIP
    >>> rest = stream.decode_frames(codes[:, 1:])       # doctest: +SKIP
    >>> stream.reset()                                  # doctest: +SKIP
    """

    def __init__(self, codec: MimiCodec) -> None:
        self.codec = codec
        self.reset()

    def reset(self) -> None:
        """Forget all history (the next frame is decoded as the first of a new stream)."""
        dtype = self.codec.dtype
        self._upsample_state = self.codec.upsample.initial_state(dtype) if self.codec.upsample is not None else None
        self._transformer_state = self.codec.transformer.initial_state(dtype)
        self._seanet_states = self.codec.seanet.initial_states(dtype)
        self.frames_decoded = 0

    def decode_frame(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode one frame of codes ``[num_codebooks]`` to ``frame_size`` float32 samples."""
        codes = self.codec.check_codes(codes, frames=False)
        return self._decode(codes[:, None])

    def decode_frames(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode the next ``n`` frames ``[num_codebooks, n]`` to ``n * frame_size`` float32 samples."""
        return self._decode(self.codec.check_codes(codes))

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        n = codes.shape[1]
        if n == 0:
            return torch.zeros(0, dtype=torch.float32)
        codec = self.codec
        with torch.no_grad():  # not inference_mode: callers may modify the returned tensors
            x = codec.latents(codes)
            if codec.upsample is not None:
                x, self._upsample_state = codec.upsample(x, self._upsample_state)
            x, self._transformer_state = codec.transformer(x.transpose(1, 2), self._transformer_state)
            x = codec.seanet(x.transpose(1, 2), self._seanet_states)
        self.frames_decoded += n
        return x.reshape(-1).float()


# --------------------------------------------------------------------------- test checkpoints


def random_mimi_state_dict(config=None, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random Mimi weights in moshi key names (all ``config.num_quantizers`` codebooks, encoder and decoder).

    Weights are scaled so activations stay near unit scale, layer scales are O(1) so the
    transformer matters, and codebooks are unit-scale, so different codes decode to clearly
    different audio. ``config`` is a ``MimiConfig``, a dict of its fields, or None (real Mimi).

    >>> sd = random_mimi_state_dict(tiny_mimi_config())
    >>> len(sd), sd["upsample.convtr.convtr.convtr.weight"].shape
    (198, torch.Size([32, 1, 4]))
    """
    from transformers import MimiConfig

    if config is None:
        config = mimi_config()
    elif isinstance(config, Mapping):
        config = MimiConfig(**config)
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, shape in _expected_shapes(config).items():
        if name.endswith("codebook.embed_sum"):
            usage_shape = shape[:1]
            usage = torch.rand(usage_shape, generator=gen) * 1.5 + 0.5
            out[name.replace("embed_sum", "cluster_usage")] = usage
            tensor = torch.randn(shape, generator=gen) * usage[:, None]
        elif name.endswith(("cluster_usage",)):
            continue
        elif name.endswith("codebook.initialized"):
            tensor = torch.ones(shape)
        elif name.endswith("layer_scale.scale"):
            tensor = torch.rand(shape, generator=gen) * 0.5 + 0.25
        elif "layernorm" in name:
            base = 1.0 if name.endswith("weight") else 0.0
            tensor = base + 0.1 * torch.randn(shape, generator=gen)
        elif name.endswith("bias"):
            tensor = 0.05 * torch.randn(shape, generator=gen)
        else:
            fan_in = 1
            for dim in shape[1:]:
                fan_in *= dim
            if name == "decoder.upsample.conv.weight":  # depthwise, transposed [in, 1, 2 * stride]
                fan_in = max(1, 2 * shape[0] // config.upsample_groups)
            elif _is_decoder_convtr(name, config):  # transposed [in, out, 2 * stride]: 2 taps per output
                fan_in = 2 * shape[0]
            tensor = torch.randn(shape, generator=gen) / fan_in**0.5
        out[name] = tensor
    return hf_to_moshi_state_dict(out, config)


def _is_decoder_convtr(name: str, config) -> bool:
    m = re.match(r"^decoder\.decoder_seanet\.layers\.(\d+)\.conv\.weight$", name)
    if not m:
        return False
    index, step = int(m.group(1)), 2 + config.num_residual_layers
    return index >= 2 and (index - 2) % step == 0 and (index - 2) // step < len(config.upsampling_ratios)


def tiny_mimi_config(**overrides):
    """A small ``MimiConfig`` with the real frame layout (24 kHz, 1920 samples/frame, 32 codebooks).

    >>> c = tiny_mimi_config(); (c.hidden_size, c.frame_size, c.num_quantizers)
    (32, 1920, 32)
    """
    from transformers import MimiConfig

    settings = dict(REAL_MIMI_CONFIG)
    settings.update(hidden_size=32, num_filters=4, codebook_dim=4, vector_quantization_hidden_dimension=4,
                    upsample_groups=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=4,
                    num_key_value_heads=4, head_dim=8)
    settings.update(overrides)
    return MimiConfig(**settings)


def write_mimi_checkpoint(directory: Path, config=None, *, seed: int = 0, write_config: bool = True) -> Path:
    """Write a random Mimi codec file (moshi keys, official file name) plus ``mimi_config.json``; return the file.

    >>> import tempfile
    >>> write_mimi_checkpoint(Path(tempfile.mkdtemp()), tiny_mimi_config()).name
    'tokenizer-e351c8d8-checkpoint125.safetensors'
    """
    from safetensors.torch import save_file
    from transformers import MimiConfig

    if config is None:
        config = mimi_config()
    elif isinstance(config, Mapping):
        config = MimiConfig(**config)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = random_mimi_state_dict(config, seed=seed)
    file = directory / MIMI_FILENAME
    save_file({k: v.contiguous() for k, v in state.items()}, str(file), metadata={"format": "pt"})
    if write_config:
        (directory / MIMI_CONFIG_FILENAME).write_text(json.dumps(config.to_dict(), indent=1))
    return file
