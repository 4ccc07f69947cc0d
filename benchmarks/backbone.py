"""Backbone speed: mm's decode against llama.cpp (and prefill against transformers), same run, same CPU.

Full-size LFM2-350M with random weights (speed does not depend on weight values), written to a temp
directory with a tokenizer like a real checkpoint. When ``llama-cpp-python`` is installed (``pip install
'mm[bench]'``, built from source with ``CMAKE_ARGS="-DGGML_NATIVE=ON"``), the checkpoint is converted with
llama.cpp's own ``convert_hf_to_gguf.py`` from that package's source distribution (bf16, q8_0; q4_0 through
``llama_model_quantize``) and both engines are timed alternating, best of N, on the same token ids. Prints
ONE JSON object::

    python benchmarks/backbone.py                      # everything (llama.cpp when installed)
    python benchmarks/backbone.py --llama-cpp-source DIR   # an unpacked llama-cpp-python sdist (else downloaded)
    python benchmarks/backbone.py --quick              # fewer repeats, no greedy-agreement part
    python benchmarks/backbone.py --prefill-sweep 16,64,512 --settings bf16   # only prefill, per prompt length

Decode tokens/s = (N - 1) / (t(N new) - t(1 new)) after a 16-token prompt (llama-bench's tg split), prefill
tokens/s = prompt / t(1 new) on a 512-token prompt. Achieved GB/s = weight bytes read per decode step x
tokens/s, next to the machine's measured memory bandwidth. Batched decode: aggregate tokens/s for 1, 4, 8
streams. The run records CPU capability, threads, load average and CPU time, since the machine may be shared.
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

#: mm settings timed: label -> (dtype, quantize); llama.cpp types they face (same bits per weight class)
MM_SETTINGS = {"bf16": ("bfloat16", None), "int8": ("float32", "int8"), "int4": ("bfloat16", "int4")}
LLAMA_TYPES = {"bf16": "bf16", "int8": "q8_0", "int4": "q4_0"}

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


def agreement(path: Path, new_tokens: int, dtype: str, quantize: str | None = None,
              reference: tuple[str, str | None, str] | None = None, engine: str = "fast") -> float:
    """Share of greedy tokens (position by position) equal between two (dtype, quantize, engine) settings."""
    from mm.backbone import Backbone, GenerationSettings

    settings = GenerationSettings(max_new_tokens=new_tokens)
    convs = [[{"role": "user", "content": p}] for p in AGREEMENT_PROMPTS]

    def rows(dt: str, q: str | None, engine: str) -> list[list[int]]:
        bb = Backbone.load(path, dtype=dt, quantize=q)
        return [bb.generate(bb.encode_chat([c]), settings, engine=engine)[0] for c in convs]

    mine = rows(dtype, quantize, engine)
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


def memory_bandwidth(threads: int, megabytes: int = 512, repeats: int = 5) -> dict[str, float]:
    """Best-of-N read bandwidth (an fp32 sum over a buffer far larger than the caches) and copy bandwidth, GB/s."""
    import torch

    src = torch.ones(megabytes * 2**20 // 4)
    dst = torch.empty_like(src)
    read = timed(lambda: src.sum(), repeats)
    copy = timed(lambda: dst.copy_(src), repeats)
    return {"read_gb_s": round(src.nbytes / read / 1e9, 2), "copy_gb_s": round(2 * src.nbytes / copy / 1e9, 2),
            "buffer_mb": megabytes, "threads": threads}


def decode_bytes(model: Any) -> int:
    """Bytes of weights one decode step reads: every linear layer (LM head included), norms and conv filters.

    The token embedding is a lookup (one row per token), so it counts only when tied to the LM head.
    """
    import torch

    from mm.quant import Int4Linear

    total = 0
    for module in model.modules():
        if isinstance(module, Int4Linear):
            total += module.nbytes()
        elif type(module).__name__ == "Linear" and hasattr(module, "_packed_params"):  # dynamic int8
            weight = module.weight()
            total += weight.numel() + 8 * weight.shape[0]  # int8 codes + per-row scale/zero
        elif type(module) is torch.nn.Linear:
            total += module.weight.nbytes
        elif isinstance(module, torch.nn.Conv1d | torch.nn.LayerNorm) or type(module).__name__.endswith("RMSNorm"):
            total += sum(p.nbytes for p in module.parameters(recurse=False))
    return total


# -- llama.cpp ---------------------------------------------------------------------------------------------
def llama_cpp_source(explicit: str | None, workdir: Path) -> Path:
    """The ``vendor/llama.cpp`` tree of the installed llama-cpp-python's own source distribution."""
    import subprocess
    import tarfile
    from importlib.metadata import version

    if explicit:
        root = Path(explicit)
    else:
        ver = version("llama-cpp-python")
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mm" / f"llama-cpp-python-{ver}"
        root = cache / f"llama_cpp_python-{ver}"
        if not root.exists():
            cache.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                            "--no-binary", ":all:", f"llama-cpp-python=={ver}", "-d", str(cache)], check=True,
                           capture_output=True)
            with tarfile.open(next(cache.glob("llama_cpp_python-*.tar.gz"))) as tar:
                tar.extractall(cache, filter="data")
    tree = root / "vendor" / "llama.cpp" if (root / "vendor").exists() else root
    if not (tree / "convert_hf_to_gguf.py").exists():
        raise SystemExit(f"no convert_hf_to_gguf.py under {tree}")
    return tree


