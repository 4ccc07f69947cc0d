"""Image-token budgets: presets and per-call options mapped onto :class:`VisionSettings`.

``image_tokens`` picks a preset; explicit options override it:

============  ==============================================================================
preset        settings (relative to the checkpoint's own processor config)
============  ==============================================================================
``fast``      one image, no tiling, 32..64 tokens (a 512x512 image costs 64 tokens)
``balanced``  exactly the checkpoint's settings (LFM2-VL: 64..256 tokens, tiling of large images)
``detailed``  tiling on, thumbnail on, tiles as soon as an image exceeds one 512-px tile
============  ==============================================================================

>>> from mm.encoders.vision_config import VisionSettings
>>> base = VisionSettings(use_thumbnail=False)
>>> s = resolve_budget(base, "fast")
>>> (s.min_image_tokens, s.max_image_tokens, s.do_image_splitting)
(32, 64, False)
>>> resolve_budget(base, "balanced") == base
True
>>> resolve_budget(base, "fast", max_image_tokens=128).max_image_tokens
128
"""

from __future__ import annotations

from typing import Any

from mm.encoders.vision_config import VisionSettings

from mm.errors import InvalidInputError, choices_text

PRESETS = ("fast", "balanced", "detailed")

#: most image tokens one image (or one tile) may ask for: larger single images are far outside what
#: LFM2-VL was trained on (64..256) and their vision cost grows quadratically
MAX_IMAGE_TOKENS_LIMIT = 1024
#: row/column marker tokens exist for grids up to 10x10
MAX_TILES_LIMIT = 100

#: the options :func:`resolve_budget` takes besides the preset, with their setting names
BUDGET_OPTIONS = {"min_image_tokens": "min_image_tokens", "max_image_tokens": "max_image_tokens",
                  "tiling": "do_image_splitting", "max_tiles": "max_tiles", "thumbnail": "use_thumbnail"}


def preset_changes(preset: str, base: VisionSettings) -> dict[str, Any]:
    """The setting changes a preset makes to the checkpoint's ``base`` settings."""
    if preset == "fast":
        return {"max_image_tokens": 64, "min_image_tokens": min(32, base.min_image_tokens),
                "do_image_splitting": False}
    if preset == "balanced":
        return {}
    if preset == "detailed":
        return {"do_image_splitting": True, "use_thumbnail": True, "max_pixels_tolerance": 1.0,
                "min_tiles": max(base.min_tiles, 2),
                "max_tiles": max(base.max_tiles, 10)}
    raise InvalidInputError(f"image_tokens={preset!r} is not a preset; valid: {choices_text(PRESETS)}")


def _positive_int(name: str, value: Any, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    if value > limit:
        raise InvalidInputError(f"{name}={value} is above the supported limit of {limit}")
    return value


def resolve_budget(base: VisionSettings, image_tokens: str = "balanced", *, min_image_tokens: int | None = None,
                   max_image_tokens: int | None = None, tiling: bool | None = None, max_tiles: int | None = None,
                   thumbnail: bool | None = None) -> VisionSettings:
    """Settings for one call: ``base`` + the preset + explicit options (``None`` = keep).

    When only one bound of the token range is given and it crosses the other bound of the preset,
    the other bound follows it (``max_image_tokens=32`` on ``balanced`` gives the range 32..32).
    """
    if not isinstance(image_tokens, str):
        raise InvalidInputError(f"image_tokens must be one of {choices_text(PRESETS)}, got {image_tokens!r}; use "
                                "min_image_tokens / max_image_tokens for explicit numbers")
    changes = preset_changes(image_tokens, base)
    lo = changes.get("min_image_tokens", base.min_image_tokens)
    hi = changes.get("max_image_tokens", base.max_image_tokens)
    if min_image_tokens is not None:
        lo = _positive_int("min_image_tokens", min_image_tokens, MAX_IMAGE_TOKENS_LIMIT)
    if max_image_tokens is not None:
        hi = _positive_int("max_image_tokens", max_image_tokens, MAX_IMAGE_TOKENS_LIMIT)
    if lo > hi:
        if min_image_tokens is not None and max_image_tokens is not None:
            raise InvalidInputError(f"min_image_tokens ({lo}) must not exceed max_image_tokens ({hi})")
        if max_image_tokens is not None:
            lo = hi
        else:
            hi = lo
    changes.update(min_image_tokens=lo, max_image_tokens=hi)
    for name, value in (("tiling", tiling), ("thumbnail", thumbnail)):
        if value is not None and not isinstance(value, bool):
            raise InvalidInputError(f"{name} must be True or False, got {value!r}")
    if tiling is not None:
        changes["do_image_splitting"] = tiling
    if thumbnail is not None:
        changes["use_thumbnail"] = thumbnail
    if max_tiles is not None:
        changes["max_tiles"] = _positive_int("max_tiles", max_tiles, MAX_TILES_LIMIT)
        min_tiles = changes.get("min_tiles", base.min_tiles)
        if changes["max_tiles"] < min_tiles:
            raise InvalidInputError(f"max_tiles ({max_tiles}) must be at least min_tiles ({min_tiles}); pass "
                                    "tiling=False to never tile")
    settings = base.replace(**changes)
    if not settings.do_image_splitting:
        given = [name for name, value in (("max_tiles", max_tiles), ("thumbnail", thumbnail)) if value is not None]
        if given:
            raise InvalidInputError(f"{', '.join(given)} only apply when tiling is on; pass tiling=True or drop "
                                    f"them (image_tokens={image_tokens!r} does not tile)")
    return settings
