"""int8 decode step with LFM2's gated MLP fused (w1/w3 as one int8 matrix) against the unfused model, same run.

Full-size LFM2-350M with random weights; both engines are mm's fast decode loop over the same int8 values,
alternating, best of ``--repeats`` x ``--steps`` steps.  Prints JSON.

    python benchmarks/int8_fusion.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def step_ms(fast, steps: int) -> float:
    import torch

    state = fast.prefill(torch.randint(20, 2000, (1, 16)), max_new_tokens=steps + 8)
    token = fast.logits(state.hidden).argmax(-1)
    for _ in range(3):
        token = fast.logits(fast.step(state, token)).argmax(-1)
    start = time.perf_counter()
    for _ in range(steps):
        token = fast.logits(fast.step(state, token)).argmax(-1)
    return 1000 * (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import torch
    from backbone import LFM2_350M, write_checkpoint
    from torch.ao.quantization import quantize_dynamic

    from mm.backbone import Backbone
    from mm.fast_decode import FastLfm2

    torch.set_num_threads(args.threads)  # a benchmark script: its own process
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_checkpoint(Path(tmp) / "lfm2-350m", LFM2_350M)
        fused = Backbone.load(path, dtype="float32", quantize="int8").model
        unfused = quantize_dynamic(Backbone.load(path, dtype="float32").model, {torch.nn.Linear},
                                   dtype=torch.qint8, inplace=False)
        engines = {"fused": FastLfm2(fused), "unfused": FastLfm2(unfused)}
        best = {name: float("inf") for name in engines}
        for _ in range(args.repeats):
            for name, fast in engines.items():
                best[name] = min(best[name], step_ms(fast, args.steps))
    result = {"model": "LFM2-350M (random weights)", "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "threads": torch.get_num_threads(), "load_average_start": load_start,
              "load_average_end": os.getloadavg(), "step_ms": {k: round(v, 2) for k, v in best.items()},
              "speedup": round(best["unfused"] / best["fused"], 3)}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
