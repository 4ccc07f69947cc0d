"""One decode step of full-size LFM2-350M (random weights): mm's native kernels against the same loop on torch's ops.

Times ``FastLfm2.step`` + LM head + argmax, best of ``--steps`` after a 16-token prompt, for each setting
(bf16, int8, int4), alternating the two engines, as wall time and as process CPU time. ``--busy N`` starts N
processes that spin on the CPU for the whole run, to reproduce a machine with more runnable threads than cores
(where barriers that only spin wait for preempted threads). Prints ONE JSON object::

    python benchmarks/native_step.py --threads 2
    python benchmarks/native_step.py --threads 2 --busy 2      # two other busy processes on the machine
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))


def _spin(stop: Any) -> None:
    while not stop.is_set():
        sum(range(10_000))


def build(setting: str) -> Any:
    import torch
    from backbone import COMMON, LFM2_350M
    from transformers import Lfm2Config, Lfm2ForCausalLM

    from mm.models.loading import quantize_int8
    from mm.quant import quantize_int4

    torch.manual_seed(0)
    model = Lfm2ForCausalLM(Lfm2Config(**LFM2_350M, **COMMON)).eval()
    if setting == "bf16":
        return model.to(torch.bfloat16)
    if setting == "int8":
        return quantize_int8(model)
    return quantize_int4(model.to(torch.bfloat16))


def time_steps(model: Any, kernels: str, steps: int) -> dict[str, float]:
    import torch

    from mm.fast_decode import FastLfm2

    fast = FastLfm2(model, kernels=kernels)
    state = fast.prefill(torch.arange(10, 26).view(1, -1), max_new_tokens=steps + 4)
    token = torch.tensor([5])
    wall = cpu = float("inf")
    with torch.inference_mode():
        for _ in range(steps):
            w, c = time.perf_counter(), time.process_time()
            token = fast.logits(fast.step(state, token)).argmax(-1)
            wall, cpu = min(wall, time.perf_counter() - w), min(cpu, time.process_time() - c)
    return {"wall_ms": round(wall * 1e3, 2), "cpu_ms": round(cpu * 1e3, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--settings", default="bf16,int8,int4")
    parser.add_argument("--busy", type=int, default=0, help="busy-looping processes to run alongside")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import torch

    from mm import kernels

    torch.set_num_threads(args.threads)  # a benchmark process: its own thread count
    stop = multiprocessing.Event()
    spinners = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    result: dict[str, Any] = {"threads": args.threads, "busy_processes": args.busy, "cpus": os.cpu_count(),
                              "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                              "native_available": kernels.available(), "load_average_start": os.getloadavg()}
    try:
        for setting in args.settings.split(","):
            model = build(setting)
            rows = {}
            for kernels_choice in ("torch", "native", "torch", "native"):  # alternating, best of both passes
                got = time_steps(model, kernels_choice, args.steps)
                best = rows.setdefault(kernels_choice, got)
                rows[kernels_choice] = {k: min(best[k], got[k]) for k in got}
            rows["native_speedup_wall"] = round(rows["torch"]["wall_ms"] / rows["native"]["wall_ms"], 2)
            result[setting] = rows
            print(f"progress: {setting} {rows}", file=sys.stderr, flush=True)
    finally:
        stop.set()
        for p in spinners:
            p.join(timeout=5)
    result["load_average_end"] = os.getloadavg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
