"""``mm s2s``, ``mm asr`` and ``mm tts`` end to end on tiny checkpoints, plus real espeak-ng speech."""

from __future__ import annotations

import pytest
import soundfile as sf

from mm.cli import main


def run(argv, capsys):
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, " ".join(out.err.split())  # rich wraps long lines


def test_s2s_cli(fixture_checkpoint, input_wav, tmp_path, capsys, goldens):
    out = tmp_path / "reply.wav"
    code, _stdout, stderr = run(["s2s", str(input_wav), "-o", str(out), "--model", str(fixture_checkpoint),
                                "--mode", "sequential", "--max-new-tokens", "64", "--dtype", "float32"], capsys)
    assert code == 0, stderr
    audio, rate = sf.read(str(out), dtype="float32")
    assert rate == 24000 and len(audio) == goldens["seq.mimi_wave_full"].numel()
    assert "wrote 0.72 s of audio" in stderr


def test_s2s_cli_stream(fixture_checkpoint, input_wav, tmp_path, capsys):
    out = tmp_path / "reply.wav"
    code, _stdout, stderr = run(["s2s", str(input_wav), "-o", str(out), "--model", str(fixture_checkpoint),
                                "--max-new-tokens", "30", "--stream", "--dtype", "float32"], capsys)
    assert code == 0, stderr
    assert out.is_file() and "[audio" in stderr
    import mm

    expected = mm.pipeline("s2s", model=fixture_checkpoint, dtype="float32")(str(input_wav), max_new_tokens=30)
    audio, rate = sf.read(str(out), dtype="float32")
    assert rate == 24000 and len(audio) == len(expected.audio) > 0
    assert abs(audio - expected.audio.clip(-1, 1)).max() < 1e-3  # 16-bit PCM, clipped to [-1, 1]


def test_stream_writes_audio_as_it_arrives(tmp_path):
    """Each chunk is in the file (header included) before the next one is generated."""
    import numpy as np
    from mm.pipelines.speech import AudioChunk

    from mm.cli.audio import _speak

    out = tmp_path / "live.wav"
    seen = []

    class Pipe:
        def stream(self, item, **options):
            for i in range(3):
                seen.append(sf.info(str(out)).frames if out.exists() else 0)
                yield AudioChunk(np.full(1920, 0.1 * i, np.float32), 24000, (0,) * 8)
                yield "word "

    _speak(Pipe(), "in.wav", {}, out, stream=True)
    assert seen == [0, 1920, 3840] and sf.info(str(out)).frames == 3 * 1920


def test_cli_errors_are_one_line(fixture_checkpoint, tmp_path, capsys):
    code, _, stderr = run(["s2s", str(tmp_path / "missing.wav"), "-o", str(tmp_path / "o.wav"), "--model",
                           str(fixture_checkpoint), "--dtype", "float32"], capsys)
    assert code == 2 and "error:" in stderr and "does not exist" in stderr and "Traceback" not in stderr
    code, _, stderr = run(["s2s", str(tmp_path), "-o", "o.wav", "--model", str(fixture_checkpoint),
                           "--mode", "fast"], capsys)
    assert code == 2 and "mode must be one of" in stderr


def test_asr_and_tts_cli(tiny_audio, input_wav, tmp_path, capsys):
    code, stdout, stderr = run(["asr", str(input_wav), "--model", str(tiny_audio), "--max-new-tokens", "8",
                                "--dtype", "float32"], capsys)
    assert code == 0, stderr
    import mm

    expected = mm.pipeline("asr", model=tiny_audio, dtype="float32")(str(input_wav), max_new_tokens=8).text
    assert stdout == expected + "\n"
    out = tmp_path / "speech.wav"
    code, _stdout, stderr = run(["tts", "Hello world", "-o", str(out), "--model", str(tiny_audio),
                                "--max-new-tokens", "12", "--voice", "US female", "--dtype", "float32"], capsys)
    assert code == 0, stderr
    assert out.is_file() and sf.info(str(out)).samplerate == 24000


@pytest.mark.slow
def test_real_speech_end_to_end(speech_wav, fixture_checkpoint, tiny_audio):
    """espeak-ng speech (22.05 kHz file) through resampling, features, encoder, generation and Mimi."""
    import mm
    from mm.media.audio import load_audio

    clip = load_audio(speech_wav)
    assert clip.sample_rate == 16000 and 1.5 < clip.duration < 6
    reply = mm.pipeline("s2s", model=fixture_checkpoint, dtype="float32")(str(speech_wav), max_new_tokens=30)
    assert len(reply.audio) == 1920 * len(reply.audio_codes) and reply.audio_codes.shape[1] == 8
    transcript = mm.pipeline("asr", model=tiny_audio, dtype="float32")(str(speech_wav), max_new_tokens=8)
    assert transcript.segments[0].end == pytest.approx(clip.duration, abs=0.01)
