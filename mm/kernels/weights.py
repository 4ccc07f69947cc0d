"""Weights in the native kernels' formats (float32, bfloat16, int8 per row, int4 per group) and their products.

A :class:`NativeWeight` holds the tensors a kernel reads and the C struct that points into them; calling it runs
``x @ W.T (+ bias)`` on the native kernels (float32 in and out) for a few rows of ``x`` at a time, the shape of a
decode step. Formats (see ``lfm2_step.cpp``): ``F32``/``BF16`` weights as they are (no copy), ``Q8`` int8 values
with one float scale per row, ``Q4`` 4-bit codes ``q`` in 0..15 with an fp16 ``(scale, min)`` pair per group of
columns (``w = q * scale + min``), two codes per byte.

>>> import torch
>>> torch.manual_seed(0) is not None
True
>>> w = torch.randn(48, 64)
>>> x = torch.randn(2, 64)
>>> q4 = pack_q4(w, group_size=32)
>>> bool((dequantize_q4(*q4, group_size=32) - w).abs().max() < 0.5)
True
>>> if available():
...     err = (NativeWeight.q4(*q4, group_size=32)(x) - x @ dequantize_q4(*q4, group_size=32).T).abs().max()
...     assert err < 0.05 * (x @ w.T).abs().max(), err
"""

from __future__ import annotations

import ctypes

import torch

from mm.kernels.build import available, require

F32, BF16, Q8, Q4 = 0, 1, 2, 3
QBLOCK = 32  # the kernels quantize activations per 32 columns
MAX_COLS = 1 << 17  # widest int4 row the kernel takes (lfm2_step.cpp MAX_COLS)

__all__ = ["NativeWeight", "available", "dequantize_q4", "pack_q4"]


