"""mm's LFM2-VL preprocessing reproduces every case of the reference goldens (shared fixture bundle).

Token ids, rows/cols, sizes, spatial shapes and masks exactly; pixel values bit for bit (sha256 of
the whole padded float32 tensor), every resized uint8 tile and the float16 snapshots.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import warnings

import numpy as np
import pytest
import torch
from mm.encoders.vision import ImagePreprocessor
from mm.encoders.vision_config import VisionSettings

from mm.media.image import load_image
from tests.conftest import find_shared


def _case_ids() -> list[str]:
    shared = find_shared("fixtures/lfm2_vl_processor/goldens/cases.json")
    path = shared / "fixtures/lfm2_vl_processor/goldens/cases.json" if shared else None
    if path is None or not path.is_file():
        return ["<no-goldens>"]
    return [c["case_id"] for c in json.loads(path.read_text())["cases"]]


CASE_IDS = _case_ids()


@pytest.fixture(scope="module")
def cases(golden_cases) -> dict[str, dict]:
    return {c["case_id"]: c for c in golden_cases["cases"]}


def _processor_dir(vl_fixtures, base: str):
    """``processor_<base>/`` of the bundle, else any processor dir (they share one tokenizer)."""
    own = vl_fixtures / f"processor_{base}"
    return own if own.is_dir() else sorted(vl_fixtures.glob("processor_*"))[0]


@pytest.fixture(scope="module")
def tokenizers(vl_fixtures):
    from transformers import AutoTokenizer

    @functools.cache
    def get(base: str):
        return AutoTokenizer.from_pretrained(str(_processor_dir(vl_fixtures, base)))

    return get


@pytest.fixture(scope="module")
def checkpoint_settings(vl_fixtures):
    @functools.cache
    def get(base: str) -> VisionSettings | None:
        own = vl_fixtures / f"processor_{base}"
        return VisionSettings.from_pretrained(own) if own.is_dir() else None

    return get


@pytest.fixture(scope="module")
def decoder_matches(vl_fixtures, manifest):
    """Whether our Pillow decodes an image to the same file-mode pixels as the goldens' Pillow (JPEG may not)."""

    @functools.cache
    def check(name: str) -> bool:
        chw = np.asarray(load_image(vl_fixtures / manifest[name]["file"])).transpose(2, 0, 1)
        return _sha(chw) == manifest[name]["sha256_file_mode_tensor_chw"]

    return check


@pytest.fixture(scope="module")
def image_path(vl_fixtures, manifest):
    return lambda name: vl_fixtures / manifest[name]["file"]


@pytest.fixture(scope="module")
def tile_png(vl_fixtures):
    from PIL import Image

    @functools.cache
    def read(key: str) -> np.ndarray:
        return np.asarray(Image.open(vl_fixtures / "goldens" / "tiles" / f"{key}.png").convert("RGB"))

    return read


@pytest.fixture(scope="module")
def f16_snapshots(vl_fixtures):
    from safetensors.torch import load_file

    return load_file(str(vl_fixtures / "goldens" / "pixel_values_valid_f16.safetensors"))


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _settings_for(case: dict, checkpoint_settings) -> VisionSettings:
    effective = VisionSettings.from_dict({**case["effective_image_processor_settings"], **case["overrides"]})
    from_checkpoint = checkpoint_settings(case["base"])
    if from_checkpoint is not None:  # the checkpoint's own config + the call's overrides = what the reference used
        assert VisionSettings.from_dict({**dataclasses.asdict(from_checkpoint), **case["overrides"]}) == effective
    return effective


