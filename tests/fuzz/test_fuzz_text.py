"""Fuzz text, messages and generation options on a tiny LFM2 chat model: a reply or an MMError, never more."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st

from tests.fuzz.harness import any_scalar, any_text, any_value, floats, fuzz_tests

ROLES = st.sampled_from(["system", "user", "assistant", "tool", "bot", "", None, 3])
message = st.one_of(
    st.fixed_dictionaries({"role": ROLES, "content": st.one_of(any_text, any_value)}),
    st.dictionaries(st.text(max_size=8), any_value, max_size=3),
    any_scalar,
)
CHAT_INPUTS = st.one_of(any_text, st.lists(message, max_size=4), any_value)

OPTION_VALUES = {
    "max_new_tokens": st.one_of(st.integers(-3, 4), any_scalar),
    "do_sample": st.one_of(st.booleans(), any_scalar),
    "temperature": st.one_of(floats(0, 3), any_scalar),
    "top_k": st.one_of(st.integers(-2, 50), floats(0, 5), any_scalar),
    "top_p": st.one_of(floats(-1, 2), any_scalar),
    "repetition_penalty": st.one_of(floats(-1, 3), any_scalar),
    "stop": st.one_of(any_text, st.lists(any_text, max_size=3), any_scalar),
    "seed": st.one_of(st.integers(-5, 2**70), any_scalar),
    "system_prompt": st.one_of(any_text, any_scalar),
    "bogus_option": any_scalar,
}
options = st.fixed_dictionaries({}, optional=OPTION_VALUES)


@pytest.fixture(autouse=True)
def _chat(tiny_chat):
    global CHAT
    CHAT = tiny_chat


CHAT = None


def check_chat(case) -> None:
    item, opts = case
    opts = {"max_new_tokens": 2, **opts}
    if isinstance(opts.get("max_new_tokens"), int) and not isinstance(opts["max_new_tokens"], bool):
        opts["max_new_tokens"] = min(opts["max_new_tokens"], 4)  # keep cases short; the value checks still run
    result = CHAT(item, **opts)
    results = result if isinstance(result, list) else [result]
    assert all(isinstance(r.text, str) for r in results)


test_chat, test_chat_long = fuzz_tests("text+messages+options (chat)", st.tuples(CHAT_INPUTS, options), check_chat,
                                       long=200)


def check_stream(case) -> None:
    item, opts = case
    opts = {**opts, "max_new_tokens": 2}
    assert all(isinstance(piece, str) for piece in CHAT.stream(item, **opts))


test_chat_stream, test_chat_stream_long = fuzz_tests("text+options (chat.stream)", st.tuples(any_text, options),
                                                     check_stream, long=100)


def check_settings(opts) -> None:
    from mm.backbone import GenerationSettings

    fields = {k: v for k, v in opts.items() if k not in ("system_prompt", "bogus_option")}
    GenerationSettings(**fields).validate()


test_generation_settings, test_generation_settings_long = fuzz_tests("generation options (GenerationSettings)",
                                                                     options, check_settings, fast=200, long=3000)


def check_validators(case) -> None:
    from mm import validation as v

    value, which = case
    {"int": lambda: v.check_int(value, "x", minimum=0), "float": lambda: v.check_float(value, "x"),
     "bool": lambda: v.check_bool(value, "x"), "text": lambda: v.check_text(value, "x"),
     "strings": lambda: v.check_strings(value, "x"), "seed": lambda: v.check_seed(value),
     "rate": lambda: v.check_sample_rate(value), "workers": lambda: v.check_workers(value)}[which]()


test_validators, test_validators_long = fuzz_tests(
    "mm.validation", st.tuples(any_value, st.sampled_from(["int", "float", "bool", "text", "strings", "seed", "rate",
                                                           "workers"])), check_validators, fast=200, long=5000)
