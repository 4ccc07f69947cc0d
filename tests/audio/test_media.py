"""Audio loading and validation (mm.media.audio) and silence splitting (mm.media.vad)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import soundfile as sf

from mm.errors import InputTooLargeError, InvalidInputError, MMError
from mm.media.audio import load_audio, resample
from mm.media.vad import split_at_silences


def tone(seconds=1.0, rate=16000, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg"])
def test_reads_formats_and_resamples(tmp_path, fmt):
    path = tmp_path / f"a.{fmt}"
    sf.write(str(path), tone(1.0, 44100), 44100)
    clip = load_audio(path)
    assert clip.sample_rate == 16000 and clip.samples.dtype == np.float32
    assert abs(len(clip.samples) - 16000) <= 1
    assert 0.3 < np.abs(clip.samples).max() < 0.7


def test_stereo_to_mono_file_and_array(tmp_path):
    left, right = tone(), tone(freq=880.0)
    path = tmp_path / "st.wav"
    sf.write(str(path), np.stack([left, right], 1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path).samples, (left + right) / 2, atol=1e-6)
    np.testing.assert_allclose(load_audio(np.stack([left, right]), 16000).samples, (left + right) / 2, atol=1e-6)
    np.testing.assert_allclose(load_audio((np.stack([left, right], 1), 16000)).samples, (left + right) / 2,
                               atol=1e-6)


def test_int16_and_bytes_and_tensor(tmp_path):
    import torch

    pcm = (tone() * 32767).astype(np.int16)
    np.testing.assert_allclose(load_audio(pcm, 16000).samples, pcm / 32768.0, atol=1e-7)
    path = tmp_path / "a.wav"
    sf.write(str(path), pcm, 16000)
    np.testing.assert_array_equal(load_audio(path.read_bytes()).samples, load_audio(path).samples)
    np.testing.assert_allclose(load_audio(torch.from_numpy(tone()), 16000).samples, tone(), atol=1e-7)


def test_resample_length():
    assert resample(tone(1.0, 24000), 24000, 16000).shape == (16000,)


def write(path, data):
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize(("make", "match"), [
    (lambda p: p / "missing.wav", "does not exist"),
    (lambda p: write(p / "empty.wav", b""), "empty"),
    (lambda p: write(p / "bad.wav", b"RIFF\x00\x00garbage" * 20), "could not be decoded"),
    (lambda p: write(p / "notes.txt", "hello, not audio"), "could not be decoded"),
    (lambda p: p, "is a directory"),
])
def test_bad_files(tmp_path, make, match):
    with pytest.raises(InvalidInputError, match=match):
        load_audio(make(tmp_path))


def test_bad_arrays():
    with pytest.raises(InvalidInputError, match="sample rate"):
        load_audio(tone())
    with pytest.raises(InvalidInputError, match="empty"):
        load_audio(np.zeros(0, np.float32), 16000)
    with pytest.raises(InvalidInputError, match="silent"):
        load_audio(np.zeros(16000, np.float32), 16000)
    with pytest.raises(InvalidInputError, match="NaN"):
        load_audio(np.full(100, np.nan, np.float32), 16000)
    with pytest.raises(InvalidInputError, match="numbers"):
        load_audio(np.array(["a", "b"]), 16000)
    with pytest.raises(InvalidInputError, match="1-D"):
        load_audio(np.zeros((2, 2, 2), np.float32), 16000)
    with pytest.raises(MMError):
        load_audio(None)


def test_too_long_is_rejected_not_cut():
    with pytest.raises(InputTooLargeError, match=r"3\.0 s long; the limit here is 2 s"):
        load_audio(tone(3.0), 16000, max_seconds=2)


def test_split_short_audio_is_one_piece():
    assert split_at_silences(tone(2.0), 16000, 30) == [(0, 32000)]


def test_split_long_speech_at_silences(input_wav):
    speech, _ = sf.read(str(input_wav), dtype="float32")  # 2 s of espeak speech
    gap = np.zeros(3 * 16000, np.float32)
    audio = np.concatenate([speech, gap] * 6)  # 30 s, speech every 5 s
    pieces = split_at_silences(audio, 16000, 8.0)
    assert len(pieces) == 3  # two 2-s utterances (7 s from first word to last) fit in each 8-s piece
    assert all(0 < end - start <= 8 * 16000 for start, end in pieces)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(pieces))
    for k in range(6):  # every spoken word lies inside one piece
        s, e = k * 5 * 16000 + 4000, k * 5 * 16000 + 28000
        assert any(start <= s and e <= end for start, end in pieces)


def test_split_without_speech_fails():
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(16000 * 12) * 1e-3).astype(np.float32)
    with pytest.raises(InvalidInputError, match="no speech"):
        split_at_silences(noise, 16000, 5.0)
