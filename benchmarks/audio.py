"""LFM2-Audio-1.5B speech-to-speech latency on this CPU (random weights, full-size config).

For a 4 s spoken input (espeak-ng; a synthetic vowel-like signal if espeak-ng is missing) it
runs the interleaved loop and reports, per setting, the time to the first audio chunk and the
real-time factor (wall time from the input to the last audio sample / seconds of audio produced;
``cpu_rtf`` / ``time_to_first_audio_cpu_s`` use process CPU time instead, which leaves out the time
spent waiting for a core on a busy machine;
``decode_loop_rtf`` leaves out the one-off features, encoder and prefill), plus where the time goes (features +
encoder, backbone prefill and steps, text head, depth transformer, Mimi codec):

* ``reference``: a plain reference-style path - fp32, the official loop (backbone and depth
  KV caches only), the Mimi decode of all frames at the end with transformers' ``MimiModel``;
* ``fp32``, ``bf16``, ``int8``: mm's path - backbone steps through mm's fast decode loop
  (:mod:`mm.fast_decode`), frames decoded one by one by the streaming Mimi decoder as they are produced
  (int8 = dynamic int8 linear layers and text head, fp32 activations);
* ``fp32_transformers_backbone``: mm's fp32 path with the backbone steps on ``Lfm2Model``'s forward
  instead (what the fast decode loop alone changes: compare ``per_step_ms.backbone_step``).

* ``batch``: ASR and TTS prompts of ``--batch`` different inputs decoded together
  (:func:`mm.models.lfm2_audio_batch.generate_batch`: left-padded prompts, one backbone step for the
  whole batch) against a loop of single generations of the same prompts, fp32 fast loop, alternating, best
  of 2; seconds per item and a token check (greedy: the batch must give each prompt's own tokens).

Ratios are against ``reference`` measured in the same run. Prints one JSON object.

    python benchmarks/audio.py            # full size (about 10 min on 2 cores)
    python benchmarks/audio.py --quick    # fewer layers and steps (a smoke run)
    python benchmarks/audio.py --quick --only-batch   # only the batch rows
"""

from __future__ import annotations

import argparse
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


def run_once(model, codec, tokenizer, extractor, samples, steps: int, streaming: bool, engine: str = "auto") -> dict:
    """One interleaved generation from raw 16 kHz samples to waveform; returns timings."""
    from mm.encoders.audio_generate import END_OF_AUDIO, GenerationConfig, StepTimer, generate

    timer = StepTimer()
    cpu_start = time.process_time()
    t_start = time.perf_counter()
    history = build_history(tokenizer, extractor, samples)  # log-mel features
    t_features = time.perf_counter() - t_start
    stream = codec.stream() if streaming else None
    frames: list[tuple[int, ...]] = []
    first_audio = first_audio_cpu = None
    codec_s = 0.0
    n_steps = 0
    config = GenerationConfig(mode="interleaved", max_new_tokens=steps)
    for step in generate(model, history, config, timer=timer, engine=engine):
        n_steps += 1
        if step.kind != "audio" or END_OF_AUDIO in step.codes:
            continue
        frames.append(step.codes)
        if stream is not None:
            t0 = time.perf_counter()
            with torch.inference_mode():
                stream.decode_frame(torch.tensor(step.codes))
            codec_s += time.perf_counter() - t0
            if first_audio is None:
                first_audio = time.perf_counter() - t_start
                first_audio_cpu = time.process_time() - cpu_start
    if not streaming and frames:
        t0 = time.perf_counter()
        codec.reference_decode(torch.tensor(frames).T)
        codec_s = time.perf_counter() - t0
        first_audio = time.perf_counter() - t_start
        first_audio_cpu = time.process_time() - cpu_start
    wall = time.perf_counter() - t_start
    cpu = time.process_time() - cpu_start
    audio_s = len(frames) * 1920 / 24000
    sec, cnt = timer.seconds, timer.counts
    loop_s = sec.get("backbone_step", 0.0) + sec.get("text_head", 0.0) + sec.get("depth", 0.0) + codec_s
    return {
        "time_to_first_audio_s": round(first_audio, 3) if first_audio is not None else None,
        "rtf": round(wall / audio_s, 3) if audio_s else None,
        "decode_loop_rtf": round(loop_s / audio_s, 3) if audio_s else None,
        # process CPU time (all threads; excludes waiting for a core on a busy machine)
        "time_to_first_audio_cpu_s": round(first_audio_cpu, 3) if first_audio_cpu is not None else None,
        "cpu_rtf": round(cpu / audio_s, 3) if audio_s else None,
        "wall_s": round(wall, 3), "audio_s": audio_s, "steps": n_steps, "frames_decoded": len(frames),
        "breakdown_s": {
            "features": round(t_features, 3),
            "encoder": round(sec.get("encoder+prefill_embeddings", 0.0), 3),
            "backbone_prefill": round(sec.get("backbone_prefill", 0.0), 3),
            "backbone_steps": round(sec.get("backbone_step", 0.0), 3),
            "text_head": round(sec.get("text_head", 0.0), 3),
            "depth_transformer": round(sec.get("depth", 0.0), 3),
            "codec": round(codec_s, 3),
        },
        "per_step_ms": {
            "backbone_step": round(1000 * sec.get("backbone_step", 0.0) / max(1, cnt.get("backbone_step", 0)), 1),
            "depth_per_frame": round(1000 * sec.get("depth", 0.0) / max(1, cnt.get("depth", 0)), 1),
            "codec_per_frame": round(1000 * codec_s / max(1, len(frames)), 1) if streaming else None,
        },
    }