def _run(case: dict, images: list, settings: VisionSettings, tokenizer):
    pre = ImagePreprocessor(settings)
    out = pre(images, keep_tiles=True)
    messages = [{"role": "user", "content": [*({"type": "image"} for _ in images),
                                             {"type": "text", "text": case["question"]}]}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt == case["prompt_text"]
    ids = tokenizer(pre.expand_prompt(prompt, out.plans), add_special_tokens=False)["input_ids"]
    return out, ids


def _check(case: dict, out, ids: list[int], tile_png=None, f16=None, exact: bool = True) -> None:
    """Compare with a golden case; ``exact=False`` (decoder differs) allows 3 uint8 steps in pixels."""
    expected_ids = [tok for tok, run in case["input_ids_rle"] for _ in range(run)]
    assert ids == expected_ids
    assert _sha(np.asarray(ids, dtype="<i4")) == case["input_ids_sha256_int32le"]
    assert ids.count(5) == case["n_image_tokens"] == sum(out.num_image_tokens)
    assert [p.rows for p in out.plans] == case["image_rows"]
    assert [p.cols for p in out.plans] == case["image_cols"]
    assert [list(p.resized_hw) for p in out.plans] == case["image_sizes_hw"]
    assert out.spatial_shapes.tolist() == case["spatial_shapes"]
    mask = case["pixel_attention_mask"]
    assert list(out.pixel_attention_mask.shape) == mask["shape"] and out.pixel_attention_mask.dtype == torch.int32
    ones = out.pixel_attention_mask.sum(1).tolist()
    assert ones == mask["ones_per_row"]
    for row, n in zip(out.pixel_attention_mask, ones, strict=True):  # ones then zeros
        assert bool(row[:n].all()) and not bool(row[n:].any())
    golden = case["pixel_values"]
    pv = out.pixel_values
    assert list(pv.shape) == golden["shape"] and pv.dtype == torch.float32
    assert ones == golden["valid_patches_per_tile"]
    if not exact:
        assert tile_png is not None
        for tile, key in zip(out.tiles, golden["tile_png"], strict=True):
            diff = np.abs(tile.permute(1, 2, 0).numpy().astype(int) - tile_png(key).astype(int))
            assert diff.max() <= 3 and diff.mean() < 0.5, (case["case_id"], diff.max(), diff.mean())
        for i, tile in enumerate(golden["per_tile"]):
            assert float(pv[i, : ones[i]].double().sum()) == pytest.approx(tile["sum"], abs=0.01 * pv[i].numel())
        return
    assert _sha(pv.numpy().astype("<f4")) == golden["sha256_float32_full"]
    valid = torch.cat([pv[i, :n] for i, n in enumerate(ones)])
    u8 = torch.round(valid * 127.5 + 127.5).to(torch.uint8)
    assert _sha(u8.numpy()) == golden["sha256_uint8_valid"]
    for i, tile in enumerate(golden["per_tile"]):
        assert _sha(pv[i, : ones[i]].numpy().astype("<f4")) == tile["sha256_float32"]
    for piece in golden["slices"]:
        start = piece["start"]
        values = pv[piece["tile"], piece["patch"], start:start + len(piece["values"])]
        assert values.tolist() == piece["values"]
    if tile_png is not None:
        assert len(out.tiles) == len(golden["tile_png"])
        for tile, key in zip(out.tiles, golden["tile_png"], strict=True):
            assert np.array_equal(tile.permute(1, 2, 0).numpy(), tile_png(key))
    if f16 is not None and golden.get("f16_key"):
        assert torch.equal(valid.to(torch.float16), f16[golden["f16_key"]])


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_golden_case(case_id, cases, tokenizers, checkpoint_settings, image_path, tile_png, f16_snapshots,
                     decoder_matches):
    """Reproduce one reference case exactly; PIL modes are rebuilt as the reference saw them."""
    from PIL import Image, ImageOps

    case = cases[case_id]
    settings = _settings_for(case, checkpoint_settings)
    tokenizer = tokenizers(case["base"])
    paths = [image_path(name) for name in case["images"]]
    mode = case["input_mode"]
    file_case = cases[case_id.rsplit(".", 1)[0] + ".file"]

    exact = all(decoder_matches(name) for name in case["images"])
    if not exact:
        warnings.warn(f"{case_id}: this Pillow decodes {case['images']} differently from the goldens' Pillow "
                      "(JPEG decoder); pixels compared within 3 uint8 steps", stacklevel=1)
    if mode == "file":  # mm's own file loading is the reference's file mode
        out, ids = _run(case, [load_image(p) for p in paths], settings, tokenizer)
        _check(case, out, ids, tile_png, f16_snapshots, exact=exact)
        return

    # mm treats a PIL image like a file: EXIF applied, alpha dropped, any mode accepted
    out, ids = _run(file_case, [load_image(Image.open(p)) for p in paths], settings, tokenizer)
    _check(file_case, out, ids, tile_png, exact=exact)
    if "reference_error" in case:  # the reference cannot process this PIL mode at all
        assert Image.open(paths[0]).mode in ("RGBA", "L", "P")
        return
    # and the core preprocessing reproduces the reference's own PIL-mode output from the same pixels
    if mode == "pil_raw":
        raw = [np.asarray(Image.open(p)) for p in paths]
    elif mode == "pil_convert_rgb":
        raw = [load_image(Image.open(p), exif=False, alpha="white") for p in paths]
    elif mode == "pil_exif_transposed_raw":
        raw = [np.asarray(ImageOps.exif_transpose(Image.open(p))) for p in paths]
    else:
        pytest.fail(f"unknown input mode {mode}")
    out, ids = _run(case, raw, settings, tokenizer)
    _check(case, out, ids, tile_png, f16_snapshots, exact=exact)


def test_decoded_pixels_match_manifest(vl_fixtures, manifest):
    """Our Pillow decodes every fixture image exactly like the Pillow that made the goldens."""
    import PIL
    from PIL import Image

    differ = []
    for name, entry in manifest.items():
        path = vl_fixtures / entry["file"]
        chw = np.asarray(load_image(path)).transpose(2, 0, 1)
        assert list(chw.shape) == entry["file_mode_tensor_chw_shape"]
        same = _sha(np.asarray(Image.open(path))) == entry["sha256_decoded_raw"]
        assert same == (_sha(chw) == entry["sha256_file_mode_tensor_chw"]), name
        if not same:
            assert entry["format"] == "JPEG", f"{name}: a lossless format must decode identically"
            differ.append(name)
    if differ:  # lossy decoders may differ between Pillow/libjpeg builds; those cases use a tolerance
        warnings.warn(f"Pillow {PIL.__version__} decodes {differ} differently from the goldens' Pillow", stacklevel=1)


def test_settings_layouts(tmp_path, vl_fixtures):
    """The old split layout (preprocessor_config.json + flat processor_config.json) reads the same settings."""
    new = json.loads((vl_fixtures / "processor_vl16b" / "processor_config.json").read_text())["image_processor"]
    pre = {k: new[k] for k in ("do_normalize", "do_rescale", "do_resize", "image_mean", "image_std", "resample",
                               "rescale_factor", "max_num_patches")}
    pre["patch_size"] = new["encoder_patch_size"]
    proc = {k: new[k] for k in ("do_image_splitting", "downsample_factor", "encoder_patch_size", "max_image_tokens",
                                "max_pixels_tolerance", "max_tiles", "min_image_tokens", "min_tiles", "tile_size",
                                "use_thumbnail")}
    proc.update(processor_class="Lfm2VlProcessor", use_image_special_tokens=True)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(pre))
    (tmp_path / "processor_config.json").write_text(json.dumps(proc))
    assert VisionSettings.from_pretrained(tmp_path) == VisionSettings.from_pretrained(vl_fixtures / "processor_vl16b")
    s450 = VisionSettings.from_pretrained(vl_fixtures / "processor_vl450m")
    assert (s450.use_thumbnail, s450.max_pixels_tolerance) == (False, 2.0)
