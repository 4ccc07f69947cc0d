"""mm's native kernels (mm.kernels): every weight format against torch, the whole decode step, build and errors."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

from mm import kernels  # noqa: E402
from mm.int8_linear import quantize_rows  # noqa: E402
from mm.kernels import build  # noqa: E402
from mm.kernels.weights import NativeWeight, dequantize_q4, pack_q4  # noqa: E402

needs_kernels = pytest.mark.skipif(not kernels.available(), reason=f"native kernels: {kernels.unavailable_reason()}")


def test_ci_builds_the_kernels():
    """On CI a missing compiler must fail loudly, not fall back to torch's ops unnoticed."""
    if not os.environ.get("CI"):
        pytest.skip("only enforced on CI")
    assert kernels.available(), kernels.unavailable_reason()
    assert kernels.available("late_interaction"), kernels.unavailable_reason("late_interaction")  # the index's lookup kernel


@needs_kernels
@pytest.mark.parametrize("rows,cols,m", [(37, 64, 1), (130, 256, 3), (8, 1024, 17)])
@pytest.mark.parametrize("fmt", ["f32", "bf16", "q8", "q4"])
def test_products_match_torch(fmt, rows, cols, m):
    torch.manual_seed(rows + cols + m)
    w, bias, x = torch.randn(rows, cols) * 0.05, torch.randn(rows), torch.randn(m, cols)
    if fmt == "f32":
        native, ref, tol = NativeWeight.dense(w, bias), w, 1e-5
    elif fmt == "bf16":
        native, ref, tol = NativeWeight.dense(w.bfloat16(), bias), w.bfloat16().float(), 1e-5
    elif fmt == "q8":
        values, scales = quantize_rows(w)
        native, ref, tol = NativeWeight.q8(values, scales, bias), values.float() * scales.float()[:, None], 0.02
    else:
        codes, sm = pack_q4(w, 32)
        native, ref, tol = NativeWeight.q4(codes, sm, group_size=32, bias=bias), dequantize_q4(
            codes, sm, group_size=32), 0.02
    expected = x @ ref.T + bias
    out = native(x, threads=2)
    assert out.shape == (m, rows) and out.dtype == torch.float32
    # q8/q4 quantize the activation per block of 32 (int8), so they are close, not equal
    assert float((out - expected).abs().max()) <= tol * float(expected.abs().max())
    assert torch.equal(native(x, threads=1), out)  # each row is one thread's sequential sum: no thread dependence
    assert torch.equal(native(x, threads=3), out)  # uneven shares: threads take the chunks left in others' shares


@needs_kernels
def test_q4_group_sizes_and_round_trip():
    torch.manual_seed(0)
    w = torch.randn(16, 256)
    for group in (32, 64, 128, 256):
        codes, sm = pack_q4(w, group)
        back = dequantize_q4(codes, sm, group_size=group)
        step = (w.reshape(16, -1, group).amax(-1) - w.reshape(16, -1, group).amin(-1)) / 15
        assert float(((back - w).reshape(16, -1, group).abs().amax(-1) / step).max()) <= 0.51
        x = torch.randn(1, 256)
        got = NativeWeight.q4(codes, sm, group_size=group)(x)
        assert float((got - x @ back.T).abs().max()) < 0.02 * float((x @ back.T).abs().max())
    with pytest.raises(ValueError, match="multiple of 32"):
        pack_q4(w, 48)


@needs_kernels
def test_step_matches_torch_ops_and_transformers(tiny_lfm2):
    """Whole native steps: float32 within rounding of torch's ops (and the same greedy tokens as transformers);
    bfloat16 rounds where torch's bfloat16 ops round, so its logits stay within a few bfloat16 steps."""
    from mm.backbone import Backbone, GenerationSettings
    from mm.fast_decode import FastLfm2

    bb = Backbone.load(tiny_lfm2, dtype="float32")
    assert bb.fast().native is not None
    inputs = bb.encode_chat([[{"role": "user", "content": "Tell me about the moon and the tides."}]])
    settings = GenerationSettings(max_new_tokens=24)
    assert bb.generate(inputs, settings, engine="native") == bb.generate(inputs, settings, engine="transformers")
    for dtype, tol in (("float32", 1e-4), ("bfloat16", 0.03)):
        model = Backbone.load(tiny_lfm2, dtype=dtype).model
        native, plain = FastLfm2(model, kernels="native"), FastLfm2(model, kernels="torch")
        ids = torch.tensor([[1, 5, 9, 14, 2]])
        a, b = native.prefill(ids, max_new_tokens=8), plain.prefill(ids, max_new_tokens=8)
        for token in (3, 8, 13, 21):
            la = native.logits(native.step(a, torch.tensor([token]))).float()
            lb = plain.logits(plain.step(b, torch.tensor([token]))).float()
            assert float((la - lb).abs().max()) <= tol * float(lb.abs().max()), dtype
        for idx in a.keys:  # the KV caches and conv states were written the same way
            filled = slice(0, a.length)  # positions after the last step are unwritten buffer
            torch.testing.assert_close(a.keys[idx][:, :, filled].float(), b.keys[idx][:, :, filled].float(),
                                       rtol=tol, atol=tol)
            torch.testing.assert_close(a.values[idx][:, :, filled].float(), b.values[idx][:, :, filled].float(),
                                       rtol=tol, atol=tol)
        for idx in a.conv:
            torch.testing.assert_close(a.conv[idx].float(), b.conv[idx].float(), rtol=tol, atol=tol)


