"""The chat pipeline and the backbone's generation settings on a tiny checkpoint."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import mm
from mm.backbone import GenerationSettings, cut_at_stop
from mm.errors import InvalidInputError


@pytest.fixture(scope="module")
def chat(tiny_lfm2):
    return mm.pipeline("chat", model=tiny_lfm2, dtype="float32")


def test_hello_returns_text(chat):
    result = chat("Hello", max_new_tokens=8)
    assert isinstance(result.text, str) and result.text
    assert 1 <= len(result.token_ids) == result.usage["generated_tokens"] <= 8
    assert result.stop_reason in ("eos", "max_new_tokens") and result.usage["prompt_tokens"] > 0
    assert all(isinstance(v, float) and k.endswith("_s") for k, v in result.timings.items())


def test_greedy_matches_plain_transformers(chat, tiny_lfm2):
    tok = AutoTokenizer.from_pretrained(tiny_lfm2)
    model = AutoModelForCausalLM.from_pretrained(tiny_lfm2, dtype=torch.float32).eval()
    messages = [{"role": "user", "content": "What is the weather like in Paris today?"}]
    inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ref = model.generate(**inputs, max_new_tokens=12, do_sample=False)[0, inputs["input_ids"].shape[1]:].tolist()
    if 7 in ref:
        ref = ref[: ref.index(7)]
    assert chat(messages, max_new_tokens=12).token_ids == ref


def test_batch_left_padded_equals_single(chat):
    prompts = ["Hi", "Describe the image in one sentence please, with many words."]
    batched = chat(prompts, max_new_tokens=6)
    singles = [chat(p, max_new_tokens=6) for p in prompts]
    assert [r.token_ids for r in batched] == [r.token_ids for r in singles]


def test_stream_yields_the_same_text(chat):
    pieces = list(chat.stream("Hello there", max_new_tokens=10))
    assert "".join(pieces) == chat("Hello there", max_new_tokens=10).text


def test_sampling_with_seed_is_reproducible(chat):
    a = chat("Hello", max_new_tokens=8, do_sample=True, temperature=1.5, seed=3)
    b = chat("Hello", max_new_tokens=8, do_sample=True, temperature=1.5, seed=3)
    assert a.token_ids == b.token_ids


def test_stop_strings_cut_the_text(chat):
    full = chat("Hello", max_new_tokens=10).text
    if len(full) < 2:
        pytest.skip("tiny model produced too little text")
    stop = full[1:3]
    assert chat("Hello", max_new_tokens=10, stop=[stop]).text == cut_at_stop(full, [stop])
    assert "".join(chat.stream("Hello", max_new_tokens=10, stop=[stop])) == cut_at_stop(full, [stop])


def test_system_prompt_and_history(chat):
    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "And now?"}]
    assert isinstance(chat(conv, system_prompt="Be brief.", max_new_tokens=4).text, str)


@pytest.mark.parametrize("bad", ["", "   ", 42, [{"role": "wizard", "content": "x"}], [{"role": "user"}]])
def test_bad_messages_are_clear_errors(chat, bad):
    with pytest.raises(InvalidInputError):
        chat(bad)


@pytest.mark.parametrize("settings", [
    {"max_new_tokens": 0}, {"temperature": 0.5}, {"do_sample": True, "temperature": 0},
    {"do_sample": True, "top_p": 1.5}, {"do_sample": True, "top_k": 0},
])
def test_invalid_generation_settings_are_rejected(chat, settings):
    with pytest.raises(InvalidInputError):
        chat("Hello", **settings)


def test_generation_settings_neutralise_checkpoint_sampling_defaults():
    kwargs = GenerationSettings(max_new_tokens=3).validate().generate_kwargs()
    assert kwargs["do_sample"] is False and kwargs["temperature"] is None


def test_int8_quantization_runs_and_reports_tokens(tiny_lfm2):
    q = mm.pipeline("chat", model=tiny_lfm2, dtype="float32", quantize="int8")
    assert "DynamicQuantizedLinear" in repr(q.backbone.model)
    assert len(q("Hello", max_new_tokens=5).token_ids) >= 1


def test_bad_quantize_and_dtype_values(tiny_lfm2):
    with pytest.raises(InvalidInputError, match="int8"):
        mm.pipeline("chat", model=tiny_lfm2, quantize="int3")
    with pytest.raises(InvalidInputError, match="dtype"):
        mm.pipeline("chat", model=tiny_lfm2, dtype="float8")
    with pytest.raises(InvalidInputError, match="needs dtype='float32'"):
        mm.pipeline("chat", model=tiny_lfm2, dtype="bfloat16", quantize="int8")