#: runs llama.cpp's converter with the pre-tokenizer check answered "lfm2" (the locally trained tokenizer's
#: hash is not in its table; the real LFM2 tokenizer maps to "lfm2")
_CONVERT = """
import runpy, sys
tree = sys.argv.pop(1)
sys.path[:0] = [tree, tree + "/gguf-py"]
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "lfm2"
sys.argv[0] = tree + "/convert_hf_to_gguf.py"
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def convert_gguf(checkpoint: Path, tree: Path, out_dir: Path) -> dict[str, Path]:
    """bf16 and q8_0 GGUFs from llama.cpp's converter, q4_0 quantized from bf16 by ``llama_model_quantize``."""
    import subprocess

    import llama_cpp

    files: dict[str, Path] = {}
    for outtype in ("bf16", "q8_0"):
        files[outtype] = out_dir / f"lfm2-{outtype}.gguf"
        subprocess.run([sys.executable, "-c", _CONVERT, str(tree), str(checkpoint), "--outtype", outtype,
                        "--outfile", str(files[outtype])], check=True, capture_output=True)
    files["q4_0"] = out_dir / "lfm2-q4_0.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    params.nthread = 2
    if llama_cpp.llama_model_quantize(str(files["bf16"]).encode(), str(files["q4_0"]).encode(), params) != 0:
        raise SystemExit("llama_model_quantize failed for q4_0")
    return files


class LlamaCppEngine:
    """One GGUF loaded in llama-cpp-python; ``run(ids, n)`` = prompt eval + ``n`` greedy tokens, cache cleared."""

    def __init__(self, path: Path, threads: int, context: int) -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(path), n_threads=threads, n_threads_batch=threads, n_ctx=context,
                         n_batch=512, verbose=False)
        self.bytes = path.stat().st_size

    def run(self, ids: list[int], n: int) -> list[int]:
        self.llm.reset()
        out = []
        for token in self.llm.generate(ids, top_k=1, temp=0.0, reset=True):
            out.append(token)
            if len(out) == n:
                break
        return out


class MmEngine:
    """mm's decode loop (``Backbone.generate(engine=...)``: ``native`` kernels or ``fast`` = torch's ops) on ids."""

    def __init__(self, path: Path, dtype: str, quantize: str | None, engine: str = "native") -> None:
        from mm.backbone import Backbone

        self.bb = Backbone.load(path, dtype=dtype, quantize=quantize)
        self.bytes = decode_bytes(self.bb.model)
        self.engine = engine

    def run(self, ids: list[int], n: int) -> list[int]:
        import torch

        from mm.backbone import GenerationSettings

        inputs = {"input_ids": torch.tensor([ids])}
        return self.bb.generate(inputs, GenerationSettings(max_new_tokens=n), engine=self.engine)[0]


