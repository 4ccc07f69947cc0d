"""mm's LFM2-Audio reproduces the goldens of the official liquid-audio code (shared fixture)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mm.encoders.audio_generate import GenerationConfig, generate

from mm.media.audio import load_audio

SYSTEM = "Respond with interleaved text and audio."


def close(actual: torch.Tensor, golden: torch.Tensor, rtol: float = 1e-4) -> None:
    """Within ``rtol`` relative to the golden's largest magnitude (the README's acceptance rule)."""
    scale = float(golden.abs().max())
    diff = float((actual.float() - golden.float()).abs().max())
    assert actual.shape == golden.shape
    assert diff <= rtol * scale, f"max diff {diff:.3g} > {rtol} x {scale:.3g}"


def history(bundle, wav):
    clip = load_audio(wav)
    h = bundle.new_history()
    h.add_turn("system", text=SYSTEM)
    h.add_turn("user", audio=clip.samples)
    h.new_turn("assistant")
    return h


def run(bundle, h, mode, n, engine="auto"):
    hidden: list[torch.Tensor] = []
    steps = list(generate(bundle.model, h, GenerationConfig(mode=mode, max_new_tokens=n), hidden_states=hidden,
                          engine=engine))
    return steps, torch.stack(hidden)


def check_sequence(steps, hidden, goldens, prefix):
    text = [s.token for s in steps if s.kind == "text"]
    frames = [list(s.codes) for s in steps if s.kind == "audio"]
    assert text == goldens[f"{prefix}.text_tokens"].tolist()
    assert frames == goldens[f"{prefix}.audio_frames"].tolist()
    assert [1 if s.kind == "text" else 3 for s in steps] == goldens[f"{prefix}.modality"].tolist()
    close(hidden, goldens[f"{prefix}.step_hidden"])


def test_input_waveform(input_wav, goldens):
    clip = load_audio(input_wav)
    assert clip.sample_rate == 16000
    assert np.array_equal(clip.samples, goldens["input_waveform_16k"].numpy())


def test_mel(bundle, goldens):
    from mm.encoders.audio_in import log_mel

    mel = log_mel(bundle.feature_extractor, goldens["input_waveform_16k"].numpy())
    assert mel.shape == (201, 128)
    assert float((mel.T - goldens["mel"]).abs().max()) < 1e-4


def test_encoder_and_adapter(bundle, goldens):
    with torch.no_grad():
        enc = bundle.model.conformer(input_features=goldens["mel"].T[None]).last_hidden_state[0]
        close(enc, goldens["encoder_out"])
        close(bundle.model.audio_adapter(enc), goldens["adapter_out"])
        close(bundle.model.encode_audio(goldens["mel"].T), goldens["adapter_out"])


def test_prefill(bundle, goldens, goldens_json, input_wav):
    h = history(bundle, input_wav)
    assert h.text_ids == goldens["prefill_text_ids"].tolist() == goldens_json["chat"]["text_ids"]
    assert h.modality == goldens["prefill_modality_flag"].tolist()
    with torch.no_grad():
        emb = h.embeddings(bundle.model)
        close(emb, goldens["prefill_input_embeds"])
        hidden = bundle.model.lfm(inputs_embeds=goldens["prefill_input_embeds"][None]).last_hidden_state[0]
        close(hidden, goldens["prefill_last_hidden"])
        logits = bundle.model.text_logits(hidden)
        close(logits, goldens["prefill_text_logits"])
    assert int(logits[-1].argmax()) == goldens_json["prefill"]["first_greedy_text_token"]


@pytest.mark.parametrize("loop", ["generic", "fast", "native"])
def test_depth_frame(bundle, goldens, loop):
    """The generic depth head and its lean loop (FastDepthLoop, on torch's ops or mm's native kernels) all give the
    official frame and logits."""
    from mm.encoders.audio_out_fast import fast_depth_loop

    from mm import kernels

    if loop == "native" and not kernels.available():
        pytest.skip(f"native kernels: {kernels.unavailable_reason()}")
    head = bundle.model.audio_head if loop == "generic" else fast_depth_loop(bundle.model.audio_head,
                                                                             native=loop == "native")
    assert loop != "native" or head.native is not None
    last = goldens["prefill_last_hidden"][-1]
    with torch.no_grad():
        codes = head.sample_frame(last)
        assert codes == goldens["depth_frame_from_prefill.codes"].tolist()
        close(head.frame_logits(last, torch.tensor(codes)), goldens["depth_frame_from_prefill.logits"])
        emb = bundle.model.embed_frames(torch.tensor(codes)[:, None])[0]
    close(emb, goldens["depth_frame_from_prefill.audio_embedding_sum"])


@pytest.mark.parametrize("engine", ["native", "fast", "transformers"])
@pytest.mark.parametrize(("mode", "prefix", "steps"), [("sequential", "seq", 64), ("interleaved", "inter", 100)])
def test_generation(bundle, goldens, input_wav, mode, prefix, steps, engine):
    """Both backbone engines (mm's fast decode loop and Lfm2Model's forward) reproduce the official loop."""
    got, hidden = run(bundle, history(bundle, input_wav), mode, steps, engine)
    check_sequence(got, hidden, goldens, prefix)


def test_turn2(bundle, goldens, goldens_json, input_wav):
    h = history(bundle, input_wav)
    steps, _ = run(bundle, h, "interleaved", 100)
    h.append(steps)
    h.end_turn()
    h.add_turn("user", text=goldens_json["turn2"]["user2_text"])
    h.new_turn("assistant")
    assert h.text_ids == goldens["turn2.prefill_text_ids"].tolist()
    assert h.modality == goldens["turn2.prefill_modality_flag"].tolist()
    assert torch.tensor(h.audio_out).T.tolist() == goldens["turn2.prefill_audio_out"].tolist()
    with torch.no_grad():
        emb = h.embeddings(bundle.model)
        close(emb, goldens["turn2.prefill_input_embeds"])
        hidden = bundle.model.lfm(inputs_embeds=emb[None]).last_hidden_state[0]
    close(hidden, goldens["turn2.prefill_last_hidden"])
    close(bundle.model.text_logits(hidden[-1]), goldens["turn2.prefill_last_logits"])
    got, hidden2 = run(bundle, h, "interleaved", 40)
    check_sequence(got, hidden2, goldens, "turn2.inter")


def test_max_new_tokens_counts_steps(bundle, input_wav):
    got, hidden = run(bundle, history(bundle, input_wav), "interleaved", 7)
    assert len(got) == 7 == len(hidden)
