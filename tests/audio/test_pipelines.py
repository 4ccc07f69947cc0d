"""Speech pipelines: golden reproduction through the public API, streaming, multi-turn, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from mm.pipelines.speech import AudioChunk, Conversation

import mm
from mm.errors import InputTooLargeError, InvalidInputError, UnsupportedOptionError


@pytest.fixture(scope="session")
def s2s_seq(fixture_checkpoint):
    return mm.pipeline("speech-to-speech", model=fixture_checkpoint, dtype="float32", mode="sequential")


@pytest.fixture(scope="session")
def s2s_inter(fixture_checkpoint):
    return mm.pipeline("s2s", model=fixture_checkpoint, dtype="float32")


def test_pipelines_share_one_model(s2s_seq, s2s_inter):
    assert s2s_seq.bundle is s2s_inter.bundle


@pytest.mark.parametrize(("name", "prefix", "steps"), [("seq", "seq", 64), ("inter", "inter", 100)])
def test_s2s_reproduces_goldens(request, goldens, input_wav, name, prefix, steps):
    pipe = request.getfixturevalue(f"s2s_{name}")
    result = pipe(str(input_wav), max_new_tokens=steps)
    assert result.token_ids == goldens[f"{prefix}.text_tokens"].tolist()
    assert result.audio_codes.tolist() == goldens[f"{prefix}.mimi_codes"].T.tolist()
    assert result.sample_rate == 24000 and result.audio.dtype == np.float32 and result.audio.ndim == 1
    golden_wave = goldens[f"{prefix}.mimi_wave_full"].numpy()
    assert result.audio.shape == golden_wave.shape
    assert float(np.abs(result.audio - golden_wave).max()) < 1e-4  # streamed frame by frame vs official full
    assert result.stop_reason == ("eos" if name == "seq" else "max_new_tokens")
    assert result.timings["first_audio_s"] > 0
    assert result.usage["generated_tokens"] == len(goldens[f"{prefix}.modality"])  # every yield is one step
    assert result.usage["text_tokens"] == len(result.token_ids)
    assert result.usage["audio_input_tokens"] > 0 and result.usage["prompt_tokens"] > result.usage["audio_input_tokens"]
    assert all(isinstance(v, float) and k.endswith("_s") for k, v in result.timings.items())
    special = {7, 128, 130}
    visible = [t for t in result.token_ids if t not in special]
    assert result.text == pipe.bundle.tokenizer.decode(visible, skip_special_tokens=True)


def test_stream_matches_call(s2s_inter, goldens, input_wav):
    pieces = list(s2s_inter.stream(str(input_wav), max_new_tokens=40))
    result = s2s_inter(str(input_wav), max_new_tokens=40)
    chunks = [p for p in pieces if isinstance(p, AudioChunk)]
    text = "".join(p for p in pieces if isinstance(p, str))
    assert text == result.text
    assert all(c.samples.shape == (1920,) and c.sample_rate == 24000 for c in chunks)
    # the background decoder batches the frames that queued up (timing-dependent): equal up to float rounding
    np.testing.assert_allclose(np.concatenate([c.samples for c in chunks]), result.audio, atol=1e-5, rtol=0)
    # the first audio chunk comes before all the text is done: text and audio interleave
    kinds = ["a" if isinstance(p, AudioChunk) else "t" for p in pieces]
    assert kinds.index("a") < len(kinds) - 1 - kinds[::-1].index("t")


def test_multi_turn_conversation(s2s_inter, goldens, goldens_json, input_wav):
    conv = s2s_inter.conversation()
    first = s2s_inter(str(input_wav), max_new_tokens=100, conversation=conv)
    assert first.token_ids == goldens["inter.text_tokens"].tolist()
    h = conv.history
    h.add_turn("user", text=goldens_json["turn2"]["user2_text"])  # a text turn, as in the golden recipe
    h.new_turn("assistant")
    from mm.encoders.audio_generate import GenerationConfig, generate

    steps = list(generate(s2s_inter.bundle.model, h, GenerationConfig(max_new_tokens=40)))
    assert [s.token for s in steps if s.kind == "text"] == goldens["turn2.inter.text_tokens"].tolist()
    assert [list(s.codes) for s in steps if s.kind == "audio"] == goldens["turn2.inter.audio_frames"].tolist()


def test_conversation_grows(s2s_inter, input_wav):
    conv = s2s_inter.conversation()
    assert isinstance(conv, Conversation)
    s2s_inter(str(input_wav), max_new_tokens=5, conversation=conv)
    n1 = len(conv.history)
    s2s_inter(str(input_wav), max_new_tokens=5, conversation=conv)
    assert conv.turns == 2 and len(conv.history) > n1 + 26
    with pytest.raises(InvalidInputError, match="system_prompt"):
        s2s_inter(str(input_wav), conversation=conv, system_prompt="x")


def test_sampling_is_seeded(s2s_inter, input_wav):
    opts = {"max_new_tokens": 24, "do_sample": True, "temperature": 1.2, "audio_temperature": 1.0,
            "audio_top_k": 8}
    a = s2s_inter(str(input_wav), seed=1, **opts)
    b = s2s_inter(str(input_wav), seed=1, **opts)
    assert a.token_ids == b.token_ids and a.audio_codes.tolist() == b.audio_codes.tolist()
    greedy = s2s_inter(str(input_wav), max_new_tokens=24)
    c = s2s_inter(str(input_wav), seed=2, **opts)
    assert (a.token_ids, a.audio_codes.tolist()) != (greedy.token_ids, greedy.audio_codes.tolist()) or \
        (c.token_ids, c.audio_codes.tolist()) != (a.token_ids, a.audio_codes.tolist())


def test_options_are_checked(s2s_inter, input_wav, fixture_checkpoint):
    with pytest.raises(InvalidInputError, match="only apply when sampling"):
        s2s_inter(str(input_wav), audio_temperature=0.7)
    with pytest.raises(InvalidInputError, match="only apply when sampling"):
        s2s_inter(str(input_wav), temperature=0.7)
    with pytest.raises(UnsupportedOptionError):
        s2s_inter(str(input_wav), text_temperature=0.7)
    with pytest.raises(InvalidInputError, match="max_new_tokens"):
        s2s_inter(str(input_wav), max_new_tokens=0)
    with pytest.raises(InvalidInputError, match="top_k"):
        s2s_inter(str(input_wav), do_sample=True, audio_top_k=0)
    with pytest.raises(InvalidInputError, match="mode"):
        mm.pipeline("s2s", model=fixture_checkpoint, dtype="float32", mode="fast")
    with pytest.raises(UnsupportedOptionError):
        mm.pipeline("s2s", model=fixture_checkpoint, dtype="float32", voice="x")


def test_s2s_bad_input(s2s_inter, tmp_path):
    with pytest.raises(InputTooLargeError, match="limit here is 60 s"):
        s2s_inter((np.random.default_rng(0).standard_normal(16000 * 61).astype(np.float32) * 0.1, 16000))
    with pytest.raises(InvalidInputError, match="silent"):
        s2s_inter((np.zeros(16000, np.float32), 16000))
    with pytest.raises(InvalidInputError, match="empty"):
        s2s_inter((np.zeros(0, np.float32), 16000))
    bad = tmp_path / "x.wav"
    bad.write_bytes(b"not a wav at all" * 10)
    with pytest.raises(InvalidInputError, match="could not be decoded"):
        s2s_inter(str(bad))
    with pytest.raises(InvalidInputError, match="does not exist"):
        s2s_inter(str(tmp_path / "nope.wav"))


def test_s2s_batch_and_array(s2s_inter, input_wav, goldens):
    wave = goldens["input_waveform_16k"].numpy()
    results = s2s_inter([str(input_wav), (wave, 16000)], max_new_tokens=12)
    assert len(results) == 2 and results[0].token_ids == results[1].token_ids
    one = s2s_inter(wave, sampling_rate=16000, max_new_tokens=12)
    assert one.audio_codes.tolist() == results[0].audio_codes.tolist()
    assert len(s2s_inter([str(input_wav), str(input_wav)], max_new_tokens=3)) == 2  # a list of paths is a batch


def test_int8_runs(fixture_checkpoint, input_wav):
    pipe = mm.pipeline("s2s", model=fixture_checkpoint, dtype="float32", quantize="int8")
    result = pipe(str(input_wav), max_new_tokens=20)
    assert result.audio_codes.shape[1] == 8 and len(result.audio) == 1920 * len(result.audio_codes)
    with pytest.raises(InvalidInputError, match="int8"):
        mm.pipeline("s2s", model=fixture_checkpoint, dtype="bfloat16", quantize="int8")


def test_bfloat16_runs(fixture_checkpoint, input_wav):
    pipe = mm.pipeline("s2s", model=fixture_checkpoint, dtype="bfloat16")
    result = pipe(str(input_wav), max_new_tokens=20)
    assert result.audio.dtype == np.float32 and len(result.token_ids) + len(result.audio_codes) <= 20


# -- ASR / TTS on the factory checkpoint -----------------------------------------------------------


@pytest.fixture(scope="session")
def asr(tiny_audio):
    return mm.pipeline("asr", model=tiny_audio, dtype="float32")


@pytest.fixture(scope="session")
def tts(tiny_audio):
    return mm.pipeline("tts", model=tiny_audio, dtype="float32")


def test_asr_prompt_and_output(asr, input_wav):
    result = asr(str(input_wav), max_new_tokens=16)
    assert isinstance(result.text, str) and 0 < len(result.token_ids) <= 16
    assert len(result.segments) == 1 and result.segments[0].start == 0.0
    streamed = "".join(asr.stream(str(input_wav), max_new_tokens=16))
    assert streamed.strip() == result.text


def test_asr_long_audio_split(asr, input_wav):
    import soundfile as sf

    speech, _ = sf.read(str(input_wav), dtype="float32")
    audio = np.concatenate([speech, np.zeros(16000 * 3, np.float32)] * 8)  # 40 s > 30 s chunks
    result = asr((audio, 16000), max_new_tokens=4)
    assert len(result.segments) == 2
    assert result.segments[0].end <= result.segments[1].start
    assert all(seg.end - seg.start <= 30.0 for seg in result.segments)


def test_asr_rejects_audio_options(asr, input_wav):
    with pytest.raises(UnsupportedOptionError):
        asr(str(input_wav), audio_temperature=1.0)


def test_tts(tts):
    result = tts("Hello there, how are you?", max_new_tokens=30)
    assert len(tts(["One.", "Two."], max_new_tokens=3)) == 2
    assert result.sample_rate == 24000 and result.audio.dtype == np.float32
    assert len(result.audio) == 1920 * len(result.audio_codes)
    assert result.stop_reason in {"eos", "max_new_tokens"}
    with pytest.raises(InvalidInputError, match="empty"):
        tts("   ")
    with pytest.raises(InvalidInputError, match="voice"):
        tts("hi", voice="robot")
    with pytest.raises(InputTooLargeError):
        tts("a" * 5000)
    assert tts.system_prompt("UK female", None) == "Perform TTS. Use the UK female voice."


def test_tts_stops_at_end_of_audio(tiny_audio):
    """Force the audio path: with an always-128 text head the model starts speaking at once."""
    import torch

    tts = mm.pipeline("tts", model=tiny_audio, dtype="float32", engine="transformers")  # the generic head
    model = tts.bundle.model
    saved = model.text_logits
    model.text_logits = lambda hidden: torch.nn.functional.one_hot(torch.tensor(128), model.lfm.config.vocab_size).float()
    try:
        head = model.audio_head
        original = head.sample_frame
        calls = []

        def frames(hidden, settings, generator=None):
            calls.append(1)
            return [2048] * 8 if len(calls) == 5 else original(hidden, settings, generator)

        head.sample_frame = frames
        result = tts("Say it", max_new_tokens=50)
    finally:
        model.text_logits = saved
        del head.sample_frame
    assert result.stop_reason == "eos"
    assert result.token_ids == [128]
    assert len(calls) == 5 and len(result.audio) <= 4 * 1920


def replay_schedule(steps, n_text, n_audio):
    """The modality each interleaved step must have, replayed from the generated values."""
    mode, left, done, kinds = "t", n_text, False, []
    for step in steps:
        left -= 1
        kinds.append(mode)
        if mode == "t":
            done = done or step.token == 130
            if left == 0 or done:
                mode, left = "a", n_audio
        else:
            if left == 0 and not done:
                mode, left = "t", n_text
            if step.codes[0] == 2048:
                mode = "t"
    return kinds


def test_other_config_follows_schedule(tmp_path_factory):
    """A differently shaped checkpoint (another interleave schedule, depth/encoder sizes) loads and
    alternates text and audio blocks as its config says."""
    from mm.encoders.audio_generate import GenerationConfig, generate

    from mm.testing import make_tiny_lfm2_audio

    path = make_tiny_lfm2_audio(tmp_path_factory.mktemp("other"), seed=11, interleaved_n_text=3,
                                interleaved_n_audio=5, depthformer={"layers": 1, "dim": 128},
                                encoder={"n_layers": 1, "d_model": 32, "n_heads": 2})
    pipe = mm.pipeline("s2s", model=path, dtype="float32")
    wave = (np.sin(np.linspace(0, 3000, 16000)) * 0.3).astype(np.float32)
    history = pipe.bundle.new_history()
    history.add_turn("user", audio=wave)
    history.new_turn("assistant")
    steps = list(generate(pipe.bundle.model, history, GenerationConfig(max_new_tokens=24)))
    kinds = ["t" if s.kind == "text" else "a" for s in steps]
    assert kinds == replay_schedule(steps, 3, 5)[: len(kinds)]
    assert kinds[:3] == ["t", "t", "t"] and "a" in kinds
    result = pipe((wave, 16000), max_new_tokens=16)
    assert len(result.audio) == 1920 * len(result.audio_codes)


def test_engine_option(fixture_checkpoint, goldens, input_wav):
    """engine="transformers" (Lfm2Model's forward) and the default fast loop give the golden tokens; bad names fail."""
    plain = mm.pipeline("s2s", model=fixture_checkpoint, dtype="float32", engine="transformers")
    assert plain.engine == "transformers"
    result = plain(str(input_wav), max_new_tokens=100)
    assert result.token_ids == goldens["inter.text_tokens"].tolist()
    assert result.audio_codes.tolist() == goldens["inter.mimi_codes"].T.tolist()
    with pytest.raises(InvalidInputError, match="engine"):
        mm.pipeline("asr", model=fixture_checkpoint, dtype="float32", engine="warp")


def test_int4_backbone_runs_native(fixture_checkpoint, input_wav):
    """quantize="int4": the LFM2 backbone 4-bit (native kernel on decode steps), everything else int8."""
    from mm.kernels import available
    from mm.quant import Int4Linear

    pipe = mm.pipeline("s2s", model=fixture_checkpoint, dtype="float32", quantize="int4")
    model = pipe.bundle.model
    from mm.int8_linear import is_dynamic_int8
    from mm.quant import Int4DecodeLinear

    duals = [m for m in model.lfm.modules() if isinstance(m, Int4DecodeLinear)]
    assert duals and all(isinstance(d.int4, Int4Linear) and is_dynamic_int8(d.prefill) for d in duals)
    assert not any(isinstance(m, Int4Linear) for m in model.audio_head.modules())  # the depth loop stays int8
    result = pipe(str(input_wav), max_new_tokens=20)
    assert result.audio_codes.shape[1] == 8 and len(result.audio) == 1920 * len(result.audio_codes)
    assert (model.fast_backbone().native is not None) == available()
    with pytest.raises(InvalidInputError, match="int4"):
        mm.pipeline("s2s", model=fixture_checkpoint, dtype="bfloat16", quantize="int4")