class WeightStruct(ctypes.Structure):
    _fields_ = [("format", ctypes.c_int32), ("rows", ctypes.c_int32), ("cols", ctypes.c_int32),
                ("group", ctypes.c_int32), ("data", ctypes.c_void_p), ("scale", ctypes.c_void_p),
                ("bias", ctypes.c_void_p)]


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class NativeWeight:
    """One weight matrix in a native format; ``self(x)`` computes ``x @ W.T + bias`` (float32 out)."""

    def __init__(self, fmt: int, data: torch.Tensor, rows: int, cols: int, *, scale: torch.Tensor | None = None,
                 bias: torch.Tensor | None = None, group: int = 0) -> None:
        if fmt in (Q8, Q4) and cols % QBLOCK:
            raise ValueError(f"int8/int4 native weights need a multiple of {QBLOCK} columns, got {cols}")
        if fmt == Q4 and cols > MAX_COLS:
            raise ValueError(f"int4 native weights take at most {MAX_COLS} columns, got {cols}")
        for t in (data, scale):
            if t is not None and not t.is_contiguous():
                raise ValueError("native weights must be contiguous")
        bias = None if bias is None else bias.detach().float().contiguous()
        self.format, self.rows, self.cols, self.group = fmt, rows, cols, group
        self.tensors = (data, scale, bias)  # kept alive: the struct points into them
        self.struct = WeightStruct(fmt, rows, cols, group, _ptr(data), _ptr(scale), _ptr(bias))

    # -- constructors ------------------------------------------------------------------------------
    @classmethod
    def dense(cls, weight: torch.Tensor, bias: torch.Tensor | None = None) -> NativeWeight:
        """A float32 or bfloat16 weight ``[out, in]`` as it is (other dtypes are converted to float32)."""
        weight = weight.detach()
        if weight.dtype not in (torch.float32, torch.bfloat16):
            weight = weight.float()
        weight = weight.contiguous()
        fmt = BF16 if weight.dtype == torch.bfloat16 else F32
        return cls(fmt, weight, weight.shape[0], weight.shape[1], bias=bias)

    @classmethod
    def q8(cls, values: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None) -> NativeWeight:
        """int8 ``values [out, in]`` with per-row ``scales [out]`` (``w = values * scales[:, None]``)."""
        values = values.contiguous()
        return cls(Q8, values, values.shape[0], values.shape[1], scale=scales.float().contiguous(), bias=bias)

    @classmethod
    def q4(cls, codes: torch.Tensor, scale_min: torch.Tensor, *, group_size: int,
           bias: torch.Tensor | None = None) -> NativeWeight:
        """Packed 4-bit ``codes [out, in / 2]`` and fp16 ``scale_min [out, 2, in / group]`` (see :func:`pack_q4`)."""
        rows, cols = codes.shape[0], codes.shape[1] * 2
        return cls(Q4, codes.contiguous(), rows, cols, scale=scale_min.contiguous(), bias=bias, group=group_size)

    # -- product -----------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, threads: int | None = None) -> torch.Tensor:
        """``x [..., in]`` -> ``[..., out]`` float32 on the native kernels (``threads``: torch's current count)."""
        lib = require()
        if x.shape[-1] != self.cols:
            raise ValueError(f"input has {x.shape[-1]} features, the weight takes {self.cols}")
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.cols).float().contiguous()
        rows = flat.shape[0]
        out = torch.empty(rows, self.rows, dtype=torch.float32)
        scratch = torch.empty(rows * (4 * self.cols + 8 * (self.cols // QBLOCK)) + 64, dtype=torch.uint8)
        lib.mm_gemv(ctypes.byref(self.struct), rows, ctypes.c_void_p(flat.data_ptr()),
                    ctypes.c_void_p(out.data_ptr()), ctypes.c_void_p(scratch.data_ptr()),
                    threads or torch.get_num_threads())
        return out.reshape(*lead, self.rows)

    def nbytes(self) -> int:
        """Bytes one product streams (values + scales)."""
        return sum(t.nbytes for t in self.tensors[:2] if t is not None)


def pack_q4(weight: torch.Tensor, group_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-wise asymmetric 4-bit codes of ``weight [out, in]``: ``(codes uint8 [out, in/2], scale_min)``.

    ``scale_min`` is fp16 ``[out, 2, in / group_size]``: each row's scales, then its minimums.

    Each group of ``group_size`` columns maps its [min, max] onto 16 levels (``w ~ q * scale + min``); the fp16
    scale and min are rounded first and the codes chosen against the rounded values. Within every 32 columns,
    byte ``j`` holds column ``j`` (low nibble) and column ``j + 16`` (high nibble).
    """
    out_f, in_f = weight.shape
    if group_size % QBLOCK or in_f % group_size:
        raise ValueError(f"int4 group size {group_size} must be a multiple of {QBLOCK} dividing {in_f}")
    groups = weight.detach().float().reshape(out_f, in_f // group_size, group_size)
    low, high = groups.amin(-1), groups.amax(-1)
    scale = ((high - low) / 15).clamp(min=1e-8).half()
    low = low.half()
    codes = torch.round((groups - low.float()[..., None]) / scale.float()[..., None]).clamp(0, 15).to(torch.uint8)
    blocks = codes.reshape(out_f, in_f // QBLOCK, 2, QBLOCK // 2)
    packed = (blocks[:, :, 0] | (blocks[:, :, 1] << 4)).reshape(out_f, in_f // 2).contiguous()
    return packed, torch.stack([scale, low], dim=1).contiguous()


def dequantize_q4(codes: torch.Tensor, scale_min: torch.Tensor, *, group_size: int,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ``[out, in]`` weight that :func:`pack_q4`'s codes stand for, in ``dtype``."""
    out_f, half = codes.shape
    blocks = codes.reshape(out_f, half * 2 // QBLOCK, 1, QBLOCK // 2)
    q = torch.cat([blocks & 0x0F, blocks >> 4], dim=2).reshape(out_f, -1, group_size).to(dtype)
    sm = scale_min.to(dtype)
    return (q * sm[:, 0, :, None] + sm[:, 1, :, None]).reshape(out_f, half * 2)

