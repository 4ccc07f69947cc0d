"""How far int8 (``quantize="int8"``) greedy speech-to-speech agrees with float32, on the tiny checkpoints.

For the official-layout golden checkpoint (``../shared/fixtures/lfm2_audio_tiny``) and mm's factory
checkpoint, both modes, greedy, the fixture's input wav:

* free running: the int8 and float32 sequences side by side - the identical prefix (steps until the
  first difference) and how many steps / audio codes match position by position;
* teacher forced: along the float32 sequence, how often int8 picks the same next item (text token:
  argmax of the text head at that position; audio: each codebook's argmax given the float32 codes
  before it) - the per-step agreement, free of the compounding of one early difference.

Tiny random checkpoints have nearly flat logits, so this is a pessimistic bound; speed figures are in
``benchmarks/audio.py``. Prints one JSON object.

    python benchmarks/audio_int8_agreement.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO.parent / "shared" / "fixtures" / "lfm2_audio_tiny"


def _history(bundle, wav):
    history = bundle.new_history()
    history.add_turn("system", text="Respond with interleaved text and audio.")
    history.add_turn("user", audio=wav)
    history.new_turn("assistant")
    return history


def _sequence(bundle, wav, mode: str, steps: int):
    from mm.encoders.audio_generate import GenerationConfig, generate

    config = GenerationConfig(mode=mode, max_new_tokens=steps)
    return list(generate(bundle.model, _history(bundle, wav), config))


def _teacher_forced(bundle8, wav, steps) -> dict:
    """Agreement of int8's next-item choice along the float32 ``steps``."""
    from mm.encoders.audio_out_fast import fast_depth_loop

    history = _history(bundle8, wav)
    prompt = len(history)
    history.append(steps)
    model = bundle8.model
    with torch.inference_mode():
        hidden = model.lfm(inputs_embeds=history.embeddings(model)[None]).last_hidden_state[0]
    loop = fast_depth_loop(model.audio_head)
    text_same = text_n = code_same = code_n = 0
    for i, step in enumerate(steps):
        h = hidden[prompt - 1 + i]
        if step.kind == "text":
            text_n += 1
            text_same += int(model.text_logits(h).argmax()) == step.token
        elif step.codes[0] != 2048:
            logits = loop.frame_logits(h, list(step.codes))
            code_n += 8
            code_same += sum(int(logits[k].argmax()) == step.codes[k] for k in range(8))
    return {"text_tokens_same": f"{text_same}/{text_n}", "audio_codes_same": f"{code_same}/{code_n}"}


def main() -> None:
    sys.path.insert(0, str(REPO))
    warnings.simplefilter("ignore")
    from mm import runtime
    from mm.media.audio import load_audio
    from mm.models.lfm2_audio import LFM2Audio
    from mm.testing import make_tiny_lfm2_audio

    runtime.configure_torch(1)
    if not FIXTURE.is_dir():
        raise SystemExit(f"shared fixtures not found at {FIXTURE}")
    wav = load_audio(FIXTURE / "input.wav", target_rate=16000).samples
    checkpoints = {"official-layout golden fixture": FIXTURE / "checkpoint",
                   "mm factory (seed 3)": make_tiny_lfm2_audio(tempfile.mkdtemp(), seed=3)}
    report = {}
    for name, path in checkpoints.items():
        fp32 = LFM2Audio.load(path, dtype="float32")
        int8 = LFM2Audio.load(path, dtype="float32", quantize="int8")
        for mode, n in (("interleaved", 100), ("sequential", 64)):
            a, b = _sequence(fp32, wav, mode, n), _sequence(int8, wav, mode, n)
            prefix = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
            codes_a = [c for s in a if s.kind == "audio" for c in s.codes]
            codes_b = [c for s in b if s.kind == "audio" for c in s.codes]
            report[f"{name}, {mode}"] = {
                "steps_float32": len(a), "steps_int8": len(b), "identical_prefix_steps": prefix,
                "same_steps_by_position": sum(x == y for x, y in zip(a, b, strict=False)),
                "same_audio_codes_by_position": f"{sum(x == y for x, y in zip(codes_a, codes_b, strict=False))}"
                                                f"/{len(codes_a)}",
                "teacher_forced": _teacher_forced(int8, wav, a),
            }
    print(json.dumps({"benchmark": "int8 vs float32 greedy agreement, tiny LFM2-Audio checkpoints",
                      "threads": 1, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                      "load_average_1m": round(os.getloadavg()[0], 2), "results": report}, indent=1))


if __name__ == "__main__":
    main()
