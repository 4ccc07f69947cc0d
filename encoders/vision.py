"""LFM2-VL image preprocessing with torch only (no torchvision): resize, tile, normalise, patchify, pad.

Reproduces transformers' ``Lfm2VlImageProcessor`` + ``Lfm2VlProcessor`` prompt expansion bit for bit
(see ``tests/vqa/test_goldens.py``): the resize is torch's antialiased interpolation run directly on
uint8 (PIL-like, one rounding), normalisation is ``(x - mean/rescale) / (std/rescale)`` in float32.

>>> import numpy as np
>>> from mm.encoders.vision_config import VisionSettings
>>> pre = ImagePreprocessor(VisionSettings(use_thumbnail=False))
>>> out = pre([np.zeros((768, 1024, 3), np.uint8)])
>>> tuple(out.pixel_values.shape), out.num_image_tokens
((6, 1024, 768), [1536])
>>> tuple(out.spatial_shapes[0].tolist()), int(out.pixel_attention_mask[0].sum())
((32, 32), 1024)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mm.encoders.vision_config import VisionSettings
from mm.encoders.vision_geometry import ImagePlan, placeholder_text, plan_image

from mm.errors import InvalidInputError

log = logging.getLogger(__name__)

_MODES = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}


def resize_uint8(image: torch.Tensor, height: int, width: int, resample: int = 2) -> torch.Tensor:
    """Resize a ``[N, C, H, W]`` uint8 tensor like the reference (antialiased, on uint8, one rounding).

    >>> img = torch.arange(16, dtype=torch.uint8).reshape(1, 1, 4, 4)
    >>> resize_uint8(img, 2, 2).tolist()
    [[[[4, 5], [10, 11]]]]
    """
    if image.dtype != torch.uint8 or image.ndim != 4:
        raise TypeError(f"resize_uint8 needs a [N, C, H, W] uint8 tensor, got {image.dtype} {tuple(image.shape)}")
    if tuple(image.shape[-2:]) == (height, width):
        return image
    mode = _MODES[resample]
    if mode == "nearest-exact":
        return torch.nn.functional.interpolate(image, size=(height, width), mode=mode)
    return torch.nn.functional.interpolate(image, size=(height, width), mode=mode, align_corners=False,
                                           antialias=True)


def normalize(tiles: torch.Tensor, settings: VisionSettings) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` -> float32 with the reference's fused rescale + normalise."""
    if settings.do_rescale and settings.do_normalize:
        mean = torch.tensor(settings.image_mean) * (1.0 / settings.rescale_factor)
        std = torch.tensor(settings.image_std) * (1.0 / settings.rescale_factor)
    elif settings.do_normalize:
        mean, std = torch.tensor(settings.image_mean), torch.tensor(settings.image_std)
    elif settings.do_rescale:
        return tiles.to(torch.float32) * settings.rescale_factor
    else:
        return tiles.to(torch.float32)
    return tiles.to(torch.float32).sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, (H/p)*(W/p), p*p*C]``, patch vectors laid out (py, px, channel)."""
    n, c, h, w = images.shape
    x = images.reshape(n, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(n, (h // patch) * (w // patch), patch * patch * c)


def to_uint8_chw(image: Any) -> torch.Tensor:
    """An RGB image as a ``[3, H, W]`` uint8 tensor (PIL RGB image, HWC/CHW uint8 array or tensor).

    Use :func:`mm.media.image.load_image` first for files, bytes and other modes.
    """
    if isinstance(image, torch.Tensor):
        tensor = image
    elif isinstance(image, np.ndarray):
        array = np.ascontiguousarray(image)
        tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
        if tensor.ndim == 3 and tensor.shape[-1] == 3 and tensor.shape[0] != 3:
            tensor = tensor.permute(2, 0, 1)
    else:
        from PIL import Image

        if not isinstance(image, Image.Image) or image.mode != "RGB":
            raise InvalidInputError(
                f"expected an RGB image (PIL RGB, uint8 array or tensor), got {type(image).__name__}"
                f"{' mode ' + image.mode if isinstance(image, Image.Image) else ''}; load it with "
                "mm.media.image.load_image first"
            )
        tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    if tensor.dtype != torch.uint8 or tensor.ndim != 3 or tensor.shape[0] != 3:
        raise InvalidInputError(f"expected a [3, H, W] uint8 RGB image, got {tensor.dtype} {tuple(tensor.shape)}")
    if tensor.shape[1] < 1 or tensor.shape[2] < 1:
        raise InvalidInputError(f"the image is empty ({tensor.shape[2]}x{tensor.shape[1]} pixels)")
    return tensor


@dataclass(frozen=True)
class _Lut:
    values: torch.Tensor  # [3 * 256] float32: normalised value of uint8 v in channel c at c * 256 + v
    offsets: torch.Tensor  # [dim] int32: c * 256 for each position of a patch vector


def _channel_lut(settings: VisionSettings, dim: int) -> _Lut:
    """Normalisation as a lookup table: the same float32 ops applied once to each of the 256 values.

    Elementwise IEEE float32 ops give the same result for a value wherever it sits, so a lookup is
    bit-identical to normalising every pixel, and 4x less memory traffic before the gather.
    """
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256).expand(1, 3, 1, 256)
    values = normalize(levels.contiguous(), settings).reshape(3 * 256)
    offsets = ((torch.arange(dim) % 3) * 256).to(torch.int32)
    return _Lut(values, offsets)


@dataclass
class VisionInputs:
    """Model-ready image inputs for one or more images (tiles of all images concatenated in order)."""

    pixel_values: torch.Tensor  # [tiles, max_num_patches, p*p*3] float32
    pixel_attention_mask: torch.Tensor  # [tiles, max_num_patches] int32
    spatial_shapes: torch.Tensor  # [tiles, 2] int64 (patch rows, patch cols)
    plans: list[ImagePlan]
    settings: VisionSettings
    tiles: list[torch.Tensor] = field(default_factory=list, repr=False)  # resized uint8 tiles, if kept

    @property
    def num_image_tokens(self) -> list[int]:
        """``<image>`` tokens per image."""
        return [plan.num_image_tokens for plan in self.plans]

    def model_kwargs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for ``Lfm2VlForConditionalGeneration.forward/generate``."""
        return {"pixel_values": self.pixel_values, "pixel_attention_mask": self.pixel_attention_mask,
                "spatial_shapes": self.spatial_shapes}


