"""VQA latency per image-token budget on full-size LFM2-VL-450M (random weights), mm vs plain transformers.

Writes a random-weight checkpoint with LFM2-VL-450M's configuration (SigLIP2-NaFlex base tower,
LFM2-350M text model, 450M processor settings) and measures, for a 512x512 and a 1024x768 image:

* ``mm``: end-to-end ``vqa(image, question, image_tokens=preset)`` (decode, preprocess, vision, generate);
* ``transformers``: the same preprocessed inputs (identical ``pixel_values``, ids and masks, from mm's
  preprocessing, timed too) fed to plain ``Lfm2VlForConditionalGeneration.generate``.

Runs alternate between the two and the best of ``--repeats`` is kept (the machines are shared and
noisy); wall-clock and process CPU time are both reported (CPU time is far less sensitive to other
processes competing for the cores). Generation is greedy with EOS disabled, so every run produces exactly ``--new-tokens`` tokens.
Prints one JSON object.

    python benchmarks/vqa.py            # full run (~12 min on 2 cores)
    python benchmarks/vqa.py --quick    # 1 repeat, 4 new tokens, 512x512 only for transformers
    python benchmarks/vqa.py --only-batch --batch 4   # just the batch row: one batched call vs a loop

The ``batch`` row runs ``--batch`` different 512x512 images (``image_tokens="fast"``) as one batched call
(``vqa([(image, q), ...])``: left-padded prompts, one vision pass, one generate) and as a loop of single calls,
alternating, best of ``--repeats``; it reports seconds per item for both and checks the tokens are equal.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

QUESTION = "What is in this image? Answer in one sentence."
SIZES = {"512x512": (512, 512), "1024x768": (768, 1024)}
PRESETS = ("fast", "balanced", "detailed")


def build_checkpoint(directory: Path, seed: int = 0) -> Path:
    """A random-weight LFM2-VL-450M checkpoint with the tiny factory's tokenizer and real processor config."""
    from transformers import GenerationConfig, Lfm2VlForConditionalGeneration

    from mm.testing.tokenizer import LFM2_SPECIAL_TOKENS, train_tokenizer
    from mm.testing.vl import (
        LFM2_VL_450M_PROCESSOR,
        LFM2_VL_IMAGE_TOKENS,
        lfm2_vl_450m_config,
        save_vl_tokenizer,
        write_processor_config,
    )

    tokenizer = train_tokenizer(1024, LFM2_SPECIAL_TOKENS + LFM2_VL_IMAGE_TOKENS)
    config = lfm2_vl_450m_config(vocab_size=65536, image_token_id=tokenizer.token_to_id("<image>"))
    torch.manual_seed(seed)
    model = Lfm2VlForConditionalGeneration(config).eval()
    # no EOS: every run generates exactly max_new_tokens, so mm and the baseline do the same work
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=None, pad_token_id=0)
    model.save_pretrained(str(directory))
    save_vl_tokenizer(tokenizer, directory)
    write_processor_config(directory, LFM2_VL_450M_PROCESSOR)
    del model
    gc.collect()
    return directory


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def baseline_inputs(vqa, image: np.ndarray, preset: str) -> dict:
    """What a plain-transformers user feeds to ``generate``: mm's preprocessed ids + pixel values."""
    from mm.media.image import load_image

    settings = vqa.budget(image_tokens=preset)
    vision = vqa.vl.preprocessor([load_image(image)], settings)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    text = vqa.vl.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    text = vqa.vl.preprocessor.expand_prompt(text, vision.plans, settings)
    encoded = vqa.vl.tokenizer([text], return_tensors="pt", add_special_tokens=False)
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], **vision.model_kwargs()}


