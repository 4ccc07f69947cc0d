"""A bf16 prefill's products in float32 where that is measured faster (CPUs that emulate bf16 matrix products).

Without native bf16 matrix instructions (e.g. an AVX2 CPU: ``torch.backends.cpu.get_cpu_capability()`` is
``"AVX2"``) torch emulates bf16 ``F.linear`` and runs the short convolution's bf16 depthwise ``conv1d`` one
channel at a time, so a bf16 prefill is several times slower than the same prefill in float32. Upcasting --
``F.linear(x.float(), w.float()).to(bfloat16)`` -- multiplies the same bf16 values, accumulates in float32
and rounds once to bf16 where the bf16 op rounds; it pays a weight conversion per call, so it wins only from
some number of rows (tokens x batch) on, and where bf16 is native it may never win.

The choice is measured, never assumed: the first time a product shape is needed, both ways are timed on the
model's own weight at :data:`PROBE_ROWS` rows (best of a few calls), a line is fitted to the time saved
(:func:`fit_gain`), and a call upcasts when the fitted saving at its row count is positive. Fits are cached
per process by (kind, shape, dtype), measured once: every thread of the process then computes a given
prefill the same way (a server's worker threads may see another thread count). :class:`UpcastPrefill` applies the choice to one LFM2
backbone for the duration of a call (``FastLfm2.prefill``): the chosen ``nn.Linear`` modules and short
convolutions get an instance ``forward`` that computes in float32, removed again afterwards; nothing global
(torch settings, transformers' classes) changes. Float32, int8 and int4 models have no bf16 ``nn.Linear``
and are left alone.

>>> fit = fit_gain({4: (1.0, 3.0), 32: (8.0, 5.0)})  # bf16 vs upcast seconds at 4 and 32 rows
>>> fit.faster(8), fit.faster(16), fit.crossover
(False, True, 16)
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mm.errors import InvalidInputError

#: row counts (tokens x batch) at which each product is timed both ways
PROBE_ROWS = (4, 32)

#: ``FastLfm2(prefill_upcast=...)``: measure per shape, always upcast, never upcast
UPCAST_CHOICES = ("auto", "always", "never")

#: (kind, shape, bias, dtype) -> measured fit, shared by every backbone and thread of this process
_FITS: dict[tuple, Fit] = {}
_FITS_LOCK = threading.Lock()


@dataclass(frozen=True)
class Fit:
    """Seconds saved by upcasting as a line in the row count (positive = float32 faster), fitted up to ``top`` rows.

    A saving that shrinks with the row count is held at its value at ``top`` beyond it: between two probes a
    small negative slope is as often timing noise as a real trend (e.g. the bf16 depthwise convolution, whose
    per-channel overhead hides its per-row cost at small counts), and extrapolating it would flip the choice
    far outside the measured range.
    """

    intercept: float
    slope: float
    top: int

    def gain(self, rows: int) -> float:
        """Predicted seconds saved by upcasting a product over ``rows`` rows."""
        return self.intercept + self.slope * (min(rows, self.top) if self.slope < 0 else rows)

    def faster(self, rows: int) -> bool:
        """Whether the upcast product is predicted faster at ``rows`` rows."""
        return self.gain(rows) > 0

    @property
    def crossover(self) -> float:
        """The smallest row count from which upcasting is faster at every larger count (``inf``: none)."""
        if self.slope > 0:
            return max(1, math.floor(-self.intercept / self.slope) + 1)
        return 1 if self.faster(self.top) else math.inf


def fit_gain(timings: Mapping[int, tuple[float, float]]) -> Fit:
    """The line through the time saved at the smallest and largest measured row counts.

    ``timings``: ``{rows: (bf16 seconds, upcast seconds)}`` at two or more row counts.

    >>> fit_gain({4: (2.0, 1.0), 32: (9.0, 2.0)}).crossover  # faster at every count
    1
    >>> fit_gain({4: (1.0, 3.0), 32: (2.0, 4.0)}).crossover  # never faster
    inf
    >>> fit_gain({4: (8.6, 0.2), 32: (8.5, 0.3)}).faster(10_000)  # a shrinking saving is not extrapolated
    True
    """
    if len(timings) < 2:
        raise InvalidInputError("fit_gain needs timings at two or more row counts")
    lo, hi = min(timings), max(timings)
    gain_lo, gain_hi = (timings[lo][0] - timings[lo][1]), (timings[hi][0] - timings[hi][1])
    slope = (gain_hi - gain_lo) / (hi - lo)
    return Fit(gain_lo - slope * lo, slope, hi)


def _best(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: first-call allocations
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def time_linear(weight: Any, bias: Any, rows: int, repeats: int = 2) -> tuple[float, float]:
    """(bf16, upcast) seconds of one ``F.linear`` over ``rows`` random rows with this weight, best of ``repeats``."""
    import torch
    import torch.nn.functional as F

    x = torch.randn(1, rows, weight.shape[1], generator=torch.Generator().manual_seed(0)).to(weight.dtype)
    return (_best(lambda: F.linear(x, weight, bias), repeats),
            _best(lambda: upcast_linear(x, weight, bias), repeats))


def time_conv(weight: Any, bias: Any, rows: int, repeats: int = 2) -> tuple[float, float]:
    """(bf16, upcast) seconds of the short convolution's causal depthwise ``conv1d`` over ``rows`` positions."""
    import torch
    import torch.nn.functional as F

    x = torch.randn(1, weight.shape[0], rows, generator=torch.Generator().manual_seed(0)).to(weight.dtype)
    pad = weight.shape[-1] - 1
    return (_best(lambda: F.conv1d(x, weight, bias, padding=pad, groups=weight.shape[0]), repeats),
            _best(lambda: upcast_conv(x, weight, bias), repeats))


