"""Group-wise 4-bit weight-only quantization of linear layers (``quantize="int4"``) on torch's packed CPU kernels.

Each ``nn.Linear`` weight ``[out, in]`` is cut into groups of ``group_size`` consecutive input columns; a group
stores 4-bit codes ``q`` in 0..15 with one scale and one offset (min/max round-to-nearest, asymmetric like
llama.cpp's q4_1), and the layer computes ``x @ ((q - 8) * scale + zero).T`` with
``torch._weight_int4pack_mm_for_cpu`` over weights packed once by ``torch._convert_weight_to_int4pack_for_cpu``.
Activations stay in the model's dtype (bfloat16 or float32).  At ``group_size=32`` a weight costs 4 bits plus
2 x 16 bits per 32 (5 bits in bf16), against 16 for bf16.

>>> import torch
>>> layer = torch.nn.Linear(64, 48, bias=False)
>>> q = Int4Linear.from_linear(layer, group_size=32)
>>> x = torch.randn(2, 64)
>>> err = (q(x) - layer(x)).abs().max() / layer(x).abs().max()
>>> bool(err < 0.1), q
(True, Int4Linear(in_features=64, out_features=48, group_size=32, dtype=torch.float32))
"""

from __future__ import annotations

import logging

import torch

from mm.errors import InvalidInputError

log = logging.getLogger(__name__)

#: input columns per (scale, offset) pair; llama.cpp's q4_0/q4_1 use 32 as well
DEFAULT_GROUP_SIZE = 32
GROUP_SIZES = (32, 64, 128, 256)


def quantize_groups(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(codes [out, in] int32 in 0..15, scale [out, in/g], zero [out, in/g])`` with ``w ~ (q - 8) * scale + zero``.

    >>> w = (torch.arange(32) % 16 * 0.5 - 1).reshape(1, 32)  # 16 levels, 0.5 apart
    >>> q, s, z = quantize_groups(w, 32)
    >>> q[0, :4].tolist(), s.tolist(), bool(torch.equal((q - 8) * s + z, w))
    ([0, 1, 2, 3], [[0.5]], True)
    """
    out_f, in_f = weight.shape
    if group_size not in GROUP_SIZES or in_f % group_size:
        raise InvalidInputError(f"int4 group_size={group_size} must be one of {GROUP_SIZES} and divide the "
                                f"input size {in_f}")
    groups = weight.detach().float().reshape(out_f, in_f // group_size, group_size)
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    scale = ((high - low) / 15).clamp(min=1e-8)
    codes = torch.clamp(torch.round((groups - low) / scale), 0, 15).to(torch.int32).reshape(out_f, in_f)
    zero = low + 8 * scale  # the kernel subtracts 8 from every code
    return codes, scale.squeeze(-1), zero.squeeze(-1)


class Int4Linear(torch.nn.Module):
    """A bias-optional linear layer over group-wise 4-bit weights (build with :meth:`from_linear`)."""

    def __init__(self, packed: torch.Tensor, scales_and_zeros: torch.Tensor, bias: torch.Tensor | None,
                 in_features: int, out_features: int, group_size: int) -> None:
        super().__init__()
        self.register_buffer("packed", packed)
        self.register_buffer("scales_and_zeros", scales_and_zeros)  # [in/g, out, 2] in the activation dtype
        self.bias = bias
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, group_size: int = DEFAULT_GROUP_SIZE) -> Int4Linear:
        """Quantize ``linear``'s weight; activations will run in the weight's current dtype."""
        dtype = linear.weight.dtype
        codes, scale, zero = quantize_groups(linear.weight, group_size)
        packed = torch._convert_weight_to_int4pack_for_cpu(codes, 1)
        scales_and_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous().to(dtype)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(packed, scales_and_zeros, bias, linear.in_features, linear.out_features, group_size)

    @property
    def dtype(self) -> torch.dtype:
        return self.scales_and_zeros.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features)
        if flat.dtype != self.dtype:
            flat = flat.to(self.dtype)
        out = torch._weight_int4pack_mm_for_cpu(flat, self.packed, self.group_size, self.scales_and_zeros)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}, "
                f"dtype={self.dtype}")

    def nbytes(self) -> int:
        """Bytes a forward pass reads (packed codes + scales and offsets)."""
        return self.packed.nbytes + self.scales_and_zeros.nbytes


def quantize_int4(model: torch.nn.Module, group_size: int = DEFAULT_GROUP_SIZE) -> torch.nn.Module:
    """Replace (in place) every ``nn.Linear`` whose input size ``group_size`` divides by an :class:`Int4Linear`.

    Layers it cannot group stay as they are and are logged; a model with no such layer is an error.
    Returns ``model``.
    """
    targets = [(name, module) for name, module in model.named_modules() if type(module) is torch.nn.Linear]
    done = skipped = 0
    for name, module in targets:
        if module.in_features % group_size:
            skipped += 1
            log.info("int4: keeping %s (%d inputs, not a multiple of %d)", name, module.in_features, group_size)
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, Int4Linear.from_linear(module, group_size))
        done += 1
    if not done:
        raise InvalidInputError(f"quantize='int4' found no linear layer whose input size is a multiple of "
                                f"{group_size} in {type(model).__name__}")
    log.info("int4: quantized %d linear layers (group size %d), kept %d", done, group_size, skipped)
    return model
