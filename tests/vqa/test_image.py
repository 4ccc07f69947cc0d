"""Image loading and validation (mm.media.image): every source, mode, EXIF, and bad input."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from mm.errors import InputTooLargeError, InvalidInputError
from mm.media.image import load_image


def _png(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def rgb():
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8))


def test_sources_agree(rgb, tmp_path):
    path = tmp_path / "a.png"
    rgb.save(path)
    data = _png(rgb)
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    expected = np.asarray(rgb)
    for source in (rgb, path, str(path), data, bytearray(data), url, expected, expected.transpose(2, 0, 1)):
        image = load_image(source)
        assert image.mode == "RGB" and image.size == (40, 30)
        assert np.array_equal(np.asarray(image), expected)


def test_modes_like_a_file(rgb):
    """RGBA/LA drop alpha (no compositing), P expands its palette, L replicates, as the reference's file mode."""
    arr = np.asarray(rgb)
    rgba = Image.fromarray(np.dstack([arr, np.zeros(arr.shape[:2], np.uint8)]))
    assert np.array_equal(np.asarray(load_image(rgba)), arr)
    assert np.array_equal(np.asarray(load_image(rgba, alpha="white")), np.full_like(arr, 255))
    gray = rgb.convert("L")
    assert np.array_equal(np.asarray(load_image(gray)), np.repeat(np.asarray(gray)[..., None], 3, -1))
    assert np.array_equal(np.asarray(load_image(gray.convert("LA"))), np.asarray(load_image(gray)))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    assert np.array_equal(np.asarray(load_image(palette)), np.asarray(palette.convert("RGB")))
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))
    assert load_image(cmyk).getpixel((0, 0)) == (255, 0, 0)
    assert load_image(Image.new("1", (4, 4), 1)).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_is_scaled_not_clipped():
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    expected = [0, 1, 128, 255]
    assert np.asarray(load_image(values))[0, :, 0].tolist() == expected
    png16 = _png(Image.fromarray(values))
    assert Image.open(io.BytesIO(png16)).mode.startswith("I")
    assert np.asarray(load_image(png16))[0, :, 0].tolist() == expected


def test_float_and_bool_arrays():
    assert np.asarray(load_image(np.array([[0.0, 0.5, 1.0]])))[0, :, 0].tolist() == [0, 128, 255]
    assert np.asarray(load_image(np.array([[True, False]])))[0, :, 0].tolist() == [255, 0]
    with pytest.raises(InvalidInputError, match=r"\[0, 1\]"):
        load_image(np.array([[0.0, 2.0]]))
    with pytest.raises(InvalidInputError, match="NaN"):
        load_image(np.array([[np.nan, 0.0]]))
    with pytest.raises(InvalidInputError, match="shape"):
        load_image(np.zeros((2, 3, 4, 5), np.uint8))


def test_exif_orientation_applied(rgb):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    buffer = io.BytesIO()
    rgb.save(buffer, "JPEG", exif=exif, quality=95)
    assert load_image(buffer.getvalue()).size == (30, 40)
    assert load_image(Image.open(io.BytesIO(buffer.getvalue()))).size == (30, 40)  # PIL images too
    assert load_image(buffer.getvalue(), exif=False).size == (40, 30)


def test_fixture_jpeg_exif(vl_fixtures):
    assert load_image(vl_fixtures / "images" / "a11_jpeg_exif6_800x600.jpg").size == (600, 800)


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_files(rgb, cut, tmp_path):
    data = _png(rgb.resize((400, 300)))
    path = tmp_path / "t.png"
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(InvalidInputError, match="could not decode"):
        load_image(path)


@pytest.mark.parametrize("data", [b"", b"hello world", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b"\xff\xd8\xff" + b"1" * 99])
def test_corrupt_bytes(data):
    with pytest.raises(InvalidInputError):
        load_image(data)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InvalidInputError, match="empty"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(InvalidInputError, match="does not download"):
        load_image("https://example.com/cat.png")
    with pytest.raises(InvalidInputError, match="unsupported image type"):
        load_image(3.5)


def test_zero_size():
    with pytest.raises(InvalidInputError, match="zero size"):
        load_image(Image.new("RGB", (0, 5)))
    with pytest.raises(InvalidInputError, match="zero size"):
        load_image(np.zeros((0, 4, 3), np.uint8))


def test_decompression_bomb():
    bomb = _png(Image.new("L", (9000, 9000)), optimize=True)  # ~80 MP of zeros in a small file
    assert len(bomb) < 200_000
    with pytest.raises(InputTooLargeError, match="limit"):
        load_image(bomb)
    with pytest.raises(InputTooLargeError):
        load_image(bomb, max_pixels=1000)
    with pytest.raises(InputTooLargeError):
        load_image(np.zeros((100, 100), np.uint8), max_pixels=1000)
    assert load_image(np.zeros((10, 10), np.uint8), max_pixels=1000).size == (10, 10)


def test_bad_alpha_option(rgb):
    with pytest.raises(InvalidInputError, match="alpha"):
        load_image(rgb, alpha="black")
