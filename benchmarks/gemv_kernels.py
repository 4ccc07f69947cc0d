"""Matrix-vector kernels behind one decode step, per weight shape of LFM2-350M: CPU time and bytes/s.

One token's decode is a chain of ``[1, K] x [K, N]`` products, each streaming a weight once from memory.
This times the candidate CPU kernels for every LFM2-350M shape against bf16 ``F.linear`` (the baseline, in
the same run) on weights far larger than the caches (rotating copies), as per-call CPU time of the calling
thread (``time.thread_time``; robust to other processes on a shared machine, unlike wall time)::

    python benchmarks/gemv_kernels.py               # 1 thread
    python benchmarks/gemv_kernels.py --threads 2   # CPU time then sums over the caller thread only: use 1

Kernels: bf16 ``F.linear`` (oneDNN), fbgemm dynamic int8 (``quantize="int8"``), weight-only int8
``torch._weight_int8pack_mm`` (bf16 activations), and mm's group-wise int4 (``quantize="int4"``,
``torch._weight_int4pack_mm_for_cpu``) at group sizes 32 and 128. Prints ONE JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from typing import Any

#: (out, in) of the per-token linears of LFM2-350M: w1|w3 fused, w2, in_proj, q|k|v fused, LM head
SHAPES = [(13312, 1024), (1024, 6656), (3072, 1024), (2048, 1024), (65536, 1024)]


def cpu_ms(calls: list[Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.thread_time()
        for call in calls:
            call()
        best = min(best, time.thread_time() - start)
    return best / len(calls) * 1e3


def measure(out_f: int, in_f: int, repeats: int, budget_bytes: float) -> dict[str, Any]:
    import torch

    from mm.quant import Int4Linear

    copies = max(2, int(budget_bytes // (out_f * in_f * 2)))
    weights = [torch.randn(out_f, in_f) * 0.02 for _ in range(copies)]
    xb = torch.randn(1, in_f).bfloat16()
    x32 = xb.float()
    rows: dict[str, tuple[float, float]] = {}  # name -> (ms, bytes per weight)
    bf16 = [w.bfloat16() for w in weights]
    rows["bf16_linear"] = (cpu_ms([lambda w=w: torch.nn.functional.linear(xb, w) for w in bf16], repeats), 2.0)
    del bf16
    for group in (32, 128):
        layers = []
        for w in weights:
            linear = torch.nn.Linear(in_f, out_f, bias=False)
            linear.weight.data = w.bfloat16()
            layers.append(Int4Linear.from_linear(linear, group))
        rows[f"int4_g{group}"] = (cpu_ms([lambda q=q: q(xb) for q in layers], repeats), 0.5 + 4 / group)
        del layers
    packed = []
    for w in weights:
        scale = w.abs().amax(1) / 127
        q = torch.quantize_per_channel(w, scale.double(), torch.zeros(out_f, dtype=torch.long), 0, torch.qint8)
        packed.append(torch.ops.quantized.linear_prepack(q, None))
    rows["int8_dynamic_fbgemm"] = (cpu_ms([lambda p=p: torch.ops.quantized.linear_dynamic(x32, p, True)
                                           for p in packed], repeats), 1.0)
    del packed
    int8 = [(torch.randint(-127, 127, (out_f, in_f), dtype=torch.int8), torch.rand(out_f).bfloat16())
            for _ in weights]
    rows["int8_weight_only_bf16"] = (cpu_ms([lambda a=a: torch._weight_int8pack_mm(xb, a[0], a[1]) for a in int8],
                                            repeats), 1.0)
    base = rows["bf16_linear"][0]
    return {"shape": [out_f, in_f], "copies": copies, **{
        name: {"cpu_ms": round(ms, 3), "gb_s": round(out_f * in_f * bpw / ms / 1e6, 2),
               "speedup_over_bf16": round(base / ms, 2)} for name, (ms, bpw) in rows.items()}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget-mb", type=int, default=600, help="weight copies per shape (beyond the caches)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(args.threads)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result: dict[str, Any] = {"threads": torch.get_num_threads(), "torch": torch.__version__,
                              "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                              "load_average_start": os.getloadavg(), "timing": "per-call CPU time, best of N"}
    with torch.inference_mode():
        result["kernels"] = []
        for shape in SHAPES:
            result["kernels"].append(measure(*shape, args.repeats, args.budget_mb * 1e6))
            print(f"progress: {result['kernels'][-1]}", file=sys.stderr, flush=True)
    result["load_average_end"] = os.getloadavg()
    result["cpu_time_s"] = round(time.process_time() - cpu0, 1)
    result["wall_time_s"] = round(time.perf_counter() - wall0, 1)
    json.dump(result, sys.stdout, indent=1)
    print()
    return result


if __name__ == "__main__":
    main()
