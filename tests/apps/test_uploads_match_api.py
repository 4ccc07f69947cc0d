"""An upload reaches the model exactly as the same file does through ``mm.pipeline``.

Awkward files (a 16-bit grayscale PNG, a CMYK JPEG, an EXIF-rotated JPEG, a 24-bit WAV, a
stereo 48 kHz FLAC) are uploaded to the served apps through the Gradio client and passed to
the pipelines directly; what the model receives is recorded at its boundary (the pixel
values handed to LFM2-VL's vision tower, the samples handed to LFM2-Audio's feature
extractor) and must be identical.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

QUESTION = "What is in the picture?"
MAX_NEW = 2


class ModelInputs:
    """Records what a transformers method receives (class-level, so it sees every pipeline and thread)."""

    def __init__(self, monkeypatch, cls, method: str, take) -> None:
        self.calls: list = []
        self._lock = threading.Lock()
        original = getattr(cls, method)

        def recording(obj, *args, **kwargs):
            with self._lock:
                self.calls.append(take(*args, **kwargs))
            return original(obj, *args, **kwargs)

        monkeypatch.setattr(cls, method, recording)

    def take_all(self) -> list:
        with self._lock:
            calls, self.calls = self.calls, []
        return calls


# -- files -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("awkward_images")
    y, x = np.mgrid[0:48, 0:80]
    gray16 = (x * 65535 // 79).astype(np.uint16)  # a 16-bit ramp: mean 32,767 = 127.5 in 8 bits
    Image.fromarray(gray16, mode="I;16").save(root / "gray16.png")
    cmyk = np.stack([x * 3, y * 5, (x + y) * 2, np.full_like(x, 40)], axis=-1).astype(np.uint8)
    Image.fromarray(cmyk, mode="CMYK").save(root / "cmyk.jpg", quality=95)
    exif = Image.Exif()
    exif[274] = 6  # stored sideways: rotate 90 degrees clockwise to display
    rgb = np.stack([x * 3, y * 5, np.full_like(x, 90)], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(root / "rotated.jpg", exif=exif, quality=95)
    return {"gray16": root / "gray16.png", "cmyk": root / "cmyk.jpg", "rotated": root / "rotated.jpg"}


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory):
    import soundfile as sf

    root = tmp_path_factory.mktemp("awkward_audio")
    t = np.arange(int(0.8 * 44100)) / 44100
    sf.write(root / "pcm24.wav", 0.4 * np.sin(2 * np.pi * 330 * t), 44100, subtype="PCM_24")
    t = np.arange(int(0.9 * 48000)) / 48000
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 550 * t)], axis=1)
    sf.write(root / "stereo48k.flac", stereo, 48000, subtype="PCM_16")
    return {"pcm24": root / "pcm24.wav", "stereo48k": root / "stereo48k.flac"}


def test_the_files_are_what_they_claim(images, audio_files):
    import soundfile as sf
    from PIL import Image

    modes = {name: Image.open(path).mode for name, path in images.items()}
    assert modes["gray16"].startswith("I;16") and modes["cmyk"] == "CMYK"
    assert Image.open(images["rotated"]).getexif()[274] == 6
    assert sf.info(str(audio_files["pcm24"])).subtype == "PCM_24"
    info = sf.info(str(audio_files["stereo48k"]))
    assert (info.format, info.channels, info.samplerate) == ("FLAC", 2, 48000)


# -- VQA ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vqa_pipe(tiny_vl):
    import mm

    return mm.pipeline("vqa", model=str(tiny_vl))


@pytest.fixture(scope="module")
def vqa_client(serve_in_process, vqa_pipe):
    from gradio_client import Client
    from mm.apps.vqa import build_vqa_app

    return Client(serve_in_process(build_vqa_app(vqa_pipe)).url, verbose=False)


@pytest.fixture
def vision_inputs(monkeypatch):
    from transformers import Lfm2VlModel

    return ModelInputs(monkeypatch, Lfm2VlModel, "get_image_features",
                       lambda *a, pixel_values, spatial_shapes, **kw: (pixel_values.clone(), spatial_shapes.clone()))


@pytest.mark.parametrize("name", ["gray16", "cmyk", "rotated"])
def test_an_uploaded_image_reaches_the_model_as_through_the_api(name, images, vqa_pipe, vqa_client,
                                                               vision_inputs):
    from gradio_client import handle_file

    vqa_pipe(str(images[name]), QUESTION, image_tokens="fast", max_new_tokens=MAX_NEW)
    (api_pixels, api_shapes), = vision_inputs.take_all()
    _, stats = vqa_client.predict(handle_file(str(images[name])), QUESTION, "fast", MAX_NEW, api_name="/vqa")
    assert "mm-status-ok" in stats, stats
    (app_pixels, app_shapes), = vision_inputs.take_all()
    assert torch.equal(app_shapes, api_shapes)
    assert torch.equal(app_pixels, api_pixels)
    pixels = api_pixels.float() * 127.5 + 127.5  # undo the (x - 127.5) / 127.5 normalisation
    real = pixels.abs().sum(-1) > 0  # rows past a tile's patches are padding
    if name == "gray16":  # scaled to 8 bits, not clipped: the ramp's mean stays mid-grey (was 254 in the app)
        assert 120 < float(pixels[real.nonzero(as_tuple=True)].mean()) < 135
    if name == "rotated":  # the EXIF orientation is applied: 80x48 stored, 48x80 (portrait) shown
        h, w = (int(v) for v in api_shapes[0])
        assert h > w, (h, w)


# -- speech ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def speech_models(tiny_audio):
    from mm.apps.speech import SpeechModels

    return SpeechModels(tiny_audio)


@pytest.fixture(scope="module")
def speech_client(serve_in_process, speech_models):
    from gradio_client import Client
    from mm.apps.common import AppLimits
    from mm.apps.speech import build_speech_app

    limits = AppLimits(max_new_tokens=MAX_NEW)
    return Client(serve_in_process(build_speech_app(speech_models, limits=limits), limits).url, verbose=False)


@pytest.fixture
def audio_inputs(monkeypatch):
    from transformers import ParakeetFeatureExtractor

    return ModelInputs(monkeypatch, ParakeetFeatureExtractor, "__call__",
                       lambda raw_speech, *a, **kw: np.array(raw_speech, dtype=np.float32, copy=True))


@pytest.mark.parametrize("name", ["pcm24", "stereo48k"])
def test_an_uploaded_recording_reaches_the_model_as_through_the_api(name, audio_files, speech_models,
                                                                   speech_client, audio_inputs):
    import soundfile as sf
    from gradio_client import handle_file

    path = str(audio_files[name])
    speech_models.asr()(path, max_new_tokens=MAX_NEW)
    api_asr = audio_inputs.take_all()
    speech_models.s2s("interleaved")(path, max_new_tokens=MAX_NEW)
    api_s2s = audio_inputs.take_all()
    assert len(api_asr) == 1 and len(api_s2s) == 1

    _, stats = speech_client.predict(handle_file(path), api_name="/asr")
    assert "mm-status-ok" in stats, stats
    app_asr = audio_inputs.take_all()
    speech_client.predict(handle_file(path), "interleaved", "", MAX_NEW, api_name="/speech_to_speech")
    app_s2s = audio_inputs.take_all()

    assert len(app_asr) == 1 and np.array_equal(app_asr[0], api_asr[0])
    assert len(app_s2s) == 1 and np.array_equal(app_s2s[0], api_s2s[0])
    info = sf.info(path)
    assert abs(api_asr[0].size - info.frames * 16000 / info.samplerate) <= 1  # mixed to mono, at 16 kHz
