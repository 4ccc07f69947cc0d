"""Dynamic-int8 linears (``quantize="int8"``): their int8 parts, per-row packing, and fusing linears that share an input.

fbgemm's dynamic-int8 product quantizes the activation once per call (one scale for the whole input), multiplies
in int32 and rescales each output row by its own weight scale.  Two linears fed the same input therefore give the
same outputs when their int8 rows are stacked into one matrix (the integer sums are exact), and one call over the
stacked rows streams the weights once, with one activation quantization instead of two.
:func:`fuse_gated_mlps` does that for LFM2's gated MLP (``w1``/``w3``), at load time, for every engine.

>>> import torch
>>> from torch.ao.quantization import quantize_dynamic
>>> torch.manual_seed(0) is not None
True
>>> pair = quantize_dynamic(torch.nn.ModuleList([torch.nn.Linear(16, 8, bias=False) for _ in range(2)]),
...                         {torch.nn.Linear}, dtype=torch.qint8)
>>> fused = fused_dynamic_linear(list(pair))
>>> x = torch.randn(3, 16)
>>> bool(torch.equal(fused(x), torch.cat([pair[0](x), pair[1](x)], dim=-1)))
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Linear = Callable[[torch.Tensor], torch.Tensor]


def is_dynamic_int8(module: nn.Module) -> bool:
    """True for a dynamic-int8 linear (``torch.ao.nn.quantized.dynamic.Linear`` or a look-alike)."""
    return hasattr(module, "_packed_params") and getattr(module, "weight", None) is not None and callable(module.weight)


def int8_parts(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(int8 values ``[out, in]``, per-row scales ``[out]`` float64, bias) of a dynamic-int8 linear."""
    qweight = module.weight()
    if qweight.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        scales = torch.full((qweight.shape[0],), float(qweight.q_scale()), dtype=torch.float64)
    else:
        scales = qweight.q_per_channel_scales().double()
    return qweight.int_repr(), scales, module.bias()


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: ``(values, scales)`` with ``weight ~= values * scales[:, None]``.

    >>> values, scales = quantize_rows(torch.tensor([[1.0, -2.0], [0.5, 0.25]]))
    >>> values.tolist(), [round(float(s), 5) for s in scales]
    ([[64, -127], [127, 64]], [0.01575, 0.00394])
    """
    weight = weight.detach().float()
    scales = (weight.abs().amax(dim=1).clamp(min=1e-8) / 127.0).double()
    values = torch.round(weight / scales[:, None].float()).clamp(-127, 127).to(torch.int8)
    return values, scales


def _per_row_qweight(values: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return torch._make_per_channel_quantized_tensor(values, scales.double(),
                                                    torch.zeros_like(scales, dtype=torch.long), 0)


def pack_int8(values: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None) -> Linear:
    """fbgemm dynamic-int8 linear over int8 ``values`` with per-row ``scales`` (activations fp32), as a function."""
    packed = torch.ops.quantized.linear_prepack(_per_row_qweight(values, scales), bias)
    return lambda x: torch.ops.quantized.linear_dynamic(x, packed, True)


def stack_int8(modules: Sequence[nn.Module]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(int8 values, per-row scales, bias) of dynamic-int8 linears sharing an input, rows stacked in order."""
    parts = [int8_parts(m) for m in modules]
    if len({p[0].shape[1] for p in parts}) != 1:
        raise ValueError("fused linears must share their input size")
    biases = [p[2] for p in parts]
    bias = None if all(b is None for b in biases) else torch.cat(
        [b if b is not None else torch.zeros(p[0].shape[0]) for b, p in zip(biases, parts, strict=True)])
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), bias


def fused_dynamic_linear(modules: Sequence[nn.Module]) -> nn.Module:
    """One dynamic-int8 ``Linear`` whose outputs are those of ``modules`` (same input) concatenated."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    values, scales, bias = stack_int8(modules)
    fused = DynamicLinear(values.shape[1], values.shape[0], bias_=bias is not None, dtype=torch.qint8)
    fused.set_weight_bias(_per_row_qweight(values, scales), bias)
    return fused


class FusedGatedMLP(nn.Module):
    """``w2(silu(w1(x)) * w3(x))`` with ``w1``/``w3`` as one int8 matrix ``w13`` (outputs equal to the unfused MLP)."""

    def __init__(self, w13: nn.Module, w2: nn.Module, ff_dim: int) -> None:
        super().__init__()
        self.w13, self.w2, self.ff_dim = w13, w2, ff_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).split(self.ff_dim, dim=-1)
        return self.w2(F.silu(gate) * up)


def fuse_gated_mlps(model: nn.Module) -> int:
    """Replace every LFM2 gated MLP whose ``w1``/``w3`` are dynamic int8 with a :class:`FusedGatedMLP`; return the count."""
    from transformers.models.lfm2.modeling_lfm2 import Lfm2MLP

    targets = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if isinstance(child, Lfm2MLP) and is_dynamic_int8(child.w1) and is_dynamic_int8(child.w3)]
    for parent, name, mlp in targets:
        fused = FusedGatedMLP(fused_dynamic_linear([mlp.w1, mlp.w3]), mlp.w2, mlp.w1.out_features)
        setattr(parent, name, fused)
    return len(targets)