def alternate_decode(engines: dict[str, Any], ids: list[int], new_tokens: int, repeats: int) -> dict[str, Any]:
    """Decode tokens/s per engine, engines interleaved within every repeat; best (lowest) time per figure."""
    best = {name: {1: float("inf"), new_tokens: float("inf")} for name in engines}
    for engine in engines.values():
        engine.run(ids, 4)  # warm-up
    for _ in range(repeats):
        for n in (1, new_tokens):
            for name, engine in engines.items():
                t0 = time.perf_counter()
                got = engine.run(ids, n)
                best[name][n] = min(best[name][n], time.perf_counter() - t0)
                if len(got) != n:
                    raise SystemExit(f"{name} generated {len(got)} tokens instead of {n}")
    out = {}
    for name, engine in engines.items():
        tok_s = (new_tokens - 1) / max(best[name][new_tokens] - best[name][1], 1e-9)
        out[name] = {"decode_tok_s": round(tok_s, 2), "weight_mb_per_token": round(engine.bytes / 1e6, 1),
                     "achieved_gb_s": round(engine.bytes * tok_s / 1e9, 2)}
        print(f"progress: {name} {out[name]}", file=sys.stderr, flush=True)
    return out


def streams_speed(path: Path, dtype: str, quantize: str | None, new_tokens: int,
                  prompt_len: int) -> dict[str, Any]:
    """Aggregate decode tokens/s for 1, 4 and 8 streams batched through the fast engine's step + LM head."""
    import torch

    from mm.backbone import Backbone

    fast = Backbone.load(path, dtype=dtype, quantize=quantize).fast()
    out: dict[str, Any] = {"dtype": dtype, "quantize": quantize, "prompt_tokens": prompt_len,
                           "decode_steps": new_tokens}
    for streams in (1, 4, 8):
        state = fast.prefill(torch.randint(20, 2000, (streams, prompt_len)), max_new_tokens=new_tokens + 4)
        tokens = fast.logits(state.hidden).argmax(-1)
        for _ in range(3):  # warm-up steps
            tokens = fast.logits(fast.step(state, tokens)).argmax(-1)
        start = time.perf_counter()
        for _ in range(new_tokens):
            tokens = fast.logits(fast.step(state, tokens)).argmax(-1)
        per_stream = new_tokens / (time.perf_counter() - start)
        out[f"{streams}_streams"] = {"per_stream_tok_s": round(per_stream, 2),
                                     "aggregate_tok_s": round(per_stream * streams, 2)}
        print(f"progress: {streams} streams {out[f'{streams}_streams']}", file=sys.stderr, flush=True)
    return out


def step_cpu_time(path: Path, dtype: str, quantize: str | None, steps: int = 20) -> dict[str, float]:
    """CPU time of one decode step (backbone + LM head + argmax) in the calling thread, best of ``steps``.

    With ``--threads 1`` this is the work per token independent of other processes on a shared machine
    (wall time there measures the scheduler); bytes / CPU time is what one core streams.
    """
    import torch

    from mm.backbone import Backbone

    bb = Backbone.load(path, dtype=dtype, quantize=quantize)
    fast = bb.fast()
    state = fast.prefill(torch.randint(20, 2000, (1, DECODE_PROMPT_TOKENS)), max_new_tokens=steps + 4)
    tokens = fast.logits(state.hidden).argmax(-1)
    best = float("inf")
    for _ in range(steps):
        start = time.thread_time()
        tokens = fast.logits(fast.step(state, tokens)).argmax(-1)
        best = min(best, time.thread_time() - start)
    nbytes = decode_bytes(bb.model)
    out = {"cpu_ms_per_token": round(best * 1e3, 1), "weight_mb_per_token": round(nbytes / 1e6, 1),
           "gb_s_per_cpu_second": round(nbytes / best / 1e9, 2)}
    print(f"progress: step {dtype} {quantize} {out}", file=sys.stderr, flush=True)
    return out


