"""The shared app plumbing: limits, in-page errors, model slots, upload decoding."""

from __future__ import annotations

import logging

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
from mm.apps.common import (
    AppLimits,
    ModelSlot,
    check_new_tokens,
    check_text,
    load_audio,
    load_image,
    parse_size,
    status_html,
    user_errors,
)
from PIL import Image

from mm.errors import InputTooLargeError, InvalidInputError, ModelNotFoundError


def test_parse_size():
    assert parse_size("25mb") == 25 * 1024**2
    assert parse_size("512 KB") == 512 * 1024
    assert parse_size(1000) == 1000
    for bad in ("lots", "-1mb", 0, "5 parsecs"):
        with pytest.raises(InvalidInputError):
            parse_size(bad)


def test_status_html_escapes():
    assert "<script>" not in status_html("<script>alert(1)</script>", "error")
    with pytest.raises(ValueError):
        status_html("x", "fancy")


def test_user_errors_turns_mm_errors_into_page_messages():
    @user_errors
    def bad():
        raise InvalidInputError("the <question> is empty")

    with pytest.raises(gr.Error) as info:
        bad()
    assert info.value.message == "the &lt;question&gt; is empty"


def test_user_errors_hides_server_faults(caplog):
    @user_errors
    def broken(x):
        yield x
        raise KeyError("internal detail")

    with caplog.at_level(logging.ERROR), pytest.raises(gr.Error) as info:
        list(broken(1))
    assert "KeyError" in info.value.message and "server log" in info.value.message
    assert "internal detail" not in info.value.message and "Traceback" not in info.value.message
    assert any("internal detail" in (r.exc_text or "") for r in caplog.records)


def test_model_slot_missing_failing_and_ready():
    missing = ModelSlot("vqa", None, missing_hint="Pass --vqa-model DIR.")
    assert not missing.load() and "Pass --vqa-model DIR." in missing.error
    with pytest.raises(gr.Error, match="No vqa model"):
        missing.get()

    def fail():
        raise ModelNotFoundError("model '/x' not found")

    failing = ModelSlot("speech", fail)
    assert "mm-status-error" in failing.status() and "model '/x' not found" in failing.error

    calls = []
    slot = ModelSlot("search", lambda: calls.append(1) or "pipe", concurrency_limit=2)
    assert slot.get() == "pipe" and slot.get() == "pipe" and calls == [1]
    assert slot.event_options == {"concurrency_limit": 2, "concurrency_id": "model:search"}
    assert "search model ready" in slot.status()
    with pytest.raises(InvalidInputError):
        ModelSlot("x", None, concurrency_limit=0)


def test_load_image(tmp_path):
    limits = AppLimits(max_file_size="50kb", max_image_pixels=10_000)
    Image.new("RGBA", (40, 30), (1, 2, 3, 4)).save(tmp_path / "ok.png")
    img = load_image(str(tmp_path / "ok.png"), limits)
    assert img.mode == "RGB" and img.size == (40, 30)

    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(InvalidInputError, match=r"bad\.png could not be read as an image"):
        load_image(str(tmp_path / "bad.png"), limits)
    Image.new("RGB", (200, 100)).save(tmp_path / "huge.png")
    with pytest.raises(InputTooLargeError, match="200x100"):
        load_image(str(tmp_path / "huge.png"), limits)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InvalidInputError, match="not a supported image type"):
        load_image(str(tmp_path / "notes.txt"), limits)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InvalidInputError, match="empty"):
        load_image(str(tmp_path / "empty.png"), limits)
    (tmp_path / "big.png").write_bytes(b"\0" * 60_000)
    with pytest.raises(InputTooLargeError, match="limit"):
        load_image(str(tmp_path / "big.png"), limits)
    with pytest.raises(InvalidInputError, match="no image"):
        load_image(None, limits)
    with pytest.raises(InvalidInputError, match="no longer on the server"):
        load_image(str(tmp_path / "gone.png"), limits)


def test_load_audio(tmp_path):
    limits = AppLimits(max_audio_seconds=2.0)
    stereo = np.stack([np.full(8000, 0.5), np.full(8000, -0.1)], axis=1).astype(np.float32)
    sf.write(tmp_path / "st.wav", stereo, 8000)
    clip = load_audio(str(tmp_path / "st.wav"), limits, target_rate=16000)  # mixed to mono, resampled
    assert clip.sample_rate == 16000 and clip.samples.shape == (16000,) and clip.samples.dtype == np.float32
    assert np.allclose(clip.samples[2000:-2000], 0.2, atol=1e-3)

    sf.write(tmp_path / "long.wav", np.zeros(8000 * 3, np.float32), 8000)
    with pytest.raises(InputTooLargeError, match="3 s long"):
        load_audio(str(tmp_path / "long.wav"), limits, target_rate=16000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF\0\0\0\0WAVE" + b"junk" * 10)
    with pytest.raises(InvalidInputError, match=r"bad\.wav could not be read as audio"):
        load_audio(str(tmp_path / "bad.wav"), limits, target_rate=16000)
    sf.write(tmp_path / "quiet.wav", np.zeros(8000, np.float32), 8000)
    with pytest.raises(InvalidInputError, match=r"quiet\.wav: the audio is silent"):  # as the pipelines say
        load_audio(str(tmp_path / "quiet.wav"), limits, target_rate=16000)


def test_check_text_and_tokens():
    limits = AppLimits(max_text_chars=10, max_new_tokens=64)
    assert check_text("  hi ", "question", limits) == "hi"
    assert check_text("", "prompt", limits, required=False) == ""
    with pytest.raises(InvalidInputError, match="question is empty"):
        check_text("   ", "question", limits)
    with pytest.raises(InputTooLargeError):
        check_text("x" * 11, "question", limits)
    assert check_new_tokens(32.0, limits) == 32
    for bad in (0, 65, 2.5, "many", float("nan")):
        with pytest.raises(InvalidInputError):
            check_new_tokens(bad, limits)


def test_stream_in_thread_keeps_the_stream_on_one_thread():
    import threading

    from mm.apps.common import stream_in_thread

    lock = threading.RLock()  # released by the thread that took it, or RuntimeError
    seen = set()

    def locked_stream():
        with lock:
            for i in range(5):
                seen.add(threading.get_ident())
                yield i

    consumer = stream_in_thread(locked_stream)
    out = []
    for item in consumer:  # resume the consumer from different threads, as Gradio does
        out.append(item)
        if item == 1:
            t = threading.Thread(target=lambda: out.append(next(consumer)))
            t.start()
            t.join()
    assert out == [0, 1, 2, 3, 4] and len(seen) == 1


def test_stream_in_thread_propagates_errors_and_closes_early():
    from mm.apps.common import stream_in_thread

    def failing():
        yield 1
        raise InvalidInputError("bad audio")

    with pytest.raises(InvalidInputError, match="bad audio"):
        list(stream_in_thread(failing))

    closed = []

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append(True)

    consumer = stream_in_thread(endless)
    assert next(consumer) == 0
    consumer.close()
    assert closed == [True]


def test_load_image_applies_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[274] = 6  # rotate 90° clockwise to display
    Image.new("RGB", (40, 20), (10, 20, 30)).save(tmp_path / "phone.jpg", exif=exif)
    assert load_image(str(tmp_path / "phone.jpg"), AppLimits()).size == (20, 40)