def batch_row(vqa, n: int, gen: dict, repeats: int) -> dict:
    """Seconds per item of one batched call of ``n`` images against a loop of ``n`` single calls."""
    rng = np.random.default_rng(1)
    items = [(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8), QUESTION) for _ in range(n)]
    vqa(items[:2], image_tokens="fast", **gen)  # warm-up of the batched path
    loop_wall, loop_cpu, batch_wall, batch_cpu = [], [], [], []
    tokens: dict = {}
    for repeat in range(repeats):
        for side in ("loop", "batch") if repeat % 2 == 0 else ("batch", "loop"):  # alternate who goes first
            c0, t0 = time.process_time(), time.perf_counter()
            if side == "loop":
                tokens["loop"] = [vqa(*item, image_tokens="fast", **gen).token_ids for item in items]
                loop_wall.append(time.perf_counter() - t0)
                loop_cpu.append(time.process_time() - c0)
            else:
                tokens["batch"] = [r.token_ids for r in vqa(items, image_tokens="fast", **gen)]
                batch_wall.append(time.perf_counter() - t0)
                batch_cpu.append(time.process_time() - c0)
    return {
        "items": n, "image": "512x512", "image_tokens": "fast", "runs_per_side": repeats,
        "loop_s_per_item": round(min(loop_wall) / n, 3), "batch_s_per_item": round(min(batch_wall) / n, 3),
        "loop_cpu_s_per_item": round(min(loop_cpu) / n, 3), "batch_cpu_s_per_item": round(min(batch_cpu) / n, 3),
        "batch_speedup_vs_loop": round(min(loop_wall) / min(batch_wall), 2),
        "batch_cpu_speedup_vs_loop": round(min(loop_cpu) / min(batch_cpu), 2),
        "same_tokens_as_loop": tokens["loop"] == tokens["batch"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, 4 new tokens")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side for untiled (<= 256-token) images")
    parser.add_argument("--heavy-repeats", type=int, default=3,
                        help="runs per side for tiled images (~20 s each; one run varies by +-7%% here)")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=list(SIZES), help="images to run")
    parser.add_argument("--checkpoint", type=Path, default=None, help="reuse a checkpoint written before")
    parser.add_argument("--no-int8", action="store_true", help="skip the quantize='int8' rows")
    parser.add_argument("--batch", type=int, default=4, help="images in the batch row (0 skips it)")
    parser.add_argument("--only-batch", action="store_true", help="run only the batch row (fp32)")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    new_tokens = 4 if args.quick else args.new_tokens
    torch.set_num_threads(args.threads)

    import mm
    from mm import runtime

    runtime.configure_torch(args.threads)
    tmp = None
    if args.checkpoint is None or not (args.checkpoint / "config.json").is_file():
        tmp = tempfile.TemporaryDirectory(prefix="mm-bench-vqa-")
        path = args.checkpoint or Path(tmp.name)
        path.mkdir(parents=True, exist_ok=True)
        t_build = timed(lambda: build_checkpoint(path))
    else:
        path, t_build = args.checkpoint, 0.0
    start = time.perf_counter()
    vqa = mm.pipeline("vqa", model=path, dtype="float32", threads=args.threads)
    load_s = time.perf_counter() - start
    model = vqa.vl.model
    rng = np.random.default_rng(0)
    images = {name: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for name, (h, w) in SIZES.items()}
    images = {name: image for name, image in images.items() if name in args.sizes}
    gen = {"max_new_tokens": new_tokens, "do_sample": False}

    first = next(iter(images.values()))
    vqa(first, QUESTION, image_tokens="fast", **gen)  # warm-up (first-call overheads)
    batch = batch_row(vqa, args.batch, gen, max(repeats, 2)) if args.batch > 1 else None
    if batch is not None:
        print(json.dumps({"progress": "batch", **batch}), flush=True, file=sys.stderr)
    if args.only_batch:
        images = {}
        args.no_int8 = True
    with torch.inference_mode():
        model.generate(**baseline_inputs(vqa, first, "fast"), max_new_tokens=2, do_sample=False, pad_token_id=0)
    results: dict = {}
    fp32_tokens: dict = {}
    for name, image in images.items():
        results[name] = {}
        for preset in PRESETS:
            h, w = image.shape[:2]
            settings = vqa.budget(image_tokens=preset)
            plan = vqa.vl.preprocessor.plan(h, w, settings)
            mm_times, tf_times, tf_model_times, mm_cpu, tf_cpu = [], [], [], [], []
            answers = {}
            n_runs = repeats if not plan.tiled else (1 if args.quick else args.heavy_repeats)
            for repeat in range(n_runs):
                for side in ("mm", "tf") if repeat % 2 == 0 else ("tf", "mm"):  # alternate who goes first
                    c0, t0 = time.process_time(), time.perf_counter()
                    if side == "mm":
                        result = vqa(image, QUESTION, image_tokens=preset, **gen)
                        mm_cpu.append(time.process_time() - c0)
                        mm_times.append(time.perf_counter() - t0)
                        answers["mm"] = result.token_ids
                        continue
                    inputs = baseline_inputs(vqa, image, preset)
                    t1 = time.perf_counter()
                    with torch.inference_mode():
                        out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
                    tf_cpu.append(time.process_time() - c0)
                    tf_model_times.append(time.perf_counter() - t1)
                    tf_times.append(time.perf_counter() - t0)
                    answers["tf"] = out[0, inputs["input_ids"].shape[1]:].tolist()
            entry = {
                "image_tokens": plan.num_image_tokens,
                "tiles": plan.num_tiles,
                "grid": f"{plan.cols}x{plan.rows}" if plan.tiled else "1x1",
                "encoder_pixels": sum(th * tw for th, tw in plan.tile_shapes()),
                "prompt_tokens": result.usage["prompt_tokens"],
                "runs_per_side": n_runs,
                "mm_s": round(min(mm_times), 3),
                "mm_median_s": round(statistics.median(mm_times), 3),
                "mm_vision_s": round(result.timings["vision_s"], 3),
                "mm_generate_s": round(result.timings["generate_s"], 3),
                "transformers_s": round(min(tf_times), 3),
                "transformers_generate_only_s": round(min(tf_model_times), 3),
                "speed_ratio_vs_transformers": round(min(tf_times) / min(mm_times), 3),
                "mm_cpu_s": round(min(mm_cpu), 3),
                "transformers_cpu_s": round(min(tf_cpu), 3),
                "cpu_ratio_vs_transformers": round(min(tf_cpu) / min(mm_cpu), 3),
                "same_tokens_as_transformers": answers["mm"] == answers["tf"][: len(answers["mm"])],
            }
            results[name][preset] = entry
            fp32_tokens[name, preset] = answers["mm"]
            print(json.dumps({"progress": f"{name}/{preset}", **entry}), flush=True, file=sys.stderr)
    int8: dict = {}
    if not args.no_int8:  # mm's fastest setting: int8 language model (vision tower in fp32)
        del vqa, model
        gc.collect()
        q = mm.pipeline("vqa", model=path, dtype="float32", quantize="int8", threads=args.threads)
        q(first, QUESTION, image_tokens="fast", **gen)  # warm-up
        for name, image in images.items():
            int8[name] = {}
            for preset in PRESETS:
                c0, t0 = time.process_time(), time.perf_counter()
                result = q(image, QUESTION, image_tokens=preset, **gen)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                int8[name][preset] = {
                    "mm_int8_s": round(wall, 3), "mm_int8_cpu_s": round(cpu, 3),
                    "speedup_vs_fp32": round(results[name][preset]["mm_s"] / wall, 2),
                    "generate_s": round(result.timings["generate_s"], 3),
                    "same_tokens_as_fp32": result.token_ids == fp32_tokens[name, preset],
                }
                print(json.dumps({"progress": f"int8 {name}/{preset}", **int8[name][preset]}), flush=True,
                      file=sys.stderr)
    ratios = [e["speed_ratio_vs_transformers"] for r in results.values() for e in r.values()]
    cpu_ratios = [e["cpu_ratio_vs_transformers"] for r in results.values() for e in r.values()]
    summary: dict = {
        "min_speed_ratio_vs_transformers": min(ratios, default=None),
        "min_cpu_ratio_vs_transformers": min(cpu_ratios, default=None),
    }
    if batch is not None:
        summary["batch_speedup_vs_loop"] = batch["batch_speedup_vs_loop"]
    for name, r in results.items():
        summary[f"fast_speedup_vs_balanced_{name}"] = round(r["balanced"]["mm_s"] / r["fast"]["mm_s"], 2)
        summary[f"fast_cpu_speedup_vs_balanced_{name}"] = round(r["balanced"]["mm_cpu_s"] / r["fast"]["mm_cpu_s"], 2)
    print(json.dumps({
        "benchmark": "vqa",
        "model": "LFM2-VL-450M config, random weights, float32",
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                    "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "load_avg": [round(x, 2) for x in os.getloadavg()]},
        "new_tokens": new_tokens, "question": QUESTION,
        "checkpoint_build_s": round(t_build, 1), "load_s": round(load_s, 1),
        "results": results, "batch": batch, "int8": int8, "summary": summary,
    }, indent=1))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