def measured_fit(kind: str, weight: Any, bias: Any) -> Fit:
    """The cached fit for a product of this kind (``"linear"``/``"conv"``) and weight shape, timed on first use."""
    import torch

    key = (kind, tuple(weight.shape), bias is not None, weight.dtype)
    with _FITS_LOCK:
        if key not in _FITS:
            timer = time_linear if kind == "linear" else time_conv
            with torch.inference_mode():
                _FITS[key] = fit_gain({rows: timer(weight, bias, rows) for rows in PROBE_ROWS})
        return _FITS[key]


def upcast_linear(x: Any, weight: Any, bias: Any = None) -> Any:
    """``F.linear`` in float32 over the same values, rounded to ``x``'s dtype once at the end."""
    import torch.nn.functional as F

    return F.linear(x.float(), weight.float(), None if bias is None else bias.float()).to(x.dtype)


def upcast_conv(x: Any, weight: Any, bias: Any = None) -> Any:
    """transformers' causal depthwise ``conv1d`` (``[B, H, T]`` in, ``T + L - 1`` positions out) in float32."""
    import torch.nn.functional as F

    out = F.conv1d(x.float(), weight.float(), None if bias is None else bias.float(),
                   padding=weight.shape[-1] - 1, groups=weight.shape[0])
    return out.to(weight.dtype)


def _linear_forward(module: Any, x: Any) -> Any:
    return upcast_linear(x, module.weight, module.bias)


def _short_conv_forward(module: Any, hidden_states: Any, cache: Any = None, attention_mask: Any = None,
                        **kwargs: Any) -> Any:
    """``Lfm2ShortConv.forward`` (transformers 5) for a multi-token call, its ``conv1d`` in float32."""
    from transformers.models.lfm2.modeling_lfm2 import apply_mask_to_padding_states

    seq_len = hidden_states.shape[1]
    if seq_len == 1:  # a cached decode step: transformers' own update path
        return type(module).forward(module, hidden_states, cache=cache, attention_mask=attention_mask, **kwargs)
    hidden_states = apply_mask_to_padding_states(hidden_states, attention_mask)
    b, c, x = module.in_proj(hidden_states).transpose(-1, -2).chunk(3, dim=-2)
    bx = b * x
    if cache is not None:
        bx = cache.update_conv_state(bx, module.layer_idx, conv_kernel_size=module.conv_kernel_size)
    conv = module.conv
    out = upcast_conv(bx, conv.weight, conv.bias)[:, :, :bx.shape[-1]].to(bx.dtype)
    if cache is not None:
        out = out[:, :, -seq_len:]
    return module.out_proj((c * out).transpose(-1, -2).contiguous())


