"""The real-time parts of speech-to-speech: the lean depth loop, the int8 Mimi codec, the background decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mm.encoders.mimi import load_mimi
from mm.encoders.mimi_worker import BackgroundDecoder

import mm
from mm.errors import InvalidInputError, UnsupportedOptionError


def snr_db(reference: torch.Tensor, other: torch.Tensor) -> float:
    return float(10 * torch.log10(reference.pow(2).mean() / (reference - other).pow(2).mean()))


@pytest.fixture(scope="module")
def mimi_dir(tmp_path_factory):
    from mm.encoders.mimi import tiny_mimi_config, write_mimi_checkpoint

    directory = tmp_path_factory.mktemp("mimi_rt")
    write_mimi_checkpoint(directory, tiny_mimi_config(), seed=4)
    return directory


def test_int8_codec_is_close_to_float32_and_streams(mimi_dir):
    codes = torch.randint(0, 2048, (8, 6), generator=torch.Generator().manual_seed(1))
    fp32 = load_mimi(mimi_dir)
    int8 = load_mimi(mimi_dir, quantize="int8")
    assert int8 is not fp32 and int8.quantized == "int8" and fp32.quantized is None
    int8.seanet.quantize_int8(min_params=0)  # the tiny codec has no >= 1 M convolution: cover the int8 conv paths
    assert all(op.int8 is not None for op in int8.seanet._ops if op.weight.shape[-1] > 1 and op.groups == 1)
    ref, got = fp32.decode(codes), int8.decode(codes)
    assert snr_db(ref, got) > 20, snr_db(ref, got)  # measured 30-40 dB on this tiny codec
    stream = int8.stream()
    frames = torch.cat([stream.decode_frame(codes[:, t]) for t in range(codes.shape[1])])
    # activations are quantized per call, so frame by frame differs from one call by rounding: both stay close
    assert snr_db(fp32.decode(codes), frames) > 20


def test_int8_codec_needs_float32(mimi_dir):
    with pytest.raises(InvalidInputError, match="float32"):
        load_mimi(mimi_dir, dtype="bfloat16", quantize="int8")
    with pytest.raises(InvalidInputError, match="quantize"):
        load_mimi(mimi_dir, quantize="int4")


def test_background_decoder_batches_and_matches(mimi_dir):
    codec = load_mimi(mimi_dir)
    codes = torch.randint(0, 2048, (8, 9), generator=torch.Generator().manual_seed(2))
    with BackgroundDecoder(codec.stream(), max_batch=4) as worker:
        for t in range(9):
            worker.submit(tuple(codes[:, t].tolist()))
        frames = worker.finish()
        assert worker.poll() == []
    assert [f.codes for f in frames] == [tuple(codes[:, t].tolist()) for t in range(9)]
    wave = np.concatenate([f.samples for f in frames])
    assert np.abs(wave - codec.decode(codes).numpy()).max() < 1e-4
    assert 1 <= worker.calls <= 9 and worker.seconds > 0


def test_background_decoder_reports_errors(mimi_dir):
    codec = load_mimi(mimi_dir)
    with BackgroundDecoder(codec.stream()) as worker:
        worker.submit((2049,) * 8)
        with pytest.raises(InvalidInputError, match=r"0\.\.2047"):
            worker.finish()


def test_thread_and_inline_decoding_give_the_same_reply(tiny_audio):
    wave = np.sin(np.linspace(0, 2000, 16000)).astype("float32")
    inline = mm.pipeline("s2s", model=tiny_audio, dtype="float32", audio_decode="inline")
    thread = mm.pipeline("s2s", model=tiny_audio, dtype="float32")
    assert thread.audio_decode == "thread" and inline.audio_decode == "inline"
    a, b = inline((wave, 16000), max_new_tokens=30), thread((wave, 16000), max_new_tokens=30)
    assert a.audio.size > 0 and a.token_ids == b.token_ids
    assert np.array_equal(a.audio_codes, b.audio_codes)
    assert np.abs(a.audio - b.audio).max() < 1e-5
    pieces = [p for p in thread.stream((wave, 16000), max_new_tokens=30) if not isinstance(p, str)]
    assert [len(p.samples) for p in pieces] == [1920] * len(a.audio_codes)
    assert np.abs(np.concatenate([p.samples for p in pieces]) - a.audio).max() < 1e-5


def test_stopping_a_stream_early_ends_the_decoder_thread(tiny_audio):
    import threading

    wave = np.sin(np.linspace(0, 2000, 16000)).astype("float32")
    s2s = mm.pipeline("s2s", model=tiny_audio, dtype="float32")
    stream = s2s.stream((wave, 16000), max_new_tokens=60)
    for piece in stream:
        if not isinstance(piece, str):
            break
    stream.close()
    assert not [t for t in threading.enumerate() if t.name == "mm-mimi-decode"]


def test_audio_decode_option_is_checked(tiny_audio):
    with pytest.raises(InvalidInputError, match="audio_decode"):
        mm.pipeline("s2s", model=tiny_audio, dtype="float32", audio_decode="later")
    with pytest.raises(UnsupportedOptionError, match="audio_decode"):
        mm.pipeline("asr", model=tiny_audio, dtype="float32", audio_decode="thread")  # ASR decodes no audio


def test_fast_depth_loop_follows_weight_changes(tiny_audio):
    """The lean loop is rebuilt after quantization; int8 logits stay close to the generic int8 head's."""
    from mm.encoders.audio_out_fast import fast_depth_loop

    from mm.models.lfm2_audio import load_lfm2_audio, quantize_linears

    model = load_lfm2_audio(tiny_audio)
    head = model.audio_head
    hidden = torch.randn(model.hidden_size, generator=torch.Generator().manual_seed(0))
    loop = fast_depth_loop(head)
    assert fast_depth_loop(head) is loop and not loop.int8
    assert loop.sample_frame(hidden) == head.sample_frame(hidden)
    quantize_linears(model)
    loop8 = fast_depth_loop(head)
    assert loop8 is not loop and loop8.int8
    codes = head.sample_frame(hidden)
    ref, got = head.frame_logits(hidden, torch.tensor(codes)), loop8.frame_logits(hidden, codes)
    assert (ref - got).abs().max() < 0.1 * ref.abs().max()


