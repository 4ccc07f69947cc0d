"""LFM2-Audio-1.5B speech-to-speech latency on this CPU (random weights, full-size config), through mm's public path.

A full-size checkpoint with random weights is written in the official layout (``config.json``,
``model.safetensors`` in bf16 as published, the Mimi file, a tokenizer) to a temporary directory, and
every mm row runs exactly what a user runs::

    mm.pipeline("speech-to-speech", model=DIR, quantize="int8", threads=N).stream((samples, 16000), ...)

For a 4 s spoken input (espeak-ng; a synthetic vowel-like signal if espeak-ng is missing) each row
reports the time to the first audio chunk after the input is handed over, the real-time factor (wall
time from the input to the last audio sample / seconds of audio produced), the same two in process
CPU time (``*_cpu``: all threads; leaves out time spent waiting for a core on a busy machine), and
a per-part breakdown (features + encoder, backbone prefill and steps, text head, depth transformer,
Mimi) from the timings of a second, non-streamed call of the same (greedy, deterministic) generation.

Rows:

* ``reference``: a plain reference-style path on the same fp32 weights - the official loop (backbone
  on ``Lfm2Model``'s forward with its cache, the depth transformer's generic modules), Mimi decode of
  all frames at the end with transformers' ``MimiModel``;
* ``fp32``: ``mm.pipeline(..., dtype="float32")`` (fast backbone loop, lean depth loop, Mimi on a
  background thread);
* ``int8_inline``: ``quantize="int8"`` with ``audio_decode="inline"`` (Mimi decoded between steps);
* ``int8``: ``quantize="int8"`` (the fastest setting: int8 backbone, depth loop and Mimi, Mimi on a
  background thread);
* ``int4_inline`` / ``int4``: ``quantize="int4"`` (the LFM2 backbone's linears group-wise 4-bit on mm's native
  int4 kernel, half the int8 bytes per step; depth loop and Mimi int8), Mimi inline / on a background thread;
* ``bf16``: ``dtype="bfloat16"`` (``--no-bf16`` leaves it out).

``--rows`` picks the mm rows (the reference row always runs: every ratio is against it).

* ``batch``: ASR and TTS prompts of ``--batch`` different inputs decoded together
  (:func:`mm.models.lfm2_audio_batch.generate_batch`: left-padded prompts, one backbone step for the
  whole batch) against a loop of single generations of the same prompts, fp32 fast loop, alternating, best
  of 2; seconds per item and a token check (greedy: the batch must give each prompt's own tokens).

Ratios are against ``reference`` measured in the same run. Prints one JSON object.

    python benchmarks/audio.py --threads 2          # full size (about 10 min on 2 cores)
    python benchmarks/audio.py --quick              # fewer layers and steps (a smoke run)
    python benchmarks/audio.py --quick --only-batch # only the batched ASR/TTS rows
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SENTENCE = "What is the weather like in Paris today? Tell me, and speak slowly please."

#: LiquidAI/LFM2-Audio-1.5B config.json (see ../shared/fixtures/LFM2_AUDIO_REAL_CONFIG.md)
REAL_CONFIG = {
    "architectures": ["Lfm2AudioForConditionalGeneration"], "codebooks": 8, "tie_audio_embeddings": False,
    "semantic_codebook_factor": 100, "codebook_weight": "log", "interleaved_n_text": 6, "interleaved_n_audio": 12,
    "preprocessor": {"sample_rate": 16000, "normalize": "per_feature", "window_size": 0.025, "window_stride": 0.01,
                     "window": "hann", "features": 128, "n_fft": 512, "log": True, "frame_splicing": 1,
                     "dither": 1e-05, "pad_to": 0, "pad_value": 0.0},
    "encoder": {"feat_in": 128, "feat_out": -1, "n_layers": 17, "d_model": 512, "subsampling": "dw_striding",
                "subsampling_factor": 8, "subsampling_conv_channels": 256, "causal_downsampling": False,
                "reduction": None, "reduction_position": None, "reduction_factor": 1, "ff_expansion_factor": 4,
                "self_attention_model": "rel_pos", "n_heads": 8, "att_context_size": [-1, -1], "xscaling": False,
                "untie_biases": True, "pos_emb_max_len": 5000, "conv_kernel_size": 9, "conv_norm_type": "batch_norm",
                "conv_context_size": None, "dropout": 0.1, "dropout_pre_encoder": 0.1, "dropout_emb": 0.0,
                "dropout_att": 0.1},
    "lfm": {"vocab_size": 65536, "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
            "num_key_value_heads": 8, "max_position_embeddings": 128000, "norm_eps": 1e-05, "conv_bias": False,
            "conv_L_cache": 3, "block_ff_dim": 12288, "block_multiple_of": 256, "block_ffn_dim_multiplier": 1.0,
            "block_auto_adjust_ff_dim": True,
            "layer_types": ["conv", "conv", "full_attention", "conv", "conv", "full_attention", "conv", "conv",
                            "full_attention", "conv", "full_attention", "conv", "full_attention", "conv",
                            "full_attention", "conv"],
            "rope_theta": 1000000.0, "eos_token_id": 7, "bos_token_id": 1, "pad_token_id": 0, "tie_embedding": True},
    "depthformer": {"layers": 6, "dim": 1024, "tie": True},
}


def quick_config() -> dict:
    config = json.loads(json.dumps(REAL_CONFIG))
    config["encoder"]["n_layers"] = 4
    config["lfm"].update(num_hidden_layers=4, layer_types=["conv", "full_attention", "conv", "full_attention"])
    config["depthformer"]["layers"] = 2
    return config


def spoken_input(seconds: float = 4.0, rate: int = 16000) -> tuple[np.ndarray, str]:
    """``seconds`` of espeak-ng speech at 16 kHz (padded / cut to exactly that length)."""
    from mm.media.audio import load_audio

    exe = shutil.which("espeak-ng")
    if exe:
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "in.wav"
            subprocess.run([exe, "-v", "en-us", "-s", "150", "-w", str(wav), SENTENCE], check=True,
                           capture_output=True)
            samples = load_audio(wav).samples
        source = "espeak-ng"
    else:  # a vowel-like harmonic signal with pauses
        t = np.arange(int(seconds * rate)) / rate
        samples = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 700, 1200), 1))
        samples = (0.3 * samples * (np.sin(2 * np.pi * 1.5 * t) > -0.3)).astype(np.float32)
        source = "synthetic"
    n = int(seconds * rate)
    samples = np.pad(samples, (0, max(0, n - len(samples))))[:n].astype(np.float32)
    return samples, source


def make_tokenizer():
    from transformers import PreTrainedTokenizerFast

    from mm.testing.audio import AUDIO_CORPUS, AUDIO_SPECIAL_TOKENS
    from mm.testing.tokenizer import train_tokenizer

    tok = train_tokenizer(600, AUDIO_SPECIAL_TOKENS, corpus=AUDIO_CORPUS)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|im_end|>",
                                   pad_token="<|pad|>")


def build_history(tokenizer, extractor, samples):
    from mm.encoders.audio_generate import ChatHistory

    history = ChatHistory(tokenizer, extractor)
    history.add_turn("system", text="Respond with interleaved text and audio.")
    history.add_turn("user", audio=samples)
    history.new_turn("assistant")
    return history


def run_reference(bundle, samples, steps: int) -> dict:
    """The reference-style loop on the bundle's fp32 weights; Mimi decode of all frames at the end."""
    from mm.encoders.audio_generate import END_OF_AUDIO, GenerationConfig, StepTimer, generate

    timer = StepTimer()
    cpu_start, t_start = time.process_time(), time.perf_counter()
    history = build_history(bundle.tokenizer, bundle.feature_extractor, samples)
    t_features = time.perf_counter() - t_start
    frames = []
    config = GenerationConfig(mode="interleaved", max_new_tokens=steps)
    for step in generate(bundle.model, history, config, timer=timer, engine="transformers"):
        if step.kind == "audio" and END_OF_AUDIO not in step.codes:
            frames.append(step.codes)
    t0 = time.perf_counter()
    if frames:
        bundle.codec.reference_decode(torch.tensor(frames).T)
    codec_s = time.perf_counter() - t0
    wall, cpu = time.perf_counter() - t_start, time.process_time() - cpu_start
    audio_s = len(frames) * 1920 / 24000
    sec = {f"{k}_s": v for k, v in timer.seconds.items()}
    sec.update(codec_s=codec_s, features_s=t_features)
    counts = {"backbone_step": timer.counts.get("backbone_step", 0), "depth": timer.counts.get("depth", 0),
              "frames": len(frames)}
    return _figures(wall, cpu, wall, cpu, audio_s, len(frames), sec, counts)


