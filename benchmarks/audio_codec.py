"""Mimi codec speed on this CPU: streaming (frame by frame, with state) vs full decode, fp32 vs bf16.

Full-size Kyutai Mimi configuration (mm's built-in ``REAL_MIMI_CONFIG``) with random weights
(speed does not depend on weight values). Baselines measured in the same run: transformers'
``MimiModel.decode`` of all frames (what a stateless decoder pays, and what it would pay again
for every new frame if it re-decoded the history to stream), and fp32 for the bf16 figures.

Prints one JSON object. Importable: ``run(...)`` returns the dict (used by benchmarks/audio.py).

    python benchmarks/audio_codec.py            # 50 frames = 4 s of audio
    python benchmarks/audio_codec.py --quick    # 12 frames, fp32 only chunk sizes 1 and 4
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import time
from typing import Any

import torch

FRAME_SECONDS = 1920 / 24000  # 80 ms of audio per Mimi frame


def build_codec(dtype: torch.dtype = torch.float32, seed: int = 0):
    """A full-size decode-only Mimi codec with random weights (no file needed)."""
    from mm.encoders.mimi import NUM_CODEBOOKS, MimiCodec, mimi_config
    from transformers import MimiModel

    config = copy.deepcopy(mimi_config(None))
    config.num_quantizers = NUM_CODEBOOKS
    config.encoder_config = None
    torch.manual_seed(seed)
    model = MimiModel(config)
    with torch.no_grad():  # unit-scale codebooks so latents are not all zero
        for module in model.modules():
            if hasattr(module, "embed_sum") and hasattr(module, "cluster_usage"):
                module.embed_sum.normal_()
    return MimiCodec(model, config, num_codebooks=NUM_CODEBOOKS, dtype=dtype)


def _clock() -> tuple[float, float]:
    """(wall, process CPU) seconds. CPU time counts every thread and excludes time spent waiting for a
    core, so on a loaded machine it is the steadier figure (with 1 thread it approximates idle wall time)."""
    return time.perf_counter(), time.process_time()


def _best_time(fn, codes: torch.Tensor, repeats: int) -> tuple[float, float]:
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        wall, cpu = _clock()
        fn(codes)
        wall2, cpu2 = _clock()
        best_wall, best_cpu = min(best_wall, wall2 - wall), min(best_cpu, cpu2 - cpu)
    return best_wall, best_cpu


def _stream_figures(codec, codes: torch.Tensor, chunk: int, repeats: int, audio_s: float) -> dict[str, float]:
    frames = codes.shape[1]
    walls, cpus, firsts, first_cpus, totals, total_cpus = [], [], [], [], [], []
    for _ in range(repeats):
        stream = codec.stream()
        call_walls, call_cpus = [], []
        for start in range(0, frames, chunk):
            piece = codes[:, start: start + chunk]
            wall, cpu = _clock()
            stream.decode_frames(piece)
            wall2, cpu2 = _clock()
            call_walls.append(wall2 - wall)
            call_cpus.append(cpu2 - cpu)
        firsts.append(call_walls[0])
        first_cpus.append(call_cpus[0])
        totals.append(sum(call_walls))
        total_cpus.append(sum(call_cpus))
        walls.extend(call_walls)
        cpus.extend(call_cpus)
    total, total_cpu = min(totals), min(total_cpus)
    return {
        "ms_per_frame": round(1000 * total / frames, 2),
        "cpu_ms_per_frame": round(1000 * total_cpu / frames, 2),
        "median_ms_per_call": round(1000 * statistics.median(walls), 2),
        "median_cpu_ms_per_call": round(1000 * statistics.median(cpus), 2),
        "p90_ms_per_call": round(1000 * sorted(walls)[int(0.9 * (len(walls) - 1))], 2),
        "first_call_ms": round(1000 * min(firsts), 2),
        "first_call_cpu_ms": round(1000 * min(first_cpus), 2),
        "rtf": round(total / audio_s, 4),
        "cpu_rtf": round(total_cpu / audio_s, 4),
    }


def _measure_dtype(dtype: torch.dtype, codes: torch.Tensor, chunks: list[int], repeats: int) -> dict[str, Any]:
    codec = build_codec(dtype)
    frames = codes.shape[1]
    audio_s = frames * FRAME_SECONDS
    result: dict[str, Any] = {}

    codec.decode(codes[:, :4])  # warm-up (allocator, kernels)
    codec.reference_decode(codes[:, :4])
    full, full_cpu = _best_time(codec.decode, codes, repeats)
    reference, reference_cpu = _best_time(codec.reference_decode, codes, repeats)
    result["full_decode"] = {
        "s": round(full, 4), "cpu_s": round(full_cpu, 4),
        "ms_per_frame": round(1000 * full / frames, 2), "cpu_ms_per_frame": round(1000 * full_cpu / frames, 2),
        "rtf": round(full / audio_s, 4), "cpu_rtf": round(full_cpu / audio_s, 4),
    }
    result["transformers_decode"] = {
        "s": round(reference, 4), "cpu_s": round(reference_cpu, 4),
        "rtf": round(reference / audio_s, 4), "cpu_rtf": round(reference_cpu / audio_s, 4),
    }
    streams = {str(chunk): _stream_figures(codec, codes, chunk, repeats, audio_s) for chunk in chunks}
    result["stream_by_chunk_frames"] = streams
    one = streams.get("1")
    if one:
        # time to first audio: codes of frame 0 available -> its 1920 samples ready; a full decode
        # (or transformers' stateless decoder) has to wait for every frame instead
        result["time_to_first_audio_ms"] = one["first_call_ms"]
        result["time_to_first_audio_cpu_ms"] = one["first_call_cpu_ms"]
        result["full_decode_time_to_first_audio_ms"] = round(1000 * full, 1)
        result["stream_1_vs_full_cpu_cost_ratio"] = round(
            one["cpu_ms_per_frame"] / result["full_decode"]["cpu_ms_per_frame"], 3)
    check = min(frames, 12)
    stream = codec.stream()
    streamed = torch.cat([stream.decode_frame(codes[:, t]) for t in range(check)])
    reference_wave = codec.decode(codes[:, :check])
    result["stream_vs_full_max_abs_diff"] = float((streamed - reference_wave).abs().max())
    result["output_peak"] = round(float(reference_wave.abs().max()), 3)
    del codec
    gc.collect()
    return result


def run(frames: int = 50, threads: int | None = 2, dtypes: tuple[str, ...] = ("float32", "bfloat16"),
        chunks: tuple[int, ...] = (1, 2, 4, 12), repeats: int = 2, seed: int = 0) -> dict[str, Any]:
    """Measure and return the figures as a dict (see the module docstring)."""
    from mm.runtime import configure_torch, cpu_has_fast_bf16

    configure_torch(threads)
    codes = torch.randint(0, 2048, (8, frames), generator=torch.Generator().manual_seed(seed))
    out: dict[str, Any] = {
        "benchmark": "audio_codec",
        "model": "Kyutai Mimi full size (random weights), 8 codebooks, 24 kHz, 1920 samples/frame",
        "frames": frames,
        "audio_seconds": round(frames * FRAME_SECONDS, 2),
        "threads": torch.get_num_threads(),
        "cpu_fast_bf16": cpu_has_fast_bf16(),
        "load_average_1m_before": round(os.getloadavg()[0], 2),
    }
    for name in dtypes:
        out[name] = _measure_dtype(getattr(torch, name), codes, list(chunks), repeats)
    if "float32" in out and "bfloat16" in out:
        f32, b16 = out["float32"], out["bfloat16"]
        out["bf16_over_fp32_cpu_time"] = {
            "full_decode": round(b16["full_decode"]["cpu_s"] / f32["full_decode"]["cpu_s"], 3),
            **{f"stream_{c}": round(b16["stream_by_chunk_frames"][c]["cpu_ms_per_frame"]
                                    / f32["stream_by_chunk_frames"][c]["cpu_ms_per_frame"], 3)
               for c in f32["stream_by_chunk_frames"]},
        }
    if "float32" in out:
        f32 = out["float32"]
        out["full_decode_cpu_speedup_vs_transformers"] = round(
            f32["transformers_decode"]["cpu_s"] / f32["full_decode"]["cpu_s"], 3)
        if "time_to_first_audio_ms" in f32:
            out["time_to_first_audio_speedup_vs_full_decode"] = round(
                f32["full_decode_time_to_first_audio_ms"] / f32["time_to_first_audio_ms"], 1)
    out["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="12 frames, fp32 only, chunk sizes 1 and 4")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated, e.g. float32")
    parser.add_argument("--chunks", default="1,2,4,12", help="frames per streaming call, comma-separated")
    args = parser.parse_args()
    if args.quick:
        result = run(frames=12, threads=args.threads, dtypes=("float32",), chunks=(1, 4), repeats=1)
    else:
        result = run(frames=args.frames, threads=args.threads, repeats=args.repeats,
                     dtypes=tuple(args.dtypes.split(",")), chunks=tuple(int(c) for c in args.chunks.split(",")))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
