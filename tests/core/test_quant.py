"""quantize="int4": group-wise 4-bit weight-only linears (mm.quant) and the backbone that uses them."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mm.backbone import Backbone, GenerationSettings, check_quantize  # noqa: E402
from mm.errors import InvalidInputError  # noqa: E402
from mm.kernels.weights import dequantize_q4, pack_q4  # noqa: E402
from mm.quant import Int4Linear, check_group_size, quantize_int4  # noqa: E402


def _dequantized(linear: torch.nn.Linear, group_size: int) -> torch.Tensor:
    return dequantize_q4(*pack_q4(linear.weight, group_size), group_size=group_size)


@pytest.mark.parametrize("shape,group_size,bias", [((96, 64), 32, False), ((48, 256), 64, True),
                                                   ((512, 128), 128, False)])
def test_int4_linear_equals_its_dequantized_weight(shape, group_size, bias):
    torch.manual_seed(0)
    linear = torch.nn.Linear(shape[1], shape[0], bias=bias)
    q = Int4Linear.from_linear(linear, group_size)
    x = torch.randn(3, 7, shape[1])
    ref = torch.nn.functional.linear(x, _dequantized(linear, group_size), linear.bias)
    # the native kernel quantizes activations to int8 per block of 32: close to the dequantized product, not equal
    assert float((q(x) - ref).abs().max()) < 0.02 * float(ref.abs().max())
    for rows in (1, 5):  # four rows per pass over the codes, and the rest one by one: the same values
        torch.testing.assert_close(q(x.reshape(-1, shape[1])[:rows]), q(x).reshape(-1, shape[0])[:rows])
    # the 4-bit grid is close to the original weight: error well below one step of the grid (+ fp16 rounding)
    err = (_dequantized(linear, group_size) - linear.weight).abs().max()
    assert err <= 0.51 * (linear.weight.max() - linear.weight.min()) / 15 + 1e-4
    assert q.nbytes() < linear.weight.nbytes / 4  # 4 bits + scale/offset per group vs 32


def test_int4_linear_bf16_activations():
    torch.manual_seed(1)
    linear = torch.nn.Linear(128, 64, bias=False).to(torch.bfloat16)
    q = Int4Linear.from_linear(linear, 32)
    x = torch.randn(2, 128, dtype=torch.bfloat16)
    out = q(x)
    assert out.dtype == torch.bfloat16
    ref = x.float() @ _dequantized(linear, 32).T
    assert float((out.float() - ref).abs().max() / ref.abs().max()) < 0.02


def test_bad_group_size_and_nothing_to_quantize():
    with pytest.raises(InvalidInputError, match="group_size=48"):
        check_group_size(48, 96)
    with pytest.raises(InvalidInputError, match=r"group_size=64 .* 96"):
        check_group_size(64, 96)
    with pytest.raises(InvalidInputError, match="group_size=48"):
        quantize_int4(torch.nn.Sequential(torch.nn.Linear(96, 8)), group_size=48)
    with pytest.raises(InvalidInputError, match="no linear layer"):
        quantize_int4(torch.nn.Sequential(torch.nn.Linear(20, 8)))


def test_check_quantize_choices_and_dtypes():
    assert check_quantize("int4", torch.bfloat16, ("int8", "int4")) == "int4"
    assert check_quantize("int4", torch.float32, ("int8", "int4")) == "int4"
    with pytest.raises(InvalidInputError, match="float16"):
        check_quantize("int4", torch.float16, ("int8", "int4"))
    with pytest.raises(InvalidInputError, match="'int4' is not supported here"):
        check_quantize("int4", torch.bfloat16)  # loaders that do not implement int4 reject it


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_int4_backbone_fast_engine_equals_transformers(tiny_lfm2, dtype):
    bb = Backbone.load(tiny_lfm2, dtype=dtype, quantize="int4")
    linears = [m for m in bb.model.modules() if isinstance(m, Int4Linear)]
    assert len(linears) >= 4 * 4 and not any(type(m) is torch.nn.Linear for m in bb.model.modules())
    inputs = bb.encode_chat([[{"role": "user", "content": "What is the weather like in Paris today?"}]])
    settings = GenerationSettings(max_new_tokens=16)
    fast = bb.generate(inputs, settings, engine="fast")
    assert fast == bb.generate(inputs, settings, engine="transformers")
    assert len(fast[0]) > 3


def test_int4_logits_stay_close_to_float32(tiny_lfm2):
    """Teacher-forced: int4's next-token logits against float32's on the same tokens."""
    ref = Backbone.load(tiny_lfm2, dtype="float32")
    q4 = Backbone.load(tiny_lfm2, dtype="float32", quantize="int4")
    inputs = ref.encode_chat([[{"role": "user", "content": "Der schnelle braune Fuchs springt"}]])
    with torch.inference_mode():
        a = ref.model(**inputs).logits[0].float()
        b = q4.model(**inputs).logits[0].float()
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    assert float(cosine.min()) > 0.95
    assert not torch.equal(a, b)  # the weights really are quantized


def test_chat_pipeline_int4(tiny_lfm2):
    import mm

    chat = mm.pipeline("chat", model=tiny_lfm2, dtype="bfloat16", quantize="int4")
    assert isinstance(chat.backbone.model.lm_head, Int4Linear)
    assert 1 <= chat("Hello there", max_new_tokens=4).usage["generated_tokens"] <= 4
