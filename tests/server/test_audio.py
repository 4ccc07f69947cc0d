"""Transcription and speech endpoints through the openai client."""

from __future__ import annotations

import io

import numpy as np
import pytest


def test_transcription_json_text_and_verbose(server, wav_bytes):
    client = server.client()
    model = server.models["speech"]
    result = client.audio.transcriptions.create(model=model, file=("hello.wav", wav_bytes, "audio/wav"))
    assert isinstance(result.text, str)
    text = client.audio.transcriptions.create(model=model, file=("hello.wav", wav_bytes), response_format="text")
    assert isinstance(text, str) and text == result.text
    verbose = client.audio.transcriptions.create(model=model, file=("hello.wav", wav_bytes),
                                                 response_format="verbose_json")
    assert verbose.text == result.text and verbose.duration == pytest.approx(1.0, abs=0.01)
    assert len(verbose.segments) == 1
    segment = verbose.segments[0]
    assert segment.start == 0 and segment.end == pytest.approx(1.0, abs=0.01)


def test_transcription_errors(server, wav_bytes):
    import openai

    client = server.client()
    with pytest.raises(openai.BadRequestError, match="response_format 'srt' is not supported"):
        client.audio.transcriptions.create(model=server.models["speech"], file=("a.wav", wav_bytes),
                                           response_format="srt")
    with pytest.raises(openai.BadRequestError, match="language"):
        client.audio.transcriptions.create(model=server.models["speech"], file=("a.wav", wav_bytes), language="en")
    with pytest.raises(openai.BadRequestError, match="audio"):
        client.audio.transcriptions.create(model=server.models["speech"], file=("a.wav", b"not audio at all" * 10))


def test_speech_streams_a_wav(server):
    import soundfile as sf

    client = server.client()
    with client.audio.speech.with_streaming_response.create(
            model=server.models["speech"], input="Hello from the tiny model.", voice="US female",
            response_format="wav") as response:
        assert response.headers["content-type"] == "audio/wav"
        pieces = list(response.iter_bytes())
    data = b"".join(pieces)
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == 24000 and samples.ndim == 1 and np.isfinite(samples).all()
    assert (len(data) - 44) % 2 == 0 and len(samples) == (len(data) - 44) // 2


def test_speech_rejects_unknown_voice_and_speed(server):
    import openai

    client = server.client()
    with pytest.raises(openai.BadRequestError, match="unknown voice 'alloy'"):
        client.audio.speech.create(model=server.models["speech"], input="Hi", voice="alloy")
    with pytest.raises(openai.BadRequestError, match=r"speed=1\.5"):
        client.audio.speech.create(model=server.models["speech"], input="Hi", voice="US male", speed=1.5)
