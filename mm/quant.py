"""Group-wise 4-bit weight-only quantization of linear layers (``quantize="int4"``) on mm's native kernels.

Each ``nn.Linear`` weight ``[out, in]`` is cut into groups of ``group_size`` consecutive input columns; a group
stores 4-bit codes ``q`` in 0..15 with an fp16 scale and minimum (min/max round-to-nearest, asymmetric like
llama.cpp's q4_1): ``w ~ q * scale + min`` (:func:`mm.kernels.weights.pack_q4`). At ``group_size=32`` a weight
costs 4 bits plus 2 x 16 bits per 32 (5 bits), against 16 for bf16. Every call runs on the native int4 kernel
(:mod:`mm.kernels`, int8 activations per block of 32, integer products; four rows share each unpacking of the
codes), which beats dequantizing for float matrix products at every length measured (1-256 rows of a 2048 x 8192
layer: 34 ms at 70 rows against 221 ms); only where the native kernels cannot be built is the weight dequantized
for ``F.linear`` on each call (correct, slow).

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
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from mm import kernels
from mm.errors import InvalidInputError
from mm.kernels.weights import NativeWeight, dequantize_q4, pack_q4

if TYPE_CHECKING:
    from mm.kernels.hugepages import HugePagePool

log = logging.getLogger(__name__)

#: input columns per (scale, min) pair; llama.cpp's q4_0/q4_1 use 32 as well
DEFAULT_GROUP_SIZE = 32
GROUP_SIZES = (32, 64, 128, 256)

def check_group_size(group_size: int, in_features: int) -> None:
    """Refuse a group size mm does not implement or that does not divide ``in_features``.

    >>> check_group_size(48, 96)
    Traceback (most recent call last):
    ...
    mm.errors.InvalidInputError: int4 group_size=48 must be one of (32, 64, 128, 256) and divide the input size 96
    """
    if group_size not in GROUP_SIZES or in_features % group_size:
        raise InvalidInputError(f"int4 group_size={group_size} must be one of {GROUP_SIZES} and divide the "
                                f"input size {in_features}")


class Int4Linear(torch.nn.Module):
    """A bias-optional linear layer over group-wise 4-bit weights (build with :meth:`from_linear`)."""

    def __init__(self, codes: torch.Tensor, scale_min: torch.Tensor, bias: torch.Tensor | None,
                 in_features: int, out_features: int, group_size: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("codes", codes)          # uint8 [out, in / 2], two codes per byte
        self.register_buffer("scale_min", scale_min)  # fp16 [out, 2, in / group]: scales, minimums
        self.bias = bias
        self.in_features, self.out_features, self.group_size, self.dtype = in_features, out_features, group_size, dtype
        self._native: NativeWeight | None = None

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, group_size: int = DEFAULT_GROUP_SIZE) -> Int4Linear:
        """Quantize ``linear``'s weight; activations will run in the weight's current dtype."""
        check_group_size(group_size, linear.in_features)
        codes, scale_min = pack_q4(linear.weight, group_size)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(codes, scale_min, bias, linear.in_features, linear.out_features, group_size, linear.weight.dtype)

    @staticmethod
    def fuse_native(modules: Sequence[Int4Linear], pool: HugePagePool | None = None) -> NativeWeight:
        """One native weight over ``modules`` (same input) stacked by rows; the modules then view into it. With
        ``pool`` (:class:`mm.kernels.hugepages.HugePagePool`) the codes move there, also for a single module
        (unless an earlier pool already holds them)."""
        from mm.fast_decode import consecutive_rows
        from mm.kernels.hugepages import in_any_pool

        rows = sum(m.out_features for m in modules)
        parts = ([m.codes for m in modules], [m.scale_min for m in modules])
        codes, scale_min = consecutive_rows(parts[0]), consecutive_rows(parts[1])
        # one module, or stacked by an earlier call (and in a pool when one is asked for): view the same memory
        if codes is None or scale_min is None or (pool is not None and not in_any_pool(codes)):
            outs = [None, None] if pool is None else [pool.empty((rows, *p[0].shape[1:]), p[0].dtype) for p in parts]
            codes, scale_min = (torch.cat(p, out=out) for p, out in zip(parts, outs, strict=True))
        biases = [m.bias for m in modules]
        bias = None if all(b is None for b in biases) else torch.cat(
            [b.float() if b is not None else torch.zeros(m.out_features) for b, m in zip(biases, modules,
                                                                                      strict=True)])
        start = 0
        for m in modules:  # same memory as before: each module keeps a view of its rows
            m.codes, m.scale_min = codes[start:start + m.out_features], scale_min[start:start + m.out_features]
            m._native = None
            start += m.out_features
        return NativeWeight.q4(codes, scale_min, group_size=modules[0].group_size, bias=bias)

    def native(self) -> NativeWeight:
        """This layer on the native int4 kernel (built once)."""
        if self._native is None:
            self._native = NativeWeight.q4(self.codes, self.scale_min, group_size=self.group_size, bias=self.bias)
        return self._native

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if kernels.available():
            return self.native()(x).to(x.dtype)
        weight = dequantize_q4(self.codes, self.scale_min, group_size=self.group_size, dtype=x.dtype)
        return torch.nn.functional.linear(x, weight, None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}, "
                f"dtype={self.dtype}")

    def nbytes(self) -> int:
        """Bytes a forward pass reads (packed codes + scales and minimums)."""
        return self.codes.nbytes + self.scale_min.nbytes


class Int4DecodeLinear(torch.nn.Module):
    """A linear layer with two copies of its weight: group-wise 4-bit for decode steps (inputs of at most
    ``decode_rows`` rows, on the native int4 kernel) and another module (e.g. fbgemm's dynamic int8) for longer
    inputs, where int8 matrix products run about twice as fast as the int4 kernel (a 70-row prefill of a
    2048 x 8192 layer: 19.5 ms int8 against 34 ms int4, 1 thread). :mod:`mm.kernels` reads :attr:`int4`."""

    def __init__(self, int4: Int4Linear, prefill: torch.nn.Module, decode_rows: int = 8) -> None:
        super().__init__()
        self.int4, self.prefill, self.decode_rows = int4, prefill, decode_rows
        self.in_features, self.out_features = int4.in_features, int4.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() // self.in_features <= self.decode_rows:
            return self.int4(x)
        return self.prefill(x)


def quantize_int4(model: torch.nn.Module, group_size: int = DEFAULT_GROUP_SIZE) -> torch.nn.Module:
    """Replace (in place) every ``nn.Linear`` whose input size ``group_size`` divides by an :class:`Int4Linear`.

    Layers it cannot group stay as they are and are logged; a model with no such layer is an error.
    Returns ``model``.
    """
    if group_size not in GROUP_SIZES:
        raise InvalidInputError(f"int4 group_size={group_size} must be one of {GROUP_SIZES}")
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