def prefill_speed(path: Path, dtype: str, quantize: str | None, prompts: dict[int, Any],
                  repeats: int) -> dict[str, Any]:
    """Prefill tokens/s of transformers' ``generate`` (1 new token) against mm's default engine, per prompt length.

    Both engines alternate within every repeat (best of ``repeats``); the load average is taken per length.
    mm's prefill runs bf16 products in float32 where measured faster here (``mm.bf16_prefill``): its one-time
    calibration is timed on its own (``upcast_calibration_s``) and its per-shape crossovers are recorded.
    """
    import torch

    from mm.backbone import Backbone, GenerationSettings

    bb = Backbone.load(path, dtype=dtype, quantize=quantize)
    settings = GenerationSettings(max_new_tokens=1)
    start = time.perf_counter()
    crossovers = bb.fast("auto").upcast.describe()  # measures each product shape once (cached per process)
    out: dict[str, Any] = {"mm_engine": bb.resolve_engine(settings), "upcast_calibration_s": round(time.perf_counter() - start, 2),
                           "upcast_crossover_rows": {k: (v if v != float("inf") else "never")
                                                     for k, v in crossovers.items()}}
    for length, ids in prompts.items():
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        runs = {"transformers": lambda inputs=inputs: bb.generate(inputs, settings, engine="transformers"),
                "mm": lambda inputs=inputs: bb.generate(inputs, settings, engine="auto")}
        best = dict.fromkeys(runs, float("inf"))
        for fn in runs.values():
            fn()
        for _ in range(repeats):
            for name, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)
        row = {f"{name}_prefill_tok_s": round(ids.shape[1] / t, 2) for name, t in best.items()}
        row["mm_over_transformers"] = round(best["transformers"] / best["mm"], 3)
        row["prompt_tokens"] = int(ids.shape[1])
        row["load_average"] = os.getloadavg()
        out[str(length)] = row
        print(f"progress: prefill {dtype} {quantize} {length} {row}", file=sys.stderr, flush=True)
    return out


