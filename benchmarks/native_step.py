"""One decode step of full-size LFM2-350M (random weights): mm's native kernels against the same loop on torch's ops.

Times ``FastLfm2.step`` + LM head + argmax, best of ``--steps`` after a 16-token prompt, for each setting
(bf16, int8, int4), alternating the two engines, as wall time and as process CPU time. ``--busy N`` starts N
processes that spin on the CPU for the whole run, to reproduce a machine with more runnable threads than cores
(where barriers that only spin wait for preempted threads). Prints ONE JSON object::

    python benchmarks/native_step.py --threads 2
    python benchmarks/native_step.py --threads 2 --busy 2      # two other busy processes on the machine
    python benchmarks/native_step.py --threads 2 --compare hugepages   # native on 2 MB pages vs 4 KB pages

``--compare hugepages`` times the native step with its weights on huge pages (mm's default, see
``mm.kernels.hugepages``) against the same step on 4 KB pages (a second copy of the model, whose pool is built
without the huge-page advice), alternating.
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


def fast_model(model: Any, kernels: str, hugepages: bool = True) -> Any:
    from mm.fast_decode import FastLfm2
    from mm.kernels import hugepages as pages

    saved = pages._MADVISE
    if not hugepages:
        pages._MADVISE = None  # this benchmark's A/B switch: the same code on 4 KB pages
    try:
        return FastLfm2(model, kernels=kernels)
    finally:
        pages._MADVISE = saved


def time_steps(fast: Any, steps: int) -> dict[str, float]:
    """Best and mean wall time (and best CPU time) of one step + LM head + argmax."""
    import torch

    state = fast.prefill(torch.arange(10, 26).view(1, -1), max_new_tokens=steps + 4)
    token = torch.tensor([5])
    wall = cpu = float("inf")
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(steps):
            w, c = time.perf_counter(), time.process_time()
            token = fast.logits(fast.step(state, token)).argmax(-1)
            wall, cpu = min(wall, time.perf_counter() - w), min(cpu, time.process_time() - c)
    mean = (time.perf_counter() - start) / steps
    return {"wall_ms": round(wall * 1e3, 2), "mean_wall_ms": round(mean * 1e3, 2), "cpu_ms": round(cpu * 1e3, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--settings", default="bf16,int8,int4")
    parser.add_argument("--busy", type=int, default=0, help="busy-looping processes to run alongside")
    parser.add_argument("--compare", default="torch", choices=("torch", "hugepages"),
                        help="the native step against torch's ops, or on huge pages against 4 KB pages")
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
            if args.compare == "torch":
                model = build(setting)
                engines = {"torch": fast_model(model, "torch"), "native": fast_model(model, "native")}
            else:  # two copies: advice on one model's memory would also reach the other's
                engines = {"native_4k_pages": fast_model(build(setting), "native", hugepages=False),
                           "native": fast_model(build(setting), "native")}
                result.setdefault("pool_mb", {})[setting] = round(engines["native"].pool.used / 1e6)
            rows = {}
            for _ in range(2):  # alternating, best of both passes
                for name, fast in engines.items():
                    got = time_steps(fast, args.steps)
                    best = rows.setdefault(name, got)
                    rows[name] = {k: min(best[k], got[k]) for k in got}
            base = "torch" if args.compare == "torch" else "native_4k_pages"
            rows["native_speedup_wall"] = round(rows[base]["wall_ms"] / rows["native"]["wall_ms"], 2)
            rows["native_speedup_mean_wall"] = round(rows[base]["mean_wall_ms"] / rows["native"]["mean_wall_ms"], 2)
            del engines
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
