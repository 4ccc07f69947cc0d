"""LFM2-VL image-processing settings, read from a checkpoint's own files.

Two layouts exist in the wild and both are read:

* checkpoints saved by transformers 5 keep every image-processor setting in
  ``processor_config.json`` under the key ``"image_processor"``;
* LiquidAI repositories published before transformers' native support split them:
  ``preprocessor_config.json`` (mean/std, rescale, ``resample``, ``patch_size``,
  ``max_num_patches``) and ``processor_config.json`` (token range, tiles, tile size,
  thumbnail, tolerance, downsample factor) at its top level.

Missing keys fall back to the defaults of transformers' ``Lfm2VlImageProcessor``.

>>> s = VisionSettings()
>>> (s.min_image_tokens, s.max_image_tokens, s.tile_size, s.max_num_patches)
(64, 256, 512, 1024)
>>> s.replace(do_image_splitting=False, max_image_tokens=64).max_num_patches
256
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm.errors import CheckpointError, InvalidInputError

log = logging.getLogger(__name__)

#: PIL resample codes the preprocessing supports (0 nearest, 2 bilinear, 3 bicubic)
SUPPORTED_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}

#: keys of the old split layout that are spelled differently
_ALIASES = {"patch_size": "encoder_patch_size"}

#: keys that are read but carry no setting of their own
_IGNORED = {"image_processor_type", "processor_class", "return_row_col_info", "size", "do_convert_rgb",
            "auto_map", "feature_extractor_type", "max_num_patches", "_processor_class"}


@dataclass(frozen=True)
class VisionSettings:
    """Every setting that shapes LFM2-VL's image preprocessing and its prompt expansion."""

    do_image_splitting: bool = True
    downsample_factor: int = 2
    encoder_patch_size: int = 16
    min_image_tokens: int = 64
    max_image_tokens: int = 256
    min_tiles: int = 2
    max_tiles: int = 10
    tile_size: int = 512
    use_thumbnail: bool = True
    max_pixels_tolerance: float = 2.0
    resample: int = 2
    do_resize: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)
    do_pad: bool = True
    use_image_special_tokens: bool = True
    #: ``max_num_patches`` written in the checkpoint (informational; the value used is computed)
    config_max_num_patches: int | None = field(default=None, compare=False)

    @property
    def total_factor(self) -> int:
        """Side of the pixel square that becomes one image token (patch size x downsample factor)."""
        return self.encoder_patch_size * self.downsample_factor

    @property
    def max_num_patches(self) -> int:
        """Rows every tile is padded to, as the reference computes it at call time."""
        thumbnail = self.max_image_tokens * self.downsample_factor**2
        tile = (self.tile_size // self.encoder_patch_size) ** 2 if self.do_image_splitting else 0
        return max(thumbnail, tile)

    def replace(self, **changes: Any) -> VisionSettings:
        """A copy with ``changes`` applied and validated."""
        return dataclasses.replace(self, **changes).validate()

    def validate(self) -> VisionSettings:
        """Check that the settings are usable; raise :class:`InvalidInputError` naming the bad one."""
        for name in ("downsample_factor", "encoder_patch_size", "min_image_tokens", "max_image_tokens",
                     "min_tiles", "max_tiles", "tile_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        if self.min_image_tokens > self.max_image_tokens:
            raise InvalidInputError(
                f"min_image_tokens ({self.min_image_tokens}) must not exceed max_image_tokens ({self.max_image_tokens})"
            )
        if self.do_image_splitting and self.min_tiles > self.max_tiles:
            raise InvalidInputError(f"min_tiles ({self.min_tiles}) must not exceed max_tiles ({self.max_tiles})")
        if self.do_image_splitting and self.min_tiles < 2 < self.max_tiles + 1:
            # the reference would tile into one 512-px tile but count the tokens of the smart-resized size
            raise InvalidInputError(f"min_tiles must be >= 2 when tiling is on (got {self.min_tiles}); a 1x1 grid "
                                    "is the untiled case: pass tiling=False instead")
        if self.tile_size % self.total_factor:
            raise InvalidInputError(
                f"tile_size ({self.tile_size}) must be a multiple of encoder_patch_size*downsample_factor "
                f"({self.total_factor})"
            )
        if not self.max_pixels_tolerance > 0:
            raise InvalidInputError(f"max_pixels_tolerance must be > 0, got {self.max_pixels_tolerance!r}")
        if self.resample not in SUPPORTED_RESAMPLE:
            raise InvalidInputError(
                f"resample={self.resample!r} is not supported; valid PIL codes: "
                + ", ".join(f"{k} ({v})" for k, v in SUPPORTED_RESAMPLE.items())
            )
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or not all(self.image_std):
            raise InvalidInputError("image_mean and image_std need 3 values each, std non-zero")
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "settings") -> VisionSettings:
        """Build settings from a flat dict of config keys (unknown keys are logged and skipped)."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            name = _ALIASES.get(key, key)
            if name in _ALIASES.values() and name in values and key != name:
                continue  # the canonical spelling wins over the alias
            if key == "max_num_patches":
                kwargs["config_max_num_patches"] = int(value)
            elif name in known:
                kwargs[name] = value
            elif key not in _IGNORED:
                log.debug("%s: ignoring unknown image-processor key %r", source, key)
        for name in ("image_mean", "image_std"):
            if name in kwargs:
                value = kwargs[name]
                kwargs[name] = tuple(float(v) for v in (value if isinstance(value, list | tuple) else [value] * 3))
        if "resample" in kwargs and kwargs["resample"] is not None:
            kwargs["resample"] = int(kwargs["resample"])
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        try:
            settings = cls(**kwargs).validate()
        except InvalidInputError as exc:
            raise CheckpointError(f"{source}: {exc}") from exc
        if settings.config_max_num_patches not in (None, settings.max_num_patches):
            log.warning("%s: max_num_patches=%s differs from the value the settings imply (%s); using %s, as "
                        "the reference processor does", source, settings.config_max_num_patches,
                        settings.max_num_patches, settings.max_num_patches)
        return settings

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> VisionSettings:
        """Read the settings of the checkpoint in ``directory`` (either layout).

        Precedence (last wins): class defaults, ``preprocessor_config.json``, top-level keys of
        ``processor_config.json``, its ``"image_processor"`` section.
        """
        directory = Path(directory)
        merged: dict[str, Any] = {}
        found = []
        pre = directory / "preprocessor_config.json"
        if pre.is_file():
            merged.update(_read_json(pre))
            found.append(pre.name)
        proc = directory / "processor_config.json"
        if proc.is_file():
            data = _read_json(proc)
            nested = data.pop("image_processor", None)
            merged.update(data)
            if isinstance(nested, dict):
                merged.update(nested)
            found.append(proc.name)
        if not found:
            raise CheckpointError(
                f"{str(directory)!r} has neither processor_config.json nor preprocessor_config.json; an LFM2-VL "
                "checkpoint needs its image-processor settings"
            )
        return cls.from_dict(merged, source=f"{directory.name}/{'+'.join(found)}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"could not read {str(path)!r}: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{str(path)!r} must hold a JSON object")
    return data