def test_auto_dtype_is_measured(tiny_audio, monkeypatch):
    """dtype='auto' takes the dtype the micro-benchmark measured as faster (int8 keeps float32)."""
    from mm.encoders import audio_dtype

    choice = audio_dtype.fastest_dtype(hidden=64, prefill_rows=8, steps=2, repeats=1)
    costs = audio_dtype.measured_costs()[(64, 8, 2, 1)]
    assert set(costs) == {"float32", "bfloat16"} and all(v > 0 for v in costs.values())
    assert choice == getattr(torch, min(costs, key=costs.get))
    monkeypatch.setattr(audio_dtype, "fastest_dtype", lambda: torch.bfloat16)
    assert mm.pipeline("asr", model=tiny_audio).bundle.dtype == torch.bfloat16
    assert mm.pipeline("asr", model=tiny_audio, quantize="int8").bundle.dtype == torch.float32
    monkeypatch.setattr(audio_dtype, "fastest_dtype", lambda: torch.float32)
    assert mm.pipeline("asr", model=tiny_audio).bundle.dtype == torch.float32


def test_int8_audio_backbone_runs_fused_gated_mlps(tiny_audio):
    """quantize="int8" fuses the backbone's w1/w3 (mm.int8_linear); the depth transformer keeps its own SwiGLU."""
    from mm.int8_linear import FusedGatedMLP

    bundle = mm.pipeline("speech-to-speech", model=tiny_audio, quantize="int8").bundle
    assert all(isinstance(layer.feed_forward, FusedGatedMLP) for layer in bundle.model.lfm.layers)