def _figures(first, first_cpu, wall, cpu, audio_s, frames, sec, counts) -> dict:
    per = lambda key, n: round(1000 * sec.get(key, 0.0) / n, 1) if n else None  # noqa: E731
    return {
        "time_to_first_audio_s": round(first, 3) if first is not None else None,
        "rtf": round(wall / audio_s, 3) if audio_s else None,
        "time_to_first_audio_cpu_s": round(first_cpu, 3) if first_cpu is not None else None,
        "cpu_rtf": round(cpu / audio_s, 3) if audio_s else None,
        "wall_s": round(wall, 3), "audio_s": audio_s, "frames": frames,
        "breakdown_s": {name: round(sec.get(key, 0.0), 3) for name, key in (
            ("features", "features_s"), ("encoder", "encoder+prefill_embeddings_s"),
            ("backbone_prefill", "backbone_prefill_s"), ("backbone_steps", "backbone_step_s"),
            ("text_head", "text_head_s"), ("depth_transformer", "depth_s"), ("mimi", "codec_s"))},
        "per_step_ms": {"backbone_step": per("backbone_step_s", counts.get("backbone_step")),
                        "depth_per_frame": per("depth_s", counts.get("depth")),
                        "mimi_per_frame": per("codec_s", counts.get("frames"))},
    }