def _replicable(module: Any) -> bool:
    """Whether a short-conv module has the layout :func:`_short_conv_forward` reproduces (else it is left alone)."""
    return all(hasattr(module, name) for name in ("in_proj", "out_proj", "conv", "layer_idx", "conv_kernel_size"))


class UpcastPrefill:
    """Runs one LFM2 backbone's bf16 linears and short convolutions in float32 during a call, where measured faster.

    ``mode``: ``"auto"`` measures (:func:`measured_fit`), ``"always"``/``"never"`` force it. ``measure(kind,
    weight, bias) -> Fit`` replaces the measurement (tests inject timings through it).
    """

    def __init__(self, backbone: Any, mode: str = "auto",
                 measure: Callable[[str, Any, Any], Fit] | None = None) -> None:
        import torch

        if mode not in UPCAST_CHOICES:
            raise InvalidInputError(f"prefill_upcast={mode!r} is not supported; valid: {', '.join(UPCAST_CHOICES)}")
        self.mode = mode
        self._measure = measure or measured_fit
        hooked = lambda m: hasattr(m, "_hf_hook")  # noqa: E731  (accelerate offloading: left alone)
        self.linears = [m for m in backbone.layers.modules()
                        if type(m) is torch.nn.Linear and m.weight.dtype == torch.bfloat16 and not hooked(m)]
        self.convs = [layer.conv for layer in backbone.layers
                      if not layer.is_attention_layer and _replicable(layer.conv)
                      and layer.conv.conv.weight.dtype == torch.bfloat16
                      and not hooked(layer.conv) and not hooked(layer.conv.conv)]

    def choose(self, rows: int) -> list[tuple[Any, Callable[..., Any]]]:
        """(module, float32 forward) for every module that upcasts at ``rows`` rows (measuring shapes on first use)."""
        if self.mode == "never":
            return []
        chosen = []
        for module in self.linears:
            if self.mode == "always" or self._measure("linear", module.weight, module.bias).faster(rows):
                chosen.append((module, functools.partial(_linear_forward, module)))
        for module in self.convs:
            if self.mode == "always" or self._measure("conv", module.conv.weight, module.conv.bias).faster(rows):
                chosen.append((module, functools.partial(_short_conv_forward, module)))
        return chosen

    @contextlib.contextmanager
    def applied(self, rows: int) -> Iterator[int]:
        """Inside the block the chosen modules compute in float32; yields how many were switched.

        A module that already has an instance ``forward`` (another prefill of the same model in another
        thread, accelerate's hooks) is left as it is; only the forwards set here are removed afterwards.
        """
        mine = []
        try:
            for module, forward in self.choose(rows):
                if "forward" not in vars(module):
                    module.forward = forward
                    mine.append((module, forward))
            yield len(mine)
        finally:
            for module, forward in mine:
                if vars(module).get("forward") is forward:
                    del module.forward

    def describe(self) -> dict[str, Any]:
        """Measured crossover row counts per product shape (``{"linear 1024x6656": 16, ...}``)."""
        out: dict[str, Any] = {}
        for module in self.linears:
            shape = "x".join(map(str, module.weight.shape))
            out[f"linear {shape}"] = self._measure("linear", module.weight, module.bias).crossover
        for module in self.convs:
            out[f"conv {module.conv.weight.shape[0]}x{module.conv.weight.shape[-1]}"] = self._measure(
                "conv", module.conv.weight, module.conv.bias).crossover
        return out