def measure(name, model, codec, tokenizer, extractor, samples, steps, streaming, log, engine="auto") -> dict:
    run_once(model, codec, tokenizer, extractor, samples[:16000], 2, streaming, engine)  # warm-up (allocations)
    result = run_once(model, codec, tokenizer, extractor, samples, steps, streaming, engine)
    log(f"{name}: {json.dumps(result)}")
    return result


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer layers and steps (smoke run)")
    parser.add_argument("--steps", type=int, default=None, help="generation steps (default 30; quick 20)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a busy 2-core machine a second thread stalls small ops)")
    parser.add_argument("--batch", type=int, default=4, help="prompts in the ASR/TTS batch rows (0 skips them)")
    parser.add_argument("--only-batch", action="store_true", help="run only the batch rows")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    from mm.encoders.audio_in import build_feature_extractor

    from mm.models.lfm2_audio import LFM2AudioConfig, convert_dtype, quantize_linears, random_model

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    steps = args.steps or (20 if args.quick else 30)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    samples, source = spoken_input()
    config = LFM2AudioConfig.from_dict(quick_config() if args.quick else REAL_CONFIG)
    tokenizer = make_tokenizer()
    extractor = build_feature_extractor(config.preprocessor)
    sys.path.insert(0, str(REPO / "benchmarks"))
    import audio_codec  # the Mimi part of this benchmark (full-size random codec, detailed figures)

    load_before = round(os.getloadavg()[0], 2)
    t0 = time.perf_counter()
    codec = audio_codec.build_codec(torch.float32)  # real Mimi hyper-parameters, random weights
    log(f"mimi ready in {time.perf_counter() - t0:.1f}s")
    t0 = time.perf_counter()
    model = random_model(config, dtype=torch.float32, seed=0)
    params = sum(p.numel() for p in model.parameters())
    log(f"model ({params / 1e9:.3f} B params) ready in {time.perf_counter() - t0:.1f}s")

    batch = batch_rows(model, tokenizer, extractor, samples, args.batch, steps, log) if args.batch > 1 else None
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
    results["reference"] = measure("reference", model, codec, tokenizer, extractor, samples, steps, False, log,
                                   engine="transformers")
    # mm's path with the backbone on Lfm2Model's forward: isolates what the fast decode loop adds
    results["fp32_transformers_backbone"] = measure("fp32_transformers_backbone", model, codec, tokenizer, extractor,
                                                    samples, steps, True, log, engine="transformers")
    results["fp32"] = measure("fp32", model, codec, tokenizer, extractor, samples, steps, True, log)
    convert_dtype(model, torch.bfloat16)
    results["bf16"] = measure("bf16", model, codec, tokenizer, extractor, samples, steps, True, log)
    convert_dtype(model, torch.float32)
    t0 = time.perf_counter()
    quantize_linears(model)
    gc.collect()
    log(f"int8 quantization took {time.perf_counter() - t0:.1f}s")
    results["int8"] = measure("int8", model, codec, tokenizer, extractor, samples, steps, True, log)
    del model, codec
    gc.collect()
    codec_detail = audio_codec.run(frames=18, threads=args.threads, dtypes=("float32",), chunks=(1,), repeats=1)

    ref = results["reference"]
    ratios = {}
    for name in ("fp32_transformers_backbone", "fp32", "bf16", "int8"):
        r = results[name]
        ratios[name] = {
            "ttfa_speedup_vs_reference": round(ref["time_to_first_audio_s"] / r["time_to_first_audio_s"], 2)
            if r["time_to_first_audio_s"] and ref["time_to_first_audio_s"] else None,
            "rtf_speedup_vs_reference": round(ref["rtf"] / r["rtf"], 2) if r["rtf"] and ref["rtf"] else None,
        }
    best = min(("fp32", "bf16", "int8"), key=lambda n: results[n]["rtf"] or float("inf"))
    print(json.dumps({
        "benchmark": "lfm2-audio speech-to-speech, interleaved mode",
        "model": "LFM2-Audio-1.5B config, random weights" + (" (quick: fewer layers)" if args.quick else ""),
        "params_b": round(params / 1e9, 3), "input": f"4.0 s {source} speech, 16 kHz", "steps": steps,
        "threads": args.threads, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average_1m": [load_before, round(os.getloadavg()[0], 2)],
        "results": results, "ratios": ratios, "batch": batch, "codec_detail": codec_detail, "fastest": best,
        "fastest_rtf": results[best]["rtf"], "fastest_time_to_first_audio_s": results[best]["time_to_first_audio_s"],
    }, indent=1))


if __name__ == "__main__":
    main()
