"""Load and validate images from a path, bytes, a PIL image or a numpy array.

Every source becomes an upright 8-bit RGB ``PIL.Image`` the way transformers treats an image
*file* (its canonical path input): EXIF orientation applied, alpha dropped (not composited),
palette expanded, grayscale replicated. PIL images are treated exactly like files (the
reference processor instead ignores their EXIF and fails on RGBA/L/P). 16-bit images are
scaled to 8 bits (``round(v / 257)``) instead of being clipped, CMYK goes through PIL's
conversion. Corrupt, truncated, empty and oversized inputs raise :class:`mm.errors.MMError`.

>>> import numpy as np
>>> load_image(np.zeros((4, 6), np.uint8)).size
(6, 4)
>>> load_image(b"not an image")
Traceback (most recent call last):
...
mm.errors.InvalidInputError: could not decode the image from bytes (12 bytes): ...
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import os
import warnings
from typing import Any, Literal

import numpy as np

from mm.errors import InputTooLargeError, InvalidInputError, MissingDependencyError
from mm.validation import check_input_file

log = logging.getLogger(__name__)

#: default pixel limit (width x height): decompression-bomb guard, ~64 megapixels (8192 x 8192)
DEFAULT_MAX_PIXELS = 8192 * 8192

ImageSource = Any  # str | os.PathLike | bytes | PIL.Image.Image | np.ndarray
AlphaMode = Literal["drop", "white"]


def _pil():
    try:
        from PIL import Image, ImageFile, ImageOps
    except ImportError as exc:  # pragma: no cover - pillow is a core dependency of the vision extra
        raise MissingDependencyError("Pillow is needed for images: pip install 'mm[vision]'") from exc
    return Image, ImageFile, ImageOps


def load_image(source: ImageSource, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, exif: bool = True,
               alpha: AlphaMode = "drop") -> Any:
    """Return ``source`` as an upright RGB ``PIL.Image.Image``.

    ``source`` is a file path, ``bytes`` (file content), a ``data:image/...;base64,`` string, a
    ``PIL.Image.Image`` or a numpy array (HxW, HxWxC with C in 1..4, or CxHxW; uint8, uint16,
    bool, or float in [0, 1]). ``max_pixels`` rejects larger images before decoding them
    (``None``: no limit). ``exif=False`` skips the orientation tag. ``alpha="white"`` composites
    transparency over white instead of dropping it (the reference drops it for files).
    """
    if alpha not in ("drop", "white"):
        raise InvalidInputError(f"alpha must be 'drop' or 'white', got {alpha!r}")
    Image, _, _ = _pil()
    if isinstance(source, Image.Image):
        return _finish(source, "the PIL image", max_pixels, exif, alpha)
    if isinstance(source, np.ndarray):
        return _from_array(source, max_pixels)
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        return _decode(io.BytesIO(data), f"bytes ({len(data)} bytes)", max_pixels, exif, alpha, size=len(data))
    if isinstance(source, str) and source.startswith("data:image/"):
        head, _, payload = source.partition(",")
        if ";base64" not in head:
            raise InvalidInputError("only base64 data URLs are supported (data:image/...;base64,...)")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInputError(f"the data URL is not valid base64: {exc}") from exc
        return _decode(io.BytesIO(data), "the data URL", max_pixels, exif, alpha, size=len(data))
    if isinstance(source, str | os.PathLike):
        text = os.fspath(source)
        if isinstance(text, str) and text.startswith(("http://", "https://")):
            raise InvalidInputError(f"mm does not download images ({text!r}); save the file and pass its path")
        path = check_input_file(text, "image file")
        size = path.stat().st_size
        with path.open("rb") as handle:
            return _decode(handle, repr(str(path)), max_pixels, exif, alpha, size=size)
    raise InvalidInputError(
        f"unsupported image type {type(source).__name__}; pass a file path, bytes, a PIL image or a numpy array"
    )


def _check_size(width: int, height: int, where: str, max_pixels: int | None) -> None:
    if width < 1 or height < 1:
        raise InvalidInputError(f"{where} has zero size ({width}x{height} pixels)")
    if max_pixels is not None and width * height > max_pixels:
        raise InputTooLargeError(
            f"{where} has {width}x{height} = {width * height:,} pixels, more than the limit of {max_pixels:,} "
            "(a guard against decompression bombs); downscale it or pass a larger max_pixels"
        )


def _decode(stream: Any, where: str, max_pixels: int | None, exif: bool, alpha: AlphaMode, *, size: int) -> Any:
    Image, ImageFile, _ = _pil()
    if size == 0:
        raise InvalidInputError(f"{where} is empty")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        log.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set by some other code: truncated images will not "
                    "be detected")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
            _check_size(image.width, image.height, where, max_pixels)
            image.load()
    except (InvalidInputError, InputTooLargeError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputTooLargeError(f"{where} is too large to decode safely: {exc}") from exc
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error, EOFError ...
        raise InvalidInputError(f"could not decode the image from {where}: {exc}. Is it a complete, valid "
                                "image file (PNG, JPEG, WebP, GIF, BMP, TIFF ...)?") from exc
    return _finish(image, where, max_pixels, exif, alpha)


def _finish(image: Any, where: str, max_pixels: int | None, exif: bool, alpha: AlphaMode) -> Any:
    _, _, ImageOps = _pil()
    _check_size(image.width, image.height, where, max_pixels)
    try:
        if exif:
            image = ImageOps.exif_transpose(image)
        return _to_rgb(image, alpha)
    except (InvalidInputError, InputTooLargeError):
        raise
    except Exception as exc:
        raise InvalidInputError(f"could not convert {where} (mode {image.mode}) to RGB: {exc}") from exc


def _to_rgb(image: Any, alpha: AlphaMode) -> Any:
    Image, _, _ = _pil()
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        array = np.asarray(image).astype(np.float64)
        if mode != "I" or array.max(initial=0) > 255:
            array = array / 257.0
        gray = np.clip(np.rint(array), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode == "F":
        raise InvalidInputError("32-bit float images (mode F) are ambiguous; convert them to 8-bit first "
                                "(e.g. a numpy array in [0, 1])")
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if alpha == "white" and has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return image
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "palette images with transparency ..." - dropping alpha is the intent
        return image.convert("RGB")


def _from_array(array: np.ndarray, max_pixels: int | None) -> Any:
    Image, _, _ = _pil()
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # CHW -> HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (2, 3, 4)):
        raise InvalidInputError(
            f"an image array must be HxW, HxWxC or CxHxW with C in 1..4, got shape {array.shape}"
        )
    height, width = array.shape[:2]
    _check_size(width, height, f"the array of shape {array.shape}", max_pixels)
    array = _array_to_uint8(array)
    if array.ndim == 3 and array.shape[-1] in (2, 4):
        array = array[..., :-1]  # drop alpha, as for files
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(array))


def _array_to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return np.rint(array / 257.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InvalidInputError("the image array contains NaN or infinite values")
        lo, hi = float(array.min()), float(array.max())
        if lo < 0.0 or hi > 1.0:
            raise InvalidInputError(f"a float image array must hold values in [0, 1], got [{lo:g}, {hi:g}]")
        return np.rint(array * 255.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        lo, hi = int(array.min()), int(array.max())
        if lo < 0 or hi > 255:
            raise InvalidInputError(
                f"an integer image array must hold values in [0, 255] (or be uint16), got [{lo}, {hi}]"
            )
        return array.astype(np.uint8)
    raise InvalidInputError(f"unsupported image array dtype {array.dtype}")
