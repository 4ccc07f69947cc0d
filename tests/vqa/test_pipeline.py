"""The vqa pipeline on a tiny random LFM2-VL checkpoint: answers, budgets, batching, streaming, turns."""

from __future__ import annotations

import io

import numpy as np
import pytest

import mm
from mm.errors import InvalidInputError, MMError, UnsupportedOptionError


def test_answer_and_default_budget(vqa, img_512):
    result = vqa(img_512, "What is this?", max_new_tokens=6)
    assert isinstance(result.answer, str) and result.answer.strip()
    assert result.image_tokens == [256]
    assert 1 <= len(result.token_ids) == result.usage["generated_tokens"] <= 6
    assert result.usage["prompt_tokens"] > 256 and result.usage["image_tokens"] == 256
    assert result.text == result.answer and result.stop_reason in ("eos", "max_new_tokens")
    for key in ("load_preprocess_s", "vision_s", "generate_s", "total_s"):
        assert result.timings[key] >= 0
    assert str(result) == result.answer


def test_fast_preset(vqa, img_512):
    assert vqa(img_512, "What is this?", image_tokens="fast", max_new_tokens=2).image_tokens == [64]


def test_pipeline_level_budget(tiny_vl, img_512):
    fast = mm.pipeline("vqa", model=tiny_vl, dtype="float32", image_tokens="fast")
    assert fast(img_512, "Q", max_new_tokens=1).image_tokens == [64]
    assert fast(img_512, "Q", max_new_tokens=1, image_tokens="balanced").image_tokens == [256]


def test_model_shared_between_pipelines(tiny_vl, vqa):
    other = mm.pipeline("vqa", model=tiny_vl, dtype="float32")
    assert other.vl is vqa.vl


@pytest.mark.parametrize(("options", "tokens"), [
    ({}, [1536]),                                        # 3x2 tiles of 256
    ({"image_tokens": "fast"}, [54]),                    # one 192x288 image (6x9 tokens)
    ({"image_tokens": "detailed"}, [1536 + 234]),        # + thumbnail (416x576)
    ({"tiling": False}, [234]),                          # smart-resized to 416x576
    ({"max_tiles": 4}, [1024]),                          # 2x2 grid
    ({"thumbnail": True}, [1536 + 234]),
    ({"max_image_tokens": 128, "tiling": False}, [117]),  # 288x416
    ({"min_image_tokens": 256, "max_image_tokens": 256, "tiling": False}, [234]),
])
def test_budget_options(vqa, options, tokens):
    image = np.random.default_rng(1).integers(0, 256, (768, 1024, 3), dtype=np.uint8)
    result = vqa(image, "Describe.", max_new_tokens=1, **options)
    assert result.image_tokens == tokens
    assert vqa.image_tokens_for(1024, 768, **options) == tokens[0]
    assert result.usage["prompt_tokens"] > tokens[0]


@pytest.mark.parametrize(("options", "message"), [
    ({"image_tokens": "huge"}, "image_tokens must be one of"),
    ({"image_tokens": 64}, "image_tokens must be one of"),
    ({"max_image_tokens": 0}, "positive integer"),
    ({"max_image_tokens": 5000}, "limit"),
    ({"min_image_tokens": 300, "max_image_tokens": 100}, "must not exceed"),
    ({"tiling": "yes"}, "True or False"),
    ({"max_tiles": 1}, "at least min_tiles"),
    ({"image_tokens": "fast", "thumbnail": True}, "only apply when tiling is on"),
    ({"max_tiles": 12}, "marker tokens"),
    ({"temperature": 0.5}, "only apply when sampling"),
    ({"max_new_tokens": 0}, "positive integer"),
])
def test_bad_options(vqa, options, message):
    wide = np.zeros((200, 3000, 3), np.uint8)  # a 12x1 grid with max_tiles=12
    with pytest.raises(InvalidInputError, match=message):
        vqa(wide, "Q", **{"max_new_tokens": 1, **options})