def prefill_sweep(path: Path, labels: list[str], prompts: dict[int, Any], repeats: int) -> dict[str, Any]:
    """``--prefill-sweep``: prefill tok/s of mm and transformers per setting and prompt length."""
    return {label: prefill_speed(path, *MM_SETTINGS[label], prompts, repeats)
            for label in labels if MM_SETTINGS[label][1] != "int4"}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="no greedy-agreement or prefill part; best of 2 "
                        "unless --repeats")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=512, help="prefill prompt length")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=None, help="best of N timings per figure (default 3; --quick 2)")
    parser.add_argument("--settings", default=",".join(MM_SETTINGS), help="mm settings to time: bf16,int8,int4")
    parser.add_argument("--step-cpu-time", action="store_true",
                        help="only the CPU time per decode step of each mm setting (use with --threads 1)")
    parser.add_argument("--prefill-sweep", default=None, metavar="N,N,...",
                        help="only prefill: mm vs transformers tok/s at these prompt lengths (e.g. 16,64,512)")
    parser.add_argument("--no-llama-cpp", action="store_true", help="skip llama.cpp even when installed")
    parser.add_argument("--no-torch-ops", action="store_true",
                        help="skip the rows of mm's loop on torch's ops (engine='fast'; the pre-native engine)")
    parser.add_argument("--llama-cpp-source", default=None,
                        help="unpacked llama-cpp-python sdist (default: pip download of the installed version)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 3)
    labels = [s for s in args.settings.split(",") if s]
    if unknown := set(labels) - set(MM_SETTINGS):
        parser.error(f"unknown --settings {sorted(unknown)}; valid: {','.join(MM_SETTINGS)}")
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import importlib.util

    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from mm import runtime

    hf_logging.set_verbosity_error()
    runtime.configure_torch(args.threads)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result: dict[str, Any] = {
        "model": "LFM2-350M (random weights)", "threads": torch.get_num_threads(), "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_native_bf16": runtime.cpu_has_fast_bf16(),
        "cpus": os.cpu_count(), "load_average_start": os.getloadavg(), "new_tokens": args.new_tokens,
        "repeats": repeats, "memory_bandwidth": memory_bandwidth(args.threads),
    }
    from mm import kernels

    mm_engine = "native" if kernels.available() else "fast"
    result["mm_engine"] = mm_engine if kernels.available() else f"fast ({kernels.unavailable_reason()})"
    have_llama = importlib.util.find_spec("llama_cpp") is not None and not args.no_llama_cpp
    with tempfile.TemporaryDirectory(prefix="mm-bench-backbone-") as tmp:
        path = write_checkpoint(Path(tmp) / "lfm2-350m", LFM2_350M)
        tokenizer = AutoTokenizer.from_pretrained(str(path))

        def encode(text: str) -> Any:
            return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                 return_tensors="pt", return_dict=True)["input_ids"]

        if args.prefill_sweep:
            lengths = [int(n) for n in args.prefill_sweep.split(",") if n]
            prompts = {n: torch.randint(20, 2000, (1, n), generator=torch.Generator().manual_seed(n))
                       for n in lengths}
            result["prefill_sweep"] = prefill_sweep(path, labels, prompts, repeats)
            return emit(result, cpu0, wall0)
        if args.step_cpu_time:
            result["decode_step_cpu_time"] = {label: step_cpu_time(path, *MM_SETTINGS[label]) for label in labels}
            result["load_average_end"] = os.getloadavg()
            json.dump(result, sys.stdout, indent=1)
            print()
            return result
        short_ids = encode(long_prompt(tokenizer, DECODE_PROMPT_TOKENS))[0].tolist()
        result["decode_prompt_tokens"] = len(short_ids)
        engines: dict[str, Any] = {}
        for label in labels:
            engines[f"mm_{label}"] = MmEngine(path, *MM_SETTINGS[label], engine=mm_engine)
            if not args.no_torch_ops and mm_engine == "native":
                engines[f"mm_{label}_torch_ops"] = MmEngine(path, *MM_SETTINGS[label], engine="fast")
        if have_llama:
            import llama_cpp

            tree = llama_cpp_source(args.llama_cpp_source, Path(tmp))
            ggufs = convert_gguf(path, tree, Path(tmp))
            result["llama_cpp"] = {"version": llama_cpp.__version__,
                                   "system_info": llama_cpp.llama_print_system_info().decode().strip()}
            for label in labels:
                kind = LLAMA_TYPES[label]
                engines[f"llama_cpp_{kind}"] = LlamaCppEngine(ggufs[kind], args.threads,
                                                              len(short_ids) + args.new_tokens + 8)
        else:
            result["llama_cpp"] = "not installed (pip install 'mm[bench]')" if not args.no_llama_cpp else "skipped"
        result["decode"] = alternate_decode(engines, short_ids, args.new_tokens, repeats)
        if have_llama:
            result["ratios_mm_over_llama_cpp"] = {
                label: round(result["decode"][f"mm_{label}"]["decode_tok_s"]
                             / result["decode"][f"llama_cpp_{LLAMA_TYPES[label]}"]["decode_tok_s"], 3)
                for label in labels}
        engines.clear()
        gc.collect()
        if not args.quick:
            long_ids = encode(long_prompt(tokenizer, args.prompt_tokens))
            result["prefill_prompt_tokens"] = int(long_ids.shape[1])
            result["prefill"] = prefill_sweep(path, labels, {args.prompt_tokens: long_ids}, repeats)
            agree_tokens = min(args.new_tokens, 32)
            result["greedy_agreement"] = {
                "prompts": len(AGREEMENT_PROMPTS), "tokens_per_prompt": agree_tokens,
                "fast_vs_transformers_bf16": agreement(path, agree_tokens, "bfloat16"),
                f"{mm_engine}_vs_transformers_bf16": agreement(path, agree_tokens, "bfloat16", engine=mm_engine),
                f"{mm_engine}_vs_transformers_fp32": agreement(path, agree_tokens, "float32", engine=mm_engine),
                f"int8_{mm_engine}_vs_fp32_transformers": agreement(
                    path, agree_tokens, "float32", "int8", ("float32", None, "transformers"), engine=mm_engine),
                f"int4_{mm_engine}_vs_fp32_transformers": agreement(
                    path, agree_tokens, "bfloat16", "int4", ("float32", None, "transformers"), engine=mm_engine),
                "teacher_forced_vs_fp32": {
                    "bf16": logits_agreement(path, agree_tokens, "bfloat16", None),
                    "int8": logits_agreement(path, agree_tokens, "float32", "int8"),
                    "int4": logits_agreement(path, agree_tokens, "bfloat16", "int4")},
            }
        streams_label = "int8" if "int8" in labels else labels[0]
        result["batched_decode"] = streams_speed(path, *MM_SETTINGS[streams_label], 32, 16)
    return emit(result, cpu0, wall0)


def emit(result: dict[str, Any], cpu0: float, wall0: float) -> dict[str, Any]:
    """Add the end load average and the run's CPU and wall seconds to ``result``, print it as JSON, return it."""
    result["load_average_end"] = os.getloadavg()
    result["cpu_time_s"] = round(time.process_time() - cpu0, 1)
    result["wall_time_s"] = round(time.perf_counter() - wall0, 1)
    json.dump(result, sys.stdout, indent=1)
    print()
    return result


if __name__ == "__main__":
    main()
