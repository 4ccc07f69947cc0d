"""bf16 prefill products upcast to float32 (mm.bf16_prefill): chosen by measurement, same numbers within bf16's own error."""

from __future__ import annotations

import functools
import math

import pytest

torch = pytest.importorskip("torch")

from mm.bf16_prefill import Fit, UpcastPrefill, _short_conv_forward, fit_gain  # noqa: E402
from mm.errors import InvalidInputError  # noqa: E402
from mm.fast_decode import FastLfm2  # noqa: E402

PROMPT_LENGTHS = (5, 40, 300)


@pytest.fixture(scope="module")
def models(tiny_lfm2):
    from transformers import AutoModelForCausalLM

    load = functools.partial(AutoModelForCausalLM.from_pretrained, tiny_lfm2)
    return load(dtype=torch.bfloat16).eval(), load(dtype=torch.float32).eval()


def _hidden(model, ids, upcast=None, mask=None):
    with torch.inference_mode():
        if upcast is None:
            return model.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        with upcast.applied(ids.numel()) as switched:
            assert switched == len(upcast.linears) + len(upcast.convs)
            return model.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()


@pytest.mark.parametrize("length", PROMPT_LENGTHS)
def test_upcast_hidden_states_stay_within_bf16_error(models, length, record_property):
    """Upcast vs transformers' bf16 forward differ by no more than bf16 itself differs from float32.

    Both multiply the same bf16 values and round each product's output to bf16 once; only the order of the
    float32 sums differs, so a rounding tie may resolve one bf16 ulp apart and propagate, which is bf16's own
    error: bounded here by max|bf16 - float32| over the same prompt (and exact on short prompts).
    """
    bf16, fp32 = models
    ids = torch.randint(10, 500, (2, length), generator=torch.Generator().manual_seed(length))
    upcast = UpcastPrefill(bf16.model, "always")
    assert upcast.linears and upcast.convs
    ref, mine, exact = _hidden(bf16, ids), _hidden(bf16, ids, upcast), _hidden(fp32, ids)
    spread = {"upcast_vs_bf16": float((mine - ref).abs().max()), "bf16_vs_fp32": float((ref - exact).abs().max()),
              "max_abs_value": float(ref.abs().max())}
    record_property("max_abs_diff", spread)
    print(f"{length} tokens: {spread}")
    assert (mine - ref).abs().max() <= (ref - exact).abs().max()
    assert (mine - ref).abs().mean() <= 0.25 * (ref - exact).abs().mean()
    assert not any("forward" in vars(m) for m in bf16.modules())  # every switched forward was removed


def test_upcast_greedy_tokens_equal_transformers_bf16(models):
    bf16, _ = models
    fast = FastLfm2(bf16, kernels="torch", prefill_upcast="always")
    for seed in range(3):
        ids = torch.randint(10, 500, (1, 48), generator=torch.Generator().manual_seed(seed))
        with torch.inference_mode():
            ref = bf16.generate(input_ids=ids, max_new_tokens=12, do_sample=False, eos_token_id=None)[0, 48:]
        assert fast.generate(ids, max_new_tokens=12).tolist()[0] == ref.tolist()


def test_short_conv_replica_is_transformers_forward_in_float32(models):
    """The short-conv forward mm swaps in equals transformers' own bit for bit where upcasting is a no-op (fp32):
    padding mask, cache update and slicing included (a padded prompt, then a second multi-token chunk)."""
    from transformers import DynamicCache

    _, fp32 = models
    ids = torch.randint(10, 500, (2, 12), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    more = torch.randint(10, 500, (2, 5), generator=torch.Generator().manual_seed(4))

    def run():
        cache = DynamicCache(config=fp32.config)
        with torch.inference_mode():
            first = fp32.model(input_ids=ids, attention_mask=mask, cache=cache, use_cache=True).last_hidden_state
            full = torch.cat([mask, torch.ones_like(more)], dim=1)
            second = fp32.model(input_ids=more, attention_mask=full, cache=cache, use_cache=True).last_hidden_state
        return first, second

    ref = run()
    convs = [layer.conv for layer in fp32.model.layers if not layer.is_attention_layer]
    for conv in convs:
        conv.forward = functools.partial(_short_conv_forward, conv)
    try:
        mine = run()
    finally:
        for conv in convs:
            del conv.forward
    assert all(torch.equal(a, b) for a, b in zip(ref, mine, strict=True))


def test_choice_follows_measured_timings(models):
    """Injected timings decide: linears upcast from their fitted crossover (13 rows) on, the conv never."""
    bf16, _ = models
    timings = {"linear": {4: (1.0, 3.0), 32: (11.0, 6.0)},  # saving -2 s at 4 rows, +5 s at 32: zero at 12
               "conv": {4: (1.0, 2.0), 32: (1.5, 4.0)}}    # float32 slower at every count
    calls = []

    def measure(kind, weight, bias):
        calls.append(kind)
        return fit_gain(timings[kind])

    upcast = UpcastPrefill(bf16.model, "auto", measure=measure)
    assert [len(upcast.choose(rows)) for rows in (1, 12, 13, 4096)] == [0, 0, len(upcast.linears),
                                                                       len(upcast.linears)]
    assert set(calls) == {"linear", "conv"}
    assert set(upcast.describe().values()) == {13, math.inf}
    never = UpcastPrefill(bf16.model, "never", measure=measure)
    calls.clear()
    assert never.choose(4096) == [] and calls == []  # "never" measures nothing


def test_fit_keeps_a_shrinking_saving_within_the_probes():
    fit = fit_gain({4: (8.6, 0.2), 64: (8.5, 0.35)})  # per-row noise makes the saving shrink slightly
    assert fit.faster(1) and fit.faster(100_000) and fit.crossover == 1
    real = Fit(intercept=1.0, slope=-0.1, top=64)  # a saving that ends inside the measured range
    assert real.faster(5) and not real.faster(20) and real.crossover == math.inf
    with pytest.raises(InvalidInputError):
        fit_gain({4: (1.0, 1.0)})


def test_float32_int8_int4_have_nothing_to_upcast(tiny_lfm2):
    from mm.backbone import Backbone

    assert not UpcastPrefill(Backbone.load(tiny_lfm2, dtype="float32").model.model).linears
    int8 = UpcastPrefill(Backbone.load(tiny_lfm2, dtype="float32", quantize="int8").model.model)
    assert not int8.linears and not int8.convs
    int4 = UpcastPrefill(Backbone.load(tiny_lfm2, dtype="bfloat16", quantize="int4").model.model)
    assert not int4.linears  # int4 codes stay int4; only the bf16 short convolutions may upcast
    with pytest.raises(InvalidInputError, match="prefill_upcast"):
        FastLfm2(Backbone.load(tiny_lfm2, dtype="bfloat16").model, prefill_upcast="sometimes")


def test_fast_engine_keeps_transformers_prefill_and_auto_measures(tiny_lfm2):
    from mm.backbone import Backbone

    bb = Backbone.load(tiny_lfm2, dtype="bfloat16")
    assert bb.fast("fast").upcast.mode == "never"  # engine="fast": bit-exact reference, transformers' products
    assert bb.fast("auto").upcast.mode == "auto"