class ImagePreprocessor:
    """LFM2-VL image preprocessing for one checkpoint's settings.

    ``settings`` come from the checkpoint (:meth:`from_pretrained`); each call may pass
    other settings (``VisionSettings.replace(...)``), e.g. from a token-budget preset.
    """

    def __init__(self, settings: VisionSettings | None = None) -> None:
        self.settings = (settings or VisionSettings()).validate()

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> ImagePreprocessor:
        """Preprocessing as configured by the checkpoint in ``directory``."""
        return cls(VisionSettings.from_pretrained(directory))

    def plan(self, height: int, width: int, settings: VisionSettings | None = None) -> ImagePlan:
        """The plan (grid, sizes, token count) for an image of this size, without touching pixels."""
        return plan_image(height, width, settings or self.settings)

    def tiles(self, image: Any, settings: VisionSettings | None = None) -> tuple[ImagePlan, list[torch.Tensor]]:
        """Resize and cut one image: its plan and its uint8 ``[3, h, w]`` tiles in feeding order."""
        settings = settings or self.settings
        chw = to_uint8_chw(image)
        _, height, width = chw.shape
        plan = plan_image(height, width, settings)
        batch = chw.unsqueeze(0)
        if not settings.do_resize:
            raise InvalidInputError("do_resize=False is not supported: LFM2-VL needs sizes in multiples of 32 px")
        if plan.tiled:
            cols, rows = plan.cols, plan.rows
            side = settings.tile_size
            big = resize_uint8(batch, side * rows, side * cols, settings.resample)[0]
            tiles = [big[:, r * side:(r + 1) * side, c * side:(c + 1) * side] for r in range(rows) for c in range(cols)]
            if plan.thumbnail:
                tiles.append(resize_uint8(batch, *plan.resized_hw, settings.resample)[0])
        else:
            tiles = [resize_uint8(batch, *plan.resized_hw, settings.resample)[0]]
        return plan, tiles

    def __call__(self, images: Sequence[Any], settings: VisionSettings | None = None, *,
                 keep_tiles: bool = False) -> VisionInputs:
        """Preprocess ``images`` (RGB: PIL, uint8 arrays or tensors) into model inputs."""
        settings = settings or self.settings
        if not images:
            raise InvalidInputError("no images given")
        patch = settings.encoder_patch_size
        max_patches = settings.max_num_patches
        plans, all_tiles = [], []
        for image in images:
            plan, tiles = self.tiles(image, settings)
            plans.append(plan)
            all_tiles.extend(tiles)
        dim = patch * patch * 3
        lut = _channel_lut(settings, dim)  # exact normalised value of every (position, uint8) pair
        pixel_values = torch.empty((len(all_tiles), max_patches, dim), dtype=torch.float32)
        mask = torch.zeros((len(all_tiles), max_patches), dtype=torch.int32)
        shapes = torch.zeros((len(all_tiles), 2), dtype=torch.int64)
        for i, tile in enumerate(all_tiles):
            gh, gw = tile.shape[1] // patch, tile.shape[2] // patch
            if gh * gw > max_patches:  # cannot happen with validated settings; never truncate silently
                raise InvalidInputError(f"a tile has {gh * gw} patches, more than max_num_patches={max_patches}")
            codes = patchify(tile.unsqueeze(0), patch)[0].to(torch.int32) + lut.offsets
            torch.index_select(lut.values, 0, codes.reshape(-1), out=pixel_values[i, : gh * gw].view(-1))
            pixel_values[i, gh * gw:] = 0
            mask[i, : gh * gw] = 1
            shapes[i, 0], shapes[i, 1] = gh, gw
        if not settings.do_pad:
            log.debug("do_pad=False in the settings: tiles are still padded to max_num_patches to form a batch")
        return VisionInputs(pixel_values, mask, shapes, plans, settings, all_tiles if keep_tiles else [])

    def expand_prompt(self, text: str, plans: Sequence[ImagePlan], settings: VisionSettings | None = None,
                      image_token: str = "<image>") -> str:
        """Replace each ``<image>`` in ``text`` (in order) by its tiles' tokens, like the reference processor."""
        settings = settings or self.settings
        pieces = text.split(image_token)
        if len(pieces) - 1 != len(plans):
            raise InvalidInputError(
                f"the prompt has {len(pieces) - 1} {image_token} placeholder(s) but {len(plans)} image(s) were given"
            )
        out = [pieces[0]]
        for plan, rest in zip(plans, pieces[1:], strict=True):
            out.append(placeholder_text(plan, settings, image_token=image_token))
            out.append(rest)
        return "".join(out)