def run_public(pipe, samples, steps: int) -> dict:
    """``pipe.stream(...)`` timed from the input to the last chunk, plus a breakdown from ``pipe(...)``."""
    from mm.pipelines.speech import AudioChunk

    item = (samples, 16000)
    first = first_cpu = None
    n_frames = 0
    cpu_start, t_start = time.process_time(), time.perf_counter()
    for piece in pipe.stream(item, max_new_tokens=steps):
        if isinstance(piece, AudioChunk):
            n_frames += 1
            if first is None:
                first, first_cpu = time.perf_counter() - t_start, time.process_time() - cpu_start
    wall, cpu = time.perf_counter() - t_start, time.process_time() - cpu_start
    result = pipe(item, max_new_tokens=steps)  # same greedy generation: where the time goes
    timings = dict(result.timings)
    frames = len(result.audio_codes)  # (an end-of-audio frame would also pass the depth loop: none here)
    counts = {"backbone_step": int(result.usage["generated_tokens"]) - 1, "depth": frames, "frames": frames}
    figures = _figures(first, first_cpu, wall, cpu, n_frames * 1920 / 24000, n_frames, timings, counts)
    figures["breakdown_s"]["total_non_streamed"] = round(timings.get("generate_s", 0.0), 3)
    return figures


def write_checkpoint(directory: Path, config: dict, quick: bool) -> float:
    """The full-size random model in the official layout (weights stored in bf16, as published)."""
    from mm.encoders.mimi import tiny_mimi_config, write_mimi_checkpoint
    from safetensors.torch import save_file

    from mm.models.lfm2_audio import LFM2AudioConfig, official_key, random_model
    from mm.testing.tokenizer import save_fast_tokenizer

    model = random_model(LFM2AudioConfig.from_dict(config), dtype=torch.float32, seed=0)
    params = sum(p.numel() for p in model.parameters())
    state = {official_key(k): v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    del model
    gc.collect()
    hidden, books = config["lfm"]["hidden_size"], config["codebooks"]
    state["codebook_offsets"] = torch.arange(books) * 2049
    state["audio_loss_weights"] = torch.ones(books)
    state["audio_embedding.embedding_norm.weight"] = torch.ones(hidden, dtype=torch.bfloat16)
    state["audio_embedding.to_logits.weight"] = state["audio_embedding.embedding.weight"].clone()
    for i in range(books):
        state[f"depth_embeddings.{i}.to_logits.weight"] = state[f"depth_embeddings.{i}.embedding.weight"].clone()
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    del state
    gc.collect()
    (directory / "config.json").write_text(json.dumps(config))
    write_mimi_checkpoint(directory, tiny_mimi_config() if quick else None, seed=0, write_config=quick)
    save_fast_tokenizer(make_tokenizer().backend_tokenizer, directory)
    return params


def batch_rows(model, tokenizer, extractor, samples: np.ndarray, n: int, steps: int, log) -> dict:
    """ASR and TTS: one batched decode of ``n`` prompts vs a loop of ``n`` single decodes (same prompts)."""
    from mm.encoders.audio_generate import ChatHistory, GenerationConfig, generate

    from mm.models.lfm2_audio_batch import generate_batch

    texts = [SENTENCE[: 20 + 13 * i] for i in range(n)]
    clips = [samples[: int(16000 * (2.0 + 0.5 * i))] for i in range(n)]

    def prompts(task: str) -> list:
        out = []
        for i in range(n):  # fresh histories each run: their audio encodings are computed again
            h = ChatHistory(tokenizer, extractor)
            if task == "asr":
                h.add_turn("system", text="Perform ASR.")
                h.add_turn("user", audio=clips[i])
            else:
                h.add_turn("system", text="Perform TTS.")
                h.add_turn("user", text=texts[i])
            h.new_turn("assistant")
            out.append(h)
        return out

    config = GenerationConfig(mode="sequential", max_new_tokens=steps)
    rows = {}
    for task, flags in (("asr", {"stop_at_audio_start": True}), ("tts", {"stop_after_audio": True})):
        wall = {"loop": [], "batch": []}
        cpu = {"loop": [], "batch": []}
        tokens = {}
        for repeat in range(2):
            for side in ("loop", "batch") if repeat % 2 == 0 else ("batch", "loop"):
                histories = prompts(task)
                c0, t0 = time.process_time(), time.perf_counter()
                if side == "batch":
                    tokens[side] = [r.steps for r in generate_batch(model, histories, config, **flags)]
                else:
                    tokens[side] = [_single(generate(model, h, config), **flags) for h in histories]
                wall[side].append(time.perf_counter() - t0)
                cpu[side].append(time.process_time() - c0)
        steps_run = sum(len(t) for t in tokens["batch"])
        rows[task] = {
            "items": n, "steps_per_item_max": steps, "steps_total": steps_run,
            "loop_s_per_item": round(min(wall["loop"]) / n, 3), "batch_s_per_item": round(min(wall["batch"]) / n, 3),
            "loop_cpu_s_per_item": round(min(cpu["loop"]) / n, 3),
            "batch_cpu_s_per_item": round(min(cpu["batch"]) / n, 3),
            "batch_speedup_vs_loop": round(min(wall["loop"]) / min(wall["batch"]), 2),
            "batch_cpu_speedup_vs_loop": round(min(cpu["loop"]) / min(cpu["batch"]), 2),
            "same_steps_as_loop": tokens["loop"] == tokens["batch"],
        }
        log(f"batch {task}: {json.dumps(rows[task])}")
    return rows


def _single(steps, stop_at_audio_start: bool = False, stop_after_audio: bool = False) -> list:
    """The steps one generation yields, cut where the batched decode stops that row (ASR / TTS)."""
    from mm.encoders.audio_generate import AUDIO_START

    out = []
    for step in steps:
        out.append(step)
        if stop_at_audio_start and step.kind == "text" and step.token == AUDIO_START:
            break
        if stop_after_audio and step.end_of_audio:
            break
    steps.close()
    return out


#: mm rows: name -> pipeline options
ROWS = {
    "fp32": dict(dtype="float32"),
    "int8_inline": dict(dtype="float32", quantize="int8", audio_decode="inline"),
    "int8": dict(dtype="float32", quantize="int8"),
    "int4_inline": dict(dtype="float32", quantize="int4", audio_decode="inline"),
    "int4": dict(dtype="float32", quantize="int4"),
    "bf16": dict(dtype="bfloat16"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer layers, a tiny Mimi and fewer steps (smoke run)")
    parser.add_argument("--steps", type=int, default=None, help="generation steps (default 42; quick 20)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--no-bf16", action="store_true", help="leave out the bf16 row")
    parser.add_argument("--batch", type=int, default=4, help="prompts in the ASR/TTS batch rows (0 skips them)")
    parser.add_argument("--only-batch", action="store_true", help="run only the batch rows")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"mm rows to time (default: {','.join(ROWS)})")
    parser.add_argument("--keep", type=Path, default=None, help="write the checkpoint here and keep it")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    import mm

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    steps = args.steps or (20 if args.quick else 42)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    samples, source = spoken_input()
    load_before = round(os.getloadavg()[0], 2)
    tmp = None
    if args.keep is None:
        tmp = tempfile.TemporaryDirectory(prefix="mm-audio-bench-")
    directory = args.keep or Path(tmp.name)
    directory.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    params = write_checkpoint(directory, quick_config() if args.quick else REAL_CONFIG, args.quick)
    log(f"checkpoint ({params / 1e9:.3f} B params) written in {time.perf_counter() - t0:.1f}s")

    def pipeline(**options):
        t0 = time.perf_counter()
        pipe = mm.pipeline("speech-to-speech", model=str(directory), threads=args.threads, **options)
        _ = pipe.bundle.codec
        log(f"pipeline {options} loaded in {time.perf_counter() - t0:.1f}s")
        pipe((samples[:16000], 16000), max_new_tokens=8)  # warm-up (allocations, first-call paths)
        return pipe

    def row(name, fn):
        result = fn()
        log(f"{name}: {json.dumps(result)}")
        return result

    batch = None
    if args.batch > 1:
        bundle = mm.pipeline("asr", model=str(directory), dtype="float32", threads=args.threads).bundle
        batch = batch_rows(bundle.model, bundle.tokenizer, bundle.feature_extractor, samples, args.batch, steps, log)
        del bundle
        gc.collect()
    if args.only_batch:
        print(json.dumps({
            "benchmark": "lfm2-audio batched ASR/TTS decoding vs a loop",
            "model": "LFM2-Audio-1.5B config, random weights, fp32" + (" (quick: fewer layers)" if args.quick else ""),
            "params_b": round(params / 1e9, 3), "threads": args.threads,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "load_average_1m": [load_before, round(os.getloadavg()[0], 2)], "batch": batch,
        }, indent=1))
        return
    results = {}
    wanted = [r for r in args.rows.split(",") if r and not (r == "bf16" and args.no_bf16)]
    if unknown := set(wanted) - set(ROWS):
        parser.error(f"unknown --rows {sorted(unknown)}; valid: {','.join(ROWS)}")
    base = pipeline(dtype="float32")
    results["reference"] = row("reference", functools.partial(run_reference, base.bundle, samples, steps))
    if "fp32" in wanted:
        results["fp32"] = row("fp32", functools.partial(run_public, base, samples, steps))
    del base
    gc.collect()
    for name in wanted:
        if name == "fp32":
            continue
        results[name] = row(name, functools.partial(run_public, pipeline(**ROWS[name]), samples, steps))
        gc.collect()
    if tmp is not None:
        tmp.cleanup()

    ref = results["reference"]
    ratios = {}
    for name, r in results.items():
        if name == "reference":
            continue
        ratios[name] = {
            "ttfa_speedup_vs_reference": round(ref["time_to_first_audio_s"] / r["time_to_first_audio_s"], 2)
            if r["time_to_first_audio_s"] and ref["time_to_first_audio_s"] else None,
            "rtf_speedup_vs_reference": round(ref["rtf"] / r["rtf"], 2) if r["rtf"] and ref["rtf"] else None,
            "cpu_rtf_speedup_vs_reference": round(ref["cpu_rtf"] / r["cpu_rtf"], 2)
            if r["cpu_rtf"] and ref["cpu_rtf"] else None,
        }
    best = min((n for n in results if n != "reference"), key=lambda n: results[n]["rtf"] or float("inf"))
    print(json.dumps({
        "benchmark": "lfm2-audio speech-to-speech, interleaved mode, public pipeline path",
        "model": "LFM2-Audio-1.5B config, random weights" + (" (quick: fewer layers, tiny Mimi)" if args.quick else ""),
        "params_b": round(params / 1e9, 3), "input": f"4.0 s {source} speech, 16 kHz", "steps": steps,
        "threads": args.threads, "torch_threads_seen": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average_1m": [load_before, round(os.getloadavg()[0], 2)],
        "results": results, "ratios": ratios, "batch": batch, "fastest": best,
        "fastest_rtf": results[best]["rtf"], "fastest_time_to_first_audio_s": results[best]["time_to_first_audio_s"],
    }, indent=1))


if __name__ == "__main__":
    main()
