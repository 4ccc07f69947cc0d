"""``dtype="auto"`` for LFM2-Audio: the float type that is fastest on this CPU, measured once per process.

Whether bfloat16 beats float32 on a CPU is not a matter of flags alone: with native bf16 (AVX512-BF16,
AMX) both the prompt's matrix products and the decode steps' matrix-vector products gain; on AVX2,
bf16 halves the bytes a decode step reads but the prompt's products are emulated and much slower
(README: bf16 prefill 5.3 s vs fp32 0.6 s there). :func:`fastest_dtype` therefore times, for each
candidate, what one speech-to-speech turn is made of at the backbone's width: one prompt-sized matrix
product (``prefill_rows`` x hidden x hidden) plus ``steps`` decode-sized matrix-vector products
(hidden x 4 hidden; 16 MB in float32, more than a core's caches, so they are memory-bound as the real
ones), best of a few repeats, and returns the cheaper dtype. The answer is cached for the process.

>>> import torch
>>> fastest_dtype(hidden=64, prefill_rows=8, steps=2, repeats=1) in (torch.float32, torch.bfloat16)
True
"""

from __future__ import annotations

import functools
import logging
import time

import torch

log = logging.getLogger(__name__)

#: the measured choice per (hidden, prefill_rows, steps, repeats), filled by the first call
_measured: dict[tuple[int, int, int, int], dict[str, float]] = {}


def _operands(dtype: torch.dtype, hidden: int, prefill_rows: int) -> tuple[torch.Tensor, ...]:
    return (torch.full((hidden, hidden), 0.01, dtype=dtype),  # speed does not depend on the values
            torch.full((4 * hidden, hidden), 0.01, dtype=dtype),
            torch.full((prefill_rows, hidden), 0.5, dtype=dtype), torch.full((1, hidden), 0.5, dtype=dtype))


def _once(operands: tuple[torch.Tensor, ...], steps: int) -> float:
    square, wide, prompt, token = operands
    t0 = time.perf_counter()
    torch.nn.functional.linear(prompt, square)
    for _ in range(steps):
        torch.nn.functional.linear(token, wide)
    return time.perf_counter() - t0


@functools.cache
def fastest_dtype(hidden: int = 1024, prefill_rows: int = 128, steps: int = 16, repeats: int = 3) -> torch.dtype:
    """float32 or bfloat16, whichever runs a prompt product plus ``steps`` decode products faster here."""
    names = ("float32", "bfloat16")
    operands = {name: _operands(getattr(torch, name), hidden, prefill_rows) for name in names}
    costs = dict.fromkeys(names, float("inf"))
    with torch.inference_mode():
        for name in names:  # first-call setup (weight packing, kernel selection)
            _once(operands[name], 1)
        for _ in range(repeats):  # alternate the candidates so a load change hits both; keep the best
            for name in names:
                costs[name] = min(costs[name], _once(operands[name], steps))
    _measured[(hidden, prefill_rows, steps, repeats)] = costs
    choice = min(costs, key=costs.get)
    log.info("dtype='auto' for LFM2-Audio: %s (measured seconds %s)", choice,
             {k: round(v, 4) for k, v in costs.items()})
    return getattr(torch, choice)


def measured_costs() -> dict[tuple[int, int, int, int], dict[str, float]]:
    """The seconds each dtype took in the measurements made so far (for benchmarks and reports)."""
    return dict(_measured)
