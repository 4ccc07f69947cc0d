"""Fuzz images and audio: bytes, arrays, paths and sample rates of every shape end in a result or an MMError."""

from __future__ import annotations

import io
import math

import numpy as np
from hypothesis import strategies as st

from tests.fuzz.harness import any_scalar, fuzz_tests


def _png(width: int, height: int, mode: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def _wav(samples: np.ndarray, rate: int) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV")
    return buffer.getvalue()


@st.composite
def mutated(draw, valid: bytes) -> bytes:
    """A valid file cut, with bytes flipped, or with junk inserted."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["cut", "flip", "insert"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if op == "cut":
            del data[at:]
        elif op == "flip":
            data[at] = draw(st.integers(0, 255))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


shapes = st.lists(st.integers(0, 70), min_size=0, max_size=4).map(tuple)
dtypes = st.sampled_from(["uint8", "uint16", "int16", "int32", "int64", "float16", "float32", "float64", "bool",
                          "complex64", "U3", "object"])


@st.composite
def arrays(draw) -> np.ndarray:
    shape, dtype = draw(shapes), draw(dtypes)
    fill = draw(st.sampled_from(["zeros", "random", "nan", "inf", "big"]))
    if dtype == "object":
        return np.empty(shape, dtype=object)
    if dtype == "U3":
        return np.full(shape, "abc")
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    a = rng.standard_normal(shape) if fill != "zeros" else np.zeros(shape)
    if fill == "big":
        a = a * 1e6
    a = a.astype(dtype) if dtype != "bool" else a > 0
    if fill in ("nan", "inf") and a.dtype.kind in "fc" and a.size:
        a.flat[0] = np.nan if fill == "nan" else np.inf
    return a


IMAGE_SOURCES = st.one_of(
    st.binary(max_size=512),
    st.sampled_from(["png-rgb", "png-rgba", "png-la", "png-1x1"]).flatmap(
        lambda kind: mutated({"png-rgb": _png(40, 30, "RGB"), "png-rgba": _png(20, 20, "RGBA"),
                              "png-la": _png(9, 50, "LA"), "png-1x1": _png(1, 1, "L")}[kind])),
    arrays(),
    st.text(max_size=40),
    st.sampled_from(["data:image/png;base64,@@@", "data:text/plain,hi", "http://example.com/a.png", "/", ".",
                     "/dev/null", "/nonexistent.png"]),
    any_scalar,
)


def check_image(source) -> None:
    from mm.media.image import load_image

    image = load_image(source, max_pixels=4_000_000)
    assert image.mode == "RGB" and image.width > 0 and image.height > 0


test_images, test_images_long = fuzz_tests("images", IMAGE_SOURCES, check_image)


AUDIO_INPUTS = st.one_of(
    st.tuples(arrays(), st.one_of(st.sampled_from([16000, 8000, 44100.0, 1, 0, -5, 16000.5, math.nan, math.inf,
                                                   10**30, "16000", None, True]), any_scalar)),
    st.tuples(st.one_of(st.binary(max_size=256),
                        mutated(_wav(np.sin(np.linspace(0, 300, 4000)).astype("float32") * 0.3, 16000))),
              st.none()),
    st.tuples(st.tuples(arrays(), any_scalar), st.none()),
)


def check_audio(case) -> None:
    from mm.media.audio import load_audio

    source, rate = case
    clip = load_audio(source, rate, max_seconds=30)
    assert clip.samples.ndim == 1 and clip.samples.size > 0 and np.isfinite(clip.samples).all()


test_audio, test_audio_long = fuzz_tests("audio", AUDIO_INPUTS, check_audio)