@needs_kernels
@pytest.mark.parametrize("quantize", [None, "int4"])
def test_step_weights_move_into_one_huge_page_pool_once(tiny_lfm2, quantize):
    """FastLfm2 with the native kernels re-homes every weight its step reads into its HugePagePool: the
    modules view the pool (no second copy), fused groups are copied once, tied embeddings follow the head."""
    from mm.backbone import Backbone
    from mm.fast_decode import FastLfm2
    from mm.quant import Int4Linear

    model = Backbone.load(tiny_lfm2, dtype="bfloat16", quantize=quantize).model
    fast = FastLfm2(model, kernels="native")
    modules = [*model.model.layers.modules(), model.lm_head]
    plain = [m.weight for m in modules if type(m) is torch.nn.Linear]
    packed = [t for m in modules if isinstance(m, Int4Linear) for t in (m.codes, m.scale_min)]
    assert packed if quantize else not packed
    assert all(fast.pool.owns(t) for t in plain + packed)
    assert fast.pool.used == sum(t.nbytes for t in plain + packed)
    if not quantize:  # the tied input embedding is the head's weight, so it moved with it
        assert model.model.embed_tokens.weight.data_ptr() == model.lm_head.weight.data_ptr()
    again = FastLfm2(model, kernels="native")  # a second loop on the same model copies none of them again
    assert again.native is not None and again.pool.used == 0
    assert FastLfm2(model, kernels="torch").pool is None


@needs_kernels
def test_batched_and_padded_steps_use_torch_ops(tiny_lfm2):
    from mm.backbone import Backbone

    model = Backbone.load(tiny_lfm2, dtype="float32").model
    from mm.fast_decode import FastLfm2

    fast = FastLfm2(model)
    state = fast.prefill(torch.tensor([[1, 5, 9], [0, 1, 5]]), attention_mask=torch.tensor([[1, 1, 1], [0, 1, 1]]),
                         max_new_tokens=2)
    fast.step(state, torch.tensor([3, 4]))
    assert state.native is None  # two rows with padding: torch's ops, the native step is batch-1 only


def test_kernels_choice_is_validated(tiny_lfm2, monkeypatch):
    from mm.backbone import Backbone
    from mm.errors import InvalidInputError
    from mm.fast_decode import FastLfm2

    model = Backbone.load(tiny_lfm2, dtype="float32").model
    with pytest.raises(InvalidInputError, match="kernels='fast'"):
        FastLfm2(model, kernels="fast")
    assert FastLfm2(model, kernels="torch").native is None
    monkeypatch.setattr(build, "_load", lambda name="lfm2_step": (None, "no C++ compiler on PATH (install g++, or set CXX)"))
    with pytest.raises(kernels.KernelUnavailableError, match=r"no C\+\+ compiler"):
        FastLfm2(model, kernels="native")
    assert FastLfm2(model).native is None  # auto: torch's ops, no error


def test_build_caches_by_source_and_fails_clearly(tmp_path, monkeypatch):
    if build._compiler() is None:
        pytest.skip("no C++ compiler")
    monkeypatch.setenv("MM_KERNEL_CACHE", str(tmp_path))
    first = build._build(build._compiler(), "lfm2_step")
    assert first.parent == tmp_path and first.exists()
    assert build._build(build._compiler(), "lfm2_step") == first  # cached: same file, no rebuild
    assert not list(tmp_path.glob("*.tmp"))
    bad = tmp_path / "broken.cpp"
    bad.write_text("this is not C++")
    monkeypatch.setitem(build.SOURCES, "broken", (bad, {}))
    with pytest.raises(build.KernelUnavailableError, match=r"compiling broken\.cpp"):
        build._build(build._compiler(), "broken")
    assert not list(tmp_path.glob("*.tmp"))


@needs_kernels
def test_bad_shapes_are_refused_before_the_c_call():
    weight = NativeWeight.dense(torch.randn(8, 64))
    with pytest.raises(ValueError, match="32 features"):
        weight(torch.randn(4, 32))
    with pytest.raises(ValueError, match="multiple of 32 columns"):
        NativeWeight.q8(torch.zeros(4, 40, dtype=torch.int8), torch.ones(4))