def test_unknown_option(vqa, img_512):
    with pytest.raises(UnsupportedOptionError, match="budget"):
        vqa(img_512, "Q", budget="fast")
    with pytest.raises(UnsupportedOptionError):
        mm.pipeline("vqa", model=vqa.model_id, dtype="float32", colour="red")


def test_batch_mixed_sizes_matches_single(vqa, img_512):
    rng = np.random.default_rng(2)
    tall = rng.integers(0, 256, (1200, 300, 3), dtype=np.uint8)
    small = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    items = [(img_512, "What is this?"), (tall, "Describe the picture in detail."), ([small, img_512], "Compare.")]
    batch = vqa(items, max_new_tokens=6)
    assert [r.image_tokens for r in batch] == [[256], [256], [70, 256]]
    for item, got in zip(items, batch, strict=True):
        alone = vqa(*item, max_new_tokens=6)
        assert alone.token_ids == got.token_ids
        assert alone.answer == got.answer
    assert len({r.timings["generate_s"] for r in batch}) == 1  # one generate call for the whole batch


def test_dict_and_conversation_items(vqa, img_512):
    by_dict = vqa({"image": img_512, "question": "What is this?"}, max_new_tokens=4)
    by_pair = vqa((img_512, "What is this?"), max_new_tokens=4)
    assert by_dict.token_ids == by_pair.token_ids
    conversation = [
        {"role": "user", "content": [{"type": "image", "image": img_512}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": "A pattern."},
        {"role": "user", "content": [{"type": "text", "text": "And this one?"},
                                     {"type": "image", "image": np.zeros((64, 64), np.uint8)}]},
    ]
    result = vqa(conversation, max_new_tokens=4)
    assert result.image_tokens == [256, 64]
    with_system = vqa(conversation, max_new_tokens=4, system_prompt="Be brief.")
    assert with_system.usage["prompt_tokens"] > result.usage["prompt_tokens"]


def test_stream_matches_call(vqa, img_512):
    pieces = list(vqa.stream(img_512, "What is this?", max_new_tokens=6))
    assert pieces and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces) == vqa(img_512, "What is this?", max_new_tokens=6).answer


def test_sampling_is_seeded(vqa, img_512):
    kwargs = {"do_sample": True, "temperature": 1.5, "top_k": 50, "seed": 3, "max_new_tokens": 8}
    assert vqa(img_512, "Q", **kwargs).token_ids == vqa(img_512, "Q", **kwargs).token_ids


def test_inputs_of_every_kind(vqa, img_512, tmp_path):
    path = tmp_path / "img.png"
    img_512.save(path)
    reference = vqa(img_512, "Q", max_new_tokens=3).token_ids
    buffer = io.BytesIO()
    img_512.save(buffer, "PNG")
    for source in (path, str(path), buffer.getvalue(), np.asarray(img_512), img_512.convert("RGBA")):
        assert vqa(source, "Q", max_new_tokens=3).token_ids == reference


def test_truncated_png_raises(vqa, img_512, tmp_path):
    buffer = io.BytesIO()
    img_512.save(buffer, "PNG")
    path = tmp_path / "truncated.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(MMError, match="truncated"):
        vqa(str(path), "What is this?")


@pytest.mark.parametrize(("item", "message"), [
    ((None, "Q"), "unsupported image type"),
    ((np.zeros((0, 5, 3), np.uint8), "Q"), "zero size"),
    (("/nonexistent/x.png", "Q"), "does not exist"),
    (({"image": np.zeros((8, 8), np.uint8)}), "needs 'question'"),
    (([{"role": "user", "content": "no image here"}]), "no image given"),
    (([{"role": "robot", "content": "x"}]), "role must be"),
    ((np.zeros((8, 8), np.uint8), "  "), "question is empty"),
    ((np.zeros((8, 8), np.uint8), "look <image> here"), "literal <image>"),
    (42, "vqa takes"),
])
def test_bad_items(vqa, item, message):
    with pytest.raises(InvalidInputError, match=message):
        vqa(item, max_new_tokens=1)


def test_empty_batch(vqa):
    with pytest.raises(InvalidInputError, match="empty list"):
        vqa([])


def test_split_layout_checkpoint(tmp_path, img_512):
    """A checkpoint in the early LiquidAI layout (preprocessor_config.json + flat processor_config.json)."""
    from mm.testing import make_tiny_lfm2_vl

    path = make_tiny_lfm2_vl(tmp_path / "split", layout="split",
                             processor={"use_thumbnail": True, "max_pixels_tolerance": 1.5})
    pipe = mm.pipeline("vqa", model=path, dtype="float32")
    assert (pipe.vision_settings.use_thumbnail, pipe.vision_settings.max_pixels_tolerance) == (True, 1.5)
    assert pipe.image_tokens_for(800, 600) == 6 * 256 + 234  # tiled with the 1.6B tolerance, + thumbnail
    assert pipe(img_512, "Q", max_new_tokens=1).image_tokens == [256]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fast_engine_equals_transformers_generate(tiny_vl, img_512, dtype):
    """mm's fast decode loop (image features merged into the prefill embeddings) gives transformers' tokens."""
    rng = np.random.default_rng(5)
    tall = rng.integers(0, 256, (900, 200, 3), dtype=np.uint8)
    items = [(img_512, "What is this?"), ([tall, img_512], "Compare the two pictures.")]
    fast = mm.pipeline("vqa", model=tiny_vl, dtype=dtype, engine="fast")
    plain = mm.pipeline("vqa", model=tiny_vl, dtype=dtype, engine="transformers")
    from mm.backbone import GenerationSettings

    assert fast.vl.resolve_engine(GenerationSettings(), "fast") == "fast"
    got, want = fast(items, max_new_tokens=12), plain(items, max_new_tokens=12)
    assert [r.token_ids for r in got] == [r.token_ids for r in want]
    assert all(len(r.token_ids) > 0 for r in got)
    sampled = {"do_sample": True, "temperature": 1.3, "top_k": 40, "seed": 11, "max_new_tokens": 10}
    assert fast(img_512, "Q", **sampled).token_ids == plain(img_512, "Q", **sampled).token_ids
    assert "".join(fast.stream(img_512, "Q", max_new_tokens=8)) == plain(img_512, "Q", max_new_tokens=8).answer


def test_engine_option_is_validated(tiny_vl):
    with pytest.raises(InvalidInputError, match="engine"):
        mm.pipeline("vqa", model=tiny_vl, dtype="float32", engine="turbo")


def test_int8_language_model(tiny_vl, img_512):
    """quantize="int8" swaps the language model's linears (not the vision tower); both engines agree on it."""
    import torch

    fast = mm.pipeline("vqa", model=tiny_vl, dtype="float32", quantize="int8")
    plain = mm.pipeline("vqa", model=tiny_vl, dtype="float32", quantize="int8", engine="transformers")
    model = fast.vl.model
    assert all(type(m) is not torch.nn.Linear for m in model.model.language_model.modules())
    assert type(model.lm_head) is not torch.nn.Linear
    assert any(type(m) is torch.nn.Linear for m in model.model.vision_tower.modules())
    got = fast(img_512, "What is this?", max_new_tokens=10)
    assert got.token_ids == plain(img_512, "What is this?", max_new_tokens=10).token_ids
    assert got.image_tokens == [256]
    with pytest.raises(InvalidInputError, match="float32"):
        mm.pipeline("vqa", model=tiny_vl, dtype="bfloat16", quantize="int8")
    with pytest.raises(InvalidInputError, match="int4"):
        mm.pipeline("vqa", model=tiny_vl, dtype="float32", quantize="int4")
