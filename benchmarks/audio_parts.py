"""Per-part speed of LFM2-Audio's audio output path at full size: depth transformer and Mimi decoder, before/after.

Parts that do not need the 1.2 B backbone, so they are cheap to measure (about 1 GB of memory):

* depth transformer (``depth_linear`` + 6 blocks x 8 codebooks + logits, dim 1024), per frame:
  the generic ``AudioHead`` modules (before) vs :class:`mm.encoders.audio_out_fast.FastDepthLoop`
  (after), in float32 and dynamic int8 (``quantize="int8"``); plus how many of the sampled codes the
  two paths agree on;
* Mimi decoder (full-size random codec), per frame, frame by frame and in batches of 2 and 4 (what
  the background decoder does when generation runs ahead): float32 (before) vs int8 (after), and the
  int8 waveform's SNR against float32.

Each figure is the best of ``--repeats`` runs, wall and process CPU time, baseline and candidate
alternated in the same run. Prints one JSON object.

    python benchmarks/audio_parts.py --threads 2
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _best(fn, repeats: int) -> tuple[float, float]:
    wall = cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return wall, cpu


def depth_figures(repeats: int, frames: int) -> dict:
    from mm.encoders.audio_out import AudioHead
    from mm.encoders.audio_out_fast import fast_depth_loop
    from torch.ao.quantization import quantize_dynamic

    torch.manual_seed(0)
    head = AudioHead(2048, 1024, 6, 8).eval().requires_grad_(False)
    with torch.no_grad():
        for p in head.parameters():
            if p.ndim >= 2:
                p.normal_(0, p.shape[-1] ** -0.5)
    head.reset_rope()
    hiddens = [torch.randn(2048) for _ in range(frames)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        int8 = quantize_dynamic(copy.deepcopy(head), {torch.nn.Linear}, dtype=torch.qint8)
    out = {}
    for name, model in (("float32", head), ("int8", int8)):
        loop = fast_depth_loop(model)
        with torch.inference_mode():
            before = [None, None]
            after = [None, None]
            for _ in range(repeats):  # alternate
                w, c = _best(lambda m=model: [m.sample_frame(h) for h in hiddens], 1)
                before = [min(x, y) if x is not None else y for x, y in zip(before, (w, c), strict=True)]
                w, c = _best(lambda lp=loop: [lp.sample_frame(h) for h in hiddens], 1)
                after = [min(x, y) if x is not None else y for x, y in zip(after, (w, c), strict=True)]
            same = sum(a == b for h in hiddens for a, b in zip(model.sample_frame(h), loop.sample_frame(h), strict=True))
        out[name] = {
            "generic_ms_per_frame": round(1000 * before[0] / frames, 1),
            "generic_cpu_ms_per_frame": round(1000 * before[1] / frames, 1),
            "fast_ms_per_frame": round(1000 * after[0] / frames, 1),
            "fast_cpu_ms_per_frame": round(1000 * after[1] / frames, 1),
            "speedup_wall": round(before[0] / after[0], 2), "speedup_cpu": round(before[1] / after[1], 2),
            "codes_equal_fast_vs_generic": f"{same}/{8 * frames}",
        }
    return out


def mimi_figures(repeats: int, frames: int) -> dict:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import audio_codec

    codes = torch.randint(0, 2048, (8, frames), generator=torch.Generator().manual_seed(0))
    fp32 = audio_codec.build_codec(torch.float32)
    int8 = audio_codec.build_codec(torch.float32).quantize_int8()

    def decode(codec, chunk):
        stream = codec.stream()
        return torch.cat([stream.decode_frames(codes[:, i:i + chunk]) for i in range(0, frames, chunk)])

    out = {}
    for chunk in (1, 2, 4):
        best = {"float32": [float("inf")] * 2, "int8": [float("inf")] * 2}
        for _ in range(repeats):
            for name, codec in (("float32", fp32), ("int8", int8)):
                w, c = _best(lambda cd=codec, n=chunk: decode(cd, n), 1)
                best[name] = [min(best[name][0], w), min(best[name][1], c)]
        ref, got = decode(fp32, chunk), decode(int8, chunk)
        snr = float(10 * torch.log10(ref.pow(2).mean() / (ref - got).pow(2).mean()))
        out[f"frames_per_call_{chunk}"] = {
            "float32_ms_per_frame": round(1000 * best["float32"][0] / frames, 1),
            "float32_cpu_ms_per_frame": round(1000 * best["float32"][1] / frames, 1),
            "int8_ms_per_frame": round(1000 * best["int8"][0] / frames, 1),
            "int8_cpu_ms_per_frame": round(1000 * best["int8"][1] / frames, 1),
            "speedup_cpu": round(best["float32"][1] / best["int8"][1], 2),
            "int8_snr_db": round(snr, 1),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=12, help="frames per timed run (12 = one interleave block)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    load_before = round(os.getloadavg()[0], 2)
    depth = depth_figures(args.repeats, args.frames)
    mimi = mimi_figures(args.repeats, args.frames)
    print(json.dumps({
        "benchmark": "lfm2-audio output path parts (full size, random weights)",
        "threads": args.threads, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average_1m": [load_before, round(os.getloadavg()[0], 2)], "frames": args.frames,
        "depth_transformer": depth, "mimi_decoder": mimi,
    }, indent=1))


if __name__ == "__main__":
    main()
