"""Backbone speed: prefill and decode tokens/s of mm's engines against transformers ``generate``, same run.

Full-size LFM2-350M with random weights (speed does not depend on weight values), written to a temp
directory with a tokenizer and loaded through ``mm.pipeline("chat", model=DIR, ...)`` like a real
checkpoint. Prints ONE JSON object::

    python benchmarks/backbone.py            # 512-token prompt, 64 new tokens, + LFM2-1.2B streams
    python benchmarks/backbone.py --quick    # shorter prompt/decode, no 1.2B part

Figures: transformers bf16/fp32 (baseline), mm's chat pipeline on transformers' engine (wrapper
overhead), mm's fast engine in bf16/fp32/int8, ratios against transformers bf16 and fp32, greedy-token
agreement of the fast engine with transformers (same dtype) and of int8 with fp32, and LFM2-1.2B decode
for 1, 2 and 4 streams.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

#: the published LFM2 hyper-parameters (transformers ``Lfm2Config`` fields)
LFM2_350M = dict(vocab_size=65536, hidden_size=1024, num_hidden_layers=16, num_attention_heads=16,
                 num_key_value_heads=8, block_ff_dim=6656)
LFM2_1_2B = dict(vocab_size=65536, hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                 num_key_value_heads=8, block_ff_dim=12288)
COMMON = dict(max_position_embeddings=128000, norm_eps=1e-5, conv_bias=False, conv_L_cache=3, block_multiple_of=256,
              block_ffn_dim_multiplier=1.0, block_auto_adjust_ff_dim=True, full_attn_idxs=[2, 5, 8, 10, 12, 14],
              rope_parameters={"rope_type": "default", "rope_theta": 1e6}, tie_embedding=True, bos_token_id=1,
              eos_token_id=7, pad_token_id=0)

#: decode is timed after a short prompt (llama-bench's pp512 / tg64 split), prefill on the long one
DECODE_PROMPT_TOKENS = 16

#: fixed prompt set for greedy agreement
AGREEMENT_PROMPTS = [
    "Write a haiku about the sea.", "What is the capital of France?", "Explain how a bicycle works.",
    "Liste trois fruits rouges.", "Translate 'good morning' into German.", "Why is the sky blue?",
]


def write_checkpoint(directory: Path, sizes: dict[str, Any], seed: int = 0) -> Path:
    """A random full-size LFM2 checkpoint (bf16 safetensors) + an LFM2-layout tokenizer and chat template."""
    import torch
    from transformers import GenerationConfig, Lfm2Config, Lfm2ForCausalLM

    from mm.testing import LFM2_CHAT_TEMPLATE, LFM2_SPECIAL_TOKENS, train_tokenizer
    from mm.testing.tokenizer import save_fast_tokenizer

    config = Lfm2Config(**sizes, **COMMON)
    torch.manual_seed(seed)
    model = Lfm2ForCausalLM(config).to(torch.bfloat16).eval()
    # no EOS: every run generates exactly max_new_tokens, so timings compare like for like
    model.generation_config = GenerationConfig(bos_token_id=1, pad_token_id=0)
    model.save_pretrained(str(directory))
    del model
    gc.collect()
    save_fast_tokenizer(train_tokenizer(2000, LFM2_SPECIAL_TOKENS), directory, chat_template=LFM2_CHAT_TEMPLATE)
    return directory


def long_prompt(tokenizer: Any, n_tokens: int) -> str:
    """A user message whose chat-templated encoding is ``n_tokens`` tokens long (within a few)."""
    from mm.testing.tokenizer import DEFAULT_CORPUS

    text = " ".join(DEFAULT_CORPUS * 200)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    overhead = len(tokenizer.apply_chat_template([{"role": "user", "content": ""}], add_generation_prompt=True))
    return tokenizer.decode(ids[: max(1, n_tokens - overhead)])


def timed(fn: Any, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def speed(generate: Any, prompt_len: int, new_tokens: int, repeats: int,
          decode_generate: Any | None = None) -> dict[str, float]:
    """Prefill tokens/s (a 1-token generate on the long prompt) and decode tokens/s, llama-bench style.

    Decode is timed on ``decode_generate`` (a short prompt: the extra time of ``new_tokens - 1`` steps over
    a 1-token run), so a slow, noisy prefill cannot swamp the difference; without it, on the long prompt.
    """
    decode_generate = decode_generate or generate
    gc.collect()
    generate(4)  # warm-up (oneDNN primitives, caches)
    decode_generate(4)
    t1 = timed(lambda: generate(1), repeats)
    d1 = timed(lambda: decode_generate(1), repeats)
    dn = timed(lambda: decode_generate(new_tokens), repeats)
    figures = {"prefill_tok_s": round(prompt_len / t1, 2),
               "decode_tok_s": round((new_tokens - 1) / max(dn - d1, 1e-9), 2)}
    print(f"progress: {figures}", file=sys.stderr, flush=True)  # partial results survive an interrupted run
    return figures


def transformers_speed(path: Path, dtype: str, input_ids: Any, short_ids: Any, new_tokens: int,
                       repeats: int) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype)).eval()

    def run(n: int, ids: Any = input_ids) -> None:
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                           do_sample=False, pad_token_id=0)

    return speed(run, input_ids.shape[1], new_tokens, repeats, lambda n: run(n, short_ids))


def pipeline_speed(path: Path, prompt: str, short_prompt: str, prompt_len: int, new_tokens: int, repeats: int,
                   **options: Any) -> dict[str, float]:
    import mm

    chat = mm.pipeline("chat", model=str(path), **options)
    return speed(lambda n: chat(prompt, max_new_tokens=n), prompt_len, new_tokens, repeats,
                 lambda n: chat(short_prompt, max_new_tokens=n))


def agreement(path: Path, new_tokens: int, dtype: str, quantize: str | None = None,
              reference: tuple[str, str | None, str] | None = None) -> float:
    """Share of greedy tokens (position by position) equal between two (dtype, quantize, engine) settings."""
    from mm.backbone import Backbone, GenerationSettings

    settings = GenerationSettings(max_new_tokens=new_tokens)
    convs = [[{"role": "user", "content": p}] for p in AGREEMENT_PROMPTS]

    def rows(dt: str, q: str | None, engine: str) -> list[list[int]]:
        bb = Backbone.load(path, dtype=dt, quantize=q)
        return [bb.generate(bb.encode_chat([c]), settings, engine=engine)[0] for c in convs]

    mine = rows(dtype, quantize, "fast")
    ref = rows(*(reference or (dtype, quantize, "transformers")))
    same = total = 0
    for a, b in zip(mine, ref, strict=True):
        total += max(len(a), len(b))
        for x, y in zip(a, b, strict=False):
            if x != y:
                break  # after the first difference the continuations are no longer comparable
            same += 1
    return round(same / max(total, 1), 4)


def logits_agreement(path: Path, new_tokens: int, dtype: str, quantize: str | None) -> dict[str, float]:
    """Teacher-forced comparison of one setting's next-token logits with fp32's, on fp32's greedy continuations.

    Free-running greedy agreement stops counting at the first differing token, which on a random-weight
    model (near-flat logits, tiny top-1 margins) happens almost at once for any lossy setting; feeding
    both models the same tokens shows how far the logits themselves move: top-1 agreement, the fp32
    top-1 among the setting's top-5, and the cosine similarity of the logit vectors.
    """
    import torch

    from mm.backbone import Backbone, GenerationSettings

    ref, other = Backbone.load(path, dtype="float32"), Backbone.load(path, dtype=dtype, quantize=quantize)
    top1 = top5 = cosine = n = 0.0
    for prompt in AGREEMENT_PROMPTS:
        inputs = ref.encode_chat([[{"role": "user", "content": prompt}]])
        cont = ref.generate(inputs, GenerationSettings(max_new_tokens=new_tokens), engine="transformers")[0]
        ids = torch.cat([inputs["input_ids"], torch.tensor([cont])], dim=1)
        start = inputs["input_ids"].shape[1] - 1  # logits that predict each generated token
        with torch.inference_mode():
            a = ref.model(input_ids=ids).logits[0, start:-1].float()
            b = other.model(input_ids=ids).logits[0, start:-1].float()
        best = a.argmax(-1)
        top1 += float((b.argmax(-1) == best).sum())
        top5 += float((b.topk(5, dim=-1).indices == best[:, None]).any(-1).sum())
        cosine += float(torch.nn.functional.cosine_similarity(a, b, dim=-1).sum())
        n += a.shape[0]
    return {"top1": round(top1 / n, 4), "fp32_top1_in_top5": round(top5 / n, 4), "logits_cosine": round(cosine / n, 5)}


def streams_speed(path: Path, dtype: str, quantize: str | None, new_tokens: int, prompt_len: int) -> dict[str, Any]:
    """Decode tokens/s per stream and in total for 1, 2 and 4 streams batched through the fast engine.

    Each stream gets its own random ``prompt_len``-token prompt; the timed part is ``new_tokens`` decode
    steps of the whole batch (backbone step + LM head + greedy pick), after the prefill.
    """
    import torch

    from mm.backbone import Backbone

    fast = Backbone.load(path, dtype=dtype, quantize=quantize).fast()
    out: dict[str, Any] = {"prompt_tokens": prompt_len, "decode_steps": new_tokens}
    for streams in (1, 2, 4):
        state = fast.prefill(torch.randint(20, 2000, (streams, prompt_len)), max_new_tokens=new_tokens + 4)
        tokens = fast.logits(state.hidden).argmax(-1)
        for _ in range(3):  # warm-up steps
            tokens = fast.logits(fast.step(state, tokens)).argmax(-1)
        start = time.perf_counter()
        for _ in range(new_tokens):
            tokens = fast.logits(fast.step(state, tokens)).argmax(-1)
        per_stream = new_tokens / (time.perf_counter() - start)
        gc.collect()
        out[f"{streams}_streams"] = {"per_stream_decode_tok_s": round(per_stream, 2),
                                     "total_decode_tok_s": round(per_stream * streams, 2)}
        print(f"progress: {streams} streams {out[f'{streams}_streams']}", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128-token prompt, 16 new tokens, skip LFM2-1.2B")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=None)
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=1, help="best of N timings per figure")
    args = parser.parse_args(argv)
    prompt_tokens = args.prompt_tokens or (128 if args.quick else 512)
    new_tokens = args.new_tokens or (16 if args.quick else 64)
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from mm import runtime

    hf_logging.set_verbosity_error()
    runtime.configure_torch(args.threads)
    result: dict[str, Any] = {
        "model": "LFM2-350M (random weights)", "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_native_bf16": runtime.cpu_has_fast_bf16(),
        "auto_dtype": str(runtime.resolve_dtype("auto")).removeprefix("torch."),
        "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
    }
    with tempfile.TemporaryDirectory(prefix="mm-bench-backbone-") as tmp:
        path = write_checkpoint(Path(tmp) / "lfm2-350m", LFM2_350M)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        prompt, short_prompt = long_prompt(tokenizer, prompt_tokens), long_prompt(tokenizer, DECODE_PROMPT_TOKENS)

        def encode(text: str) -> Any:
            return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                 return_tensors="pt", return_dict=True)["input_ids"]

        input_ids, short_ids = encode(prompt), encode(short_prompt)
        result["decode_prompt_tokens"] = int(short_ids.shape[1])
        result["prompt_tokens"] = prompt_len = int(input_ids.shape[1])
        rows: dict[str, dict[str, float]] = {}
        rows["transformers_bf16"] = transformers_speed(path, "bfloat16", input_ids, short_ids, new_tokens,
                                                       args.repeats)
        rows["transformers_fp32"] = transformers_speed(path, "float32", input_ids, short_ids, new_tokens,
                                                       args.repeats)
        settings = (("bf16", "bfloat16", None), ("fp32", "float32", None), ("int8", "float32", "int8"))
        for name, engine in (("plain", "transformers"), ("fast", "fast")):
            for label, dtype, quantize in settings:
                rows[f"mm_{name}_{label}"] = pipeline_speed(path, prompt, short_prompt, prompt_len, new_tokens,
                                                            args.repeats,
                                                            dtype=dtype, quantize=quantize, engine=engine,
                                                            threads=args.threads)
        result["speeds"] = rows
        mm_rows = {k: v for k, v in rows.items() if k.startswith("mm_")}
        best_decode = max(mm_rows, key=lambda k: mm_rows[k]["decode_tok_s"])
        best_prefill = max(mm_rows, key=lambda k: mm_rows[k]["prefill_tok_s"])
        tb, tf = rows["transformers_bf16"], rows["transformers_fp32"]
        result["fastest"] = {"decode_setting": best_decode, "prefill_setting": best_prefill,
                             "decode_tok_s": mm_rows[best_decode]["decode_tok_s"],
                             "prefill_tok_s": mm_rows[best_prefill]["prefill_tok_s"]}

        def ratio(a: float, b: float) -> float:
            return round(a / b, 3) if b else float("nan")

        result["ratios"] = {
            "fastest_decode_over_transformers_bf16": ratio(mm_rows[best_decode]["decode_tok_s"], tb["decode_tok_s"]),
            "fastest_decode_over_transformers_fp32": ratio(mm_rows[best_decode]["decode_tok_s"], tf["decode_tok_s"]),
            "fastest_decode_over_best_transformers": ratio(mm_rows[best_decode]["decode_tok_s"],
                                                           max(tb["decode_tok_s"], tf["decode_tok_s"])),
            "fastest_prefill_over_transformers_bf16": ratio(mm_rows[best_prefill]["prefill_tok_s"],
                                                            tb["prefill_tok_s"]),
            "fastest_prefill_over_best_transformers": ratio(mm_rows[best_prefill]["prefill_tok_s"],
                                                            max(tb["prefill_tok_s"], tf["prefill_tok_s"])),
            "plain_bf16_decode_over_transformers_bf16": ratio(rows["mm_plain_bf16"]["decode_tok_s"],
                                                              tb["decode_tok_s"]),
            "plain_fp32_decode_over_transformers_fp32": ratio(rows["mm_plain_fp32"]["decode_tok_s"],
                                                              tf["decode_tok_s"]),
            "plain_bf16_prefill_over_transformers_bf16": ratio(rows["mm_plain_bf16"]["prefill_tok_s"],
                                                               tb["prefill_tok_s"]),
            "plain_fp32_prefill_over_transformers_fp32": ratio(rows["mm_plain_fp32"]["prefill_tok_s"],
                                                               tf["prefill_tok_s"]),
            "fast_bf16_decode_over_transformers_bf16": ratio(rows["mm_fast_bf16"]["decode_tok_s"], tb["decode_tok_s"]),
            "fast_fp32_decode_over_transformers_fp32": ratio(rows["mm_fast_fp32"]["decode_tok_s"], tf["decode_tok_s"]),
            "int8_fast_decode_over_fp32_fast": ratio(rows["mm_fast_int8"]["decode_tok_s"],
                                                     rows["mm_fast_fp32"]["decode_tok_s"]),
            "int8_plain_decode_over_fp32_plain": ratio(rows["mm_plain_int8"]["decode_tok_s"],
                                                       rows["mm_plain_fp32"]["decode_tok_s"]),
        }
        agree_tokens = min(new_tokens, 32)
        result["greedy_agreement"] = {
            "prompts": len(AGREEMENT_PROMPTS), "tokens_per_prompt": agree_tokens,
            "fast_vs_transformers_bf16": agreement(path, agree_tokens, "bfloat16"),
            "fast_vs_transformers_fp32": agreement(path, agree_tokens, "float32"),
            "int8_fast_vs_fp32_transformers": agreement(path, agree_tokens, "float32", "int8",
                                                        ("float32", None, "transformers")),
            "teacher_forced_vs_fp32": {"bf16": logits_agreement(path, agree_tokens, "bfloat16", None),
                                       "int8": logits_agreement(path, agree_tokens, "float32", "int8")},
        }
        if not args.quick:
            big = write_checkpoint(Path(tmp) / "lfm2-1.2b", LFM2_1_2B)
            fastest = ("float32", "int8") if best_decode.endswith("int8") else (
                "bfloat16" if best_decode.endswith("bf16") else "float32", None)
            result["lfm2_1.2b"] = {}
            for dtype, quantize in dict.fromkeys([fastest, ("bfloat16", None)]):  # + the exact-token bf16 setting
                label = f"fast_{quantize or dtype}"
                result["lfm2_1.2b"][label] = {"dtype": dtype, "quantize": quantize, "engine": "fast",
                                              **streams_speed(big, dtype, quantize, new_tokens, 128)}
                gc.collect()
    json.dump(result, sys.stdout, indent=1)
    print()
    return result


if __name__ == "__main__":
    main()
