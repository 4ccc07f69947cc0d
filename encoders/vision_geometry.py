"""Pure geometry of LFM2-VL preprocessing: sizes, tiling grid and image-token counts.

No pixels are touched here, so a caller can learn what an image will cost
before decoding it. Every rule follows transformers' ``Lfm2VlImageProcessor``
exactly, including its quirks:

* sizes round to multiples of 32 px with Python's ``round`` (half to even);
* images below the token minimum are upscaled;
* the "too large" test floors at 16 px (the patch size), not 32;
* grid ties go to the later, larger grid only when the image covers more than
  half of that grid's area.

>>> from mm.encoders.vision_config import VisionSettings
>>> s = VisionSettings(use_thumbnail=False)
>>> plan_image(512, 512, s).num_image_tokens
256
>>> plan_image(20, 20, s).resized_hw          # small images are upscaled
(256, 256)
>>> p = plan_image(768, 1024, s)
>>> (p.rows, p.cols, p.num_image_tokens)
(2, 3, 1536)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from mm.encoders.vision_config import VisionSettings


def smart_resize(height: int, width: int, settings: VisionSettings) -> tuple[int, int]:
    """(height, width) rounded to multiples of 32 and brought inside the token range.

    >>> smart_resize(208, 336, VisionSettings(min_image_tokens=32, max_image_tokens=64))  # 6.5 -> 6, 10.5 -> 10
    (192, 320)
    """
    factor = settings.total_factor
    min_pixels = settings.min_image_tokens * factor**2
    max_pixels = settings.max_image_tokens * factor**2
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def is_too_large(height: int, width: int, settings: VisionSettings) -> bool:
    """Whether the image exceeds the single-image budget times the pixel tolerance (tiling candidate)."""
    factor = settings.total_factor
    h_bar = max(settings.encoder_patch_size, round(height / factor) * factor)
    w_bar = max(settings.encoder_patch_size, round(width / factor) * factor)
    return h_bar * w_bar > settings.max_image_tokens * factor**2 * settings.max_pixels_tolerance


@functools.lru_cache(maxsize=64)
def target_grids(min_tiles: int, max_tiles: int) -> tuple[tuple[int, int], ...]:
    """Candidate (cols, rows) grids with ``min_tiles <= cols*rows <= max_tiles``, sorted by tile count.

    The order among grids with the same count follows the reference (a stable sort of a set), which
    matters only for exact aspect-ratio ties, where the area rule decides anyway.

    >>> target_grids(2, 3)[:3]
    ((1, 2), (2, 1), (3, 1))
    """
    grids = [
        (w, h)
        for n in range(min_tiles, max_tiles + 1)
        for w in range(1, n + 1)
        for h in range(1, n + 1)
        if min_tiles <= w * h <= max_tiles
    ]
    return tuple(sorted(set(grids), key=lambda g: g[0] * g[1]))


def choose_grid(height: int, width: int, settings: VisionSettings) -> tuple[int, int]:
    """The (cols, rows) grid whose aspect ratio is closest to the image's.

    >>> choose_grid(512, 512, VisionSettings(max_image_tokens=64))   # a 2x2 grid (upscaled to 1024x1024)
    (2, 2)
    """
    aspect = width / height
    area = width * height
    best_diff = float("inf")
    best = (1, 1)
    for cols, rows in target_grids(settings.min_tiles, settings.max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best_diff, best = diff, (cols, rows)
        elif diff == best_diff and area > 0.5 * settings.tile_size * settings.tile_size * cols * rows:
            best = (cols, rows)
    return best


def tokens_for_size(height: int, width: int, settings: VisionSettings) -> int:
    """Image tokens of one resized image (single image or thumbnail)."""
    f = settings.downsample_factor
    p = settings.encoder_patch_size
    return math.ceil((height // p) / f) * math.ceil((width // p) / f)


@dataclass(frozen=True)
class ImagePlan:
    """What preprocessing does to one image: grid, sizes, tiles and token counts."""

    height: int
    width: int
    rows: int
    cols: int
    #: smart-resized size: the whole image when not tiled, else the thumbnail size
    resized_hw: tuple[int, int]
    tile_size: int
    tiled: bool
    thumbnail: bool
    tokens_per_tile: int
    thumbnail_tokens: int

    @property
    def num_tiles(self) -> int:
        """Tiles fed to the vision tower (grid tiles plus the thumbnail)."""
        return self.rows * self.cols + int(self.thumbnail) if self.tiled else 1

    @property
    def num_image_tokens(self) -> int:
        """``<image>`` tokens this image adds to the prompt."""
        if not self.tiled:
            return self.thumbnail_tokens
        return self.rows * self.cols * self.tokens_per_tile + (self.thumbnail_tokens if self.thumbnail else 0)

    def tile_shapes(self) -> list[tuple[int, int]]:
        """(height, width) in pixels of every tile, in the order they are fed."""
        if not self.tiled:
            return [self.resized_hw]
        shapes = [(self.tile_size, self.tile_size)] * (self.rows * self.cols)
        return shapes + ([self.resized_hw] if self.thumbnail else [])


def plan_image(height: int, width: int, settings: VisionSettings) -> ImagePlan:
    """Plan the preprocessing of a ``height`` x ``width`` image under ``settings``."""
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    resized = smart_resize(height, width, settings)
    splitting = settings.do_image_splitting and not settings.min_tiles == settings.max_tiles == 1
    tiled = splitting and is_too_large(height, width, settings)
    cols, rows = choose_grid(height, width, settings) if tiled else (1, 1)
    thumbnail = tiled and settings.use_thumbnail and rows * cols != 1
    side = settings.tile_size // settings.encoder_patch_size
    per_tile = math.ceil(side / settings.downsample_factor) ** 2
    return ImagePlan(height, width, rows, cols, resized, settings.tile_size, tiled, thumbnail, per_tile,
                     tokens_for_size(*resized, settings))


def placeholder_text(plan: ImagePlan, settings: VisionSettings, *, image_token: str = "<image>",
                     start: str = "<|image_start|>", end: str = "<|image_end|>",
                     thumbnail_token: str = "<|img_thumbnail|>") -> str:
    """The text that replaces one ``<image>`` in the prompt.

    >>> s = VisionSettings(max_image_tokens=64, min_image_tokens=32, use_thumbnail=False)
    >>> text = placeholder_text(plan_image(512, 512, s), s)
    >>> text[:41], text.count("<image>")
    ('<|image_start|><|img_row_1_col_1|><image>', 1024)
    """
    special = settings.use_image_special_tokens
    parts = [start] if special else []
    if plan.tiled and (plan.rows > 1 or plan.cols > 1):
        for r in range(plan.rows):
            for c in range(plan.cols):
                if special:
                    parts.append(f"<|img_row_{r + 1}_col_{c + 1}|>")
                parts.append(image_token * plan.tokens_per_tile)
        if settings.use_thumbnail:
            if special:
                parts.append(thumbnail_token)
            parts.append(image_token * plan.thumbnail_tokens)
    else:
        parts.append(image_token * plan.thumbnail_tokens)
    if special:
        parts.append(end)
    return "".join(parts)


def marker_tokens(plan: ImagePlan, settings: VisionSettings) -> list[str]:
    """The row/column marker tokens a plan needs (they must exist in the tokenizer's vocabulary)."""
    if not (settings.use_image_special_tokens and plan.tiled and (plan.rows > 1 or plan.cols > 1)):
        return []
    return [f"<|img_row_{r + 1}_col_{c + 1}|>" for r in range(plan.rows) for c in range(plan.cols)]
