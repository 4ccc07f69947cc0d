"""One API shape: the result family, the shared generation options (declared once, per stage, checked),
and no process-wide side effects (threads, RNG) from pipeline calls."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import mm
from mm.backbone import cut_at_stop
from mm.base import Pipeline
from mm.errors import InvalidInputError, UnsupportedOptionError
from mm.options import GENERATION_OPTIONS, STAGES, Option, text
from mm.results import STOP_REASONS, GenerationResult

GENERATION_NAMES = [o.name for o in GENERATION_OPTIONS]
WAVE = (np.sin(np.linspace(0, 2000, 16000)) * 0.3).astype(np.float32)


@pytest.fixture(scope="module")
def chat(tiny_lfm2):
    return mm.pipeline("chat", model=tiny_lfm2, dtype="float32")


@pytest.fixture(scope="module")
def vqa(tmp_path_factory):
    from mm.testing import make_tiny_lfm2_vl

    return mm.pipeline("vqa", model=make_tiny_lfm2_vl(tmp_path_factory.mktemp("vl")), dtype="float32")


@pytest.fixture(scope="module")
def audio_path(tmp_path_factory):
    from mm.testing import make_tiny_lfm2_audio

    return make_tiny_lfm2_audio(tmp_path_factory.mktemp("audio"))


@pytest.fixture(scope="module")
def s2s(audio_path):
    return mm.pipeline("s2s", model=audio_path, dtype="float32")


@pytest.fixture(scope="module")
def asr(audio_path):
    return mm.pipeline("asr", model=audio_path, dtype="float32")


@pytest.fixture(scope="module")
def tts(audio_path):
    return mm.pipeline("tts", model=audio_path, dtype="float32")


def calls(chat, vqa, s2s, asr, tts):
    """One small call per generating pipeline: ``(name, pipeline, input)``."""
    image = np.zeros((64, 64, 3), np.uint8)
    return [("chat", chat, "Hello"), ("vqa", vqa, (image, "What is this?")), ("s2s", s2s, (WAVE, 16000)),
            ("asr", asr, (WAVE, 16000)), ("tts", tts, "Hello there")]


def check_result(result: GenerationResult, name: str) -> None:
    assert isinstance(result, GenerationResult), name
    assert isinstance(result.text, str) and str(result) == result.text
    assert isinstance(result.token_ids, list) and all(type(t) is int for t in result.token_ids)
    assert result.stop_reason in STOP_REASONS, (name, result.stop_reason)
    assert result.usage and all(type(v) is int and v >= 0 for v in result.usage.values()), result.usage
    assert result.usage["prompt_tokens"] > 0 and result.usage["generated_tokens"] >= 0
    assert result.timings and all(type(v) is float and k.endswith("_s") for k, v in result.timings.items()), \
        result.timings


def test_every_generating_pipeline_returns_the_result_family(chat, vqa, s2s, asr, tts):
    for name, pipe, item in calls(chat, vqa, s2s, asr, tts):
        result = pipe(item, max_new_tokens=4)
        check_result(result, name)
        assert len(result.token_ids) <= 4
    assert vqa((np.zeros((64, 64, 3), np.uint8), "Q"), max_new_tokens=2).usage["image_tokens"] > 0
    assert s2s((WAVE, 16000), max_new_tokens=2).usage["audio_input_tokens"] > 0


def test_generation_options_have_one_name_set(chat, vqa, s2s, asr, tts):
    """chat, vqa and speech-to-speech accept the same generation options, declared with the same checks."""
    for pipe in (chat, vqa, s2s):
        declared = pipe.declared_options()
        for opt in GENERATION_OPTIONS:
            assert declared[opt.name].check is opt.check and declared[opt.name].stage == "forward"
    assert {"audio_temperature", "audio_top_k"} <= set(s2s.declared_options()) & set(tts.declared_options())
    assert set(GENERATION_NAMES) <= set(asr.declared_options())
    for pipe in (chat, vqa, s2s, asr, tts):
        assert all(o.stage in STAGES for o in pipe.declared_options().values())


@pytest.mark.parametrize(("option", "value", "message"), [
    ("temperature", math.nan, "temperature must be a finite number"),
    ("temperature", -1.0, "temperature must be a finite number > 0"),
    ("top_k", 1.5, "top_k must be a positive integer"),
    ("top_p", 0.0, "top_p must be a number in"),
    ("stop", 123, "stop must be a string or a list"),
    ("seed", "abc", "seed must be an integer"),
    ("max_new_tokens", True, "max_new_tokens must be a positive integer"),
    ("do_sample", "yes", "do_sample must be True or False"),
])
def test_bad_option_values_are_refused_alike(chat, vqa, s2s, option, value, message):
    image = np.zeros((32, 32, 3), np.uint8)
    for pipe, item in ((chat, "Hi"), (vqa, (image, "Q")), (s2s, (WAVE, 16000))):
        extra = {"do_sample": True} if option in ("temperature", "top_k", "top_p") else {}
        with pytest.raises(InvalidInputError, match=message):
            pipe(item, **{**extra, option: value})


def test_sampling_knobs_need_do_sample(chat, s2s):
    for pipe, item in ((chat, "Hi"), (s2s, (WAVE, 16000))):
        with pytest.raises(InvalidInputError, match="only apply when sampling"):
            pipe(item, top_p=0.9)


def test_renamed_options_are_refused(s2s):
    with pytest.raises(UnsupportedOptionError, match="text_temperature"):
        s2s((WAVE, 16000), text_temperature=0.5)


def test_stop_strings_set_stop_reason(chat, s2s):
    full = chat("Hello", max_new_tokens=12)
    if len(full.text) < 3:
        pytest.skip("the tiny model produced too little text")
    cut = chat("Hello", max_new_tokens=12, stop=full.text[1:3])
    assert cut.text == cut_at_stop(full.text, [full.text[1:3]]) and cut.stop_reason == "stop"
    reply = s2s((WAVE, 16000), max_new_tokens=30)
    if len(reply.text) >= 3:
        stopped = s2s((WAVE, 16000), max_new_tokens=30, stop=[reply.text[1:3]])
        assert stopped.text == cut_at_stop(reply.text, [reply.text[1:3]]) and stopped.stop_reason == "stop"
        pieces = [p for p in s2s.stream((WAVE, 16000), max_new_tokens=30, stop=[reply.text[1:3]])
                  if isinstance(p, str)]
        assert "".join(pieces) == stopped.text


class Recorder(Pipeline):
    """Records which options each stage receives."""

    task = "recorder"
    call_options = (Option("prefix", "", "preprocess", text), Option("times", 1, "forward"),
                    Option("suffix", "", "postprocess", text))
    seen: dict = {}

    def preprocess(self, item, **options):
        Recorder.seen["preprocess"] = options
        return options["prefix"] + item

    def _forward(self, batch, **options):
        Recorder.seen["forward"] = options
        return [x * options["times"] for x in batch]

    def postprocess(self, output, **options):
        Recorder.seen["postprocess"] = options
        return output + options["suffix"]


def test_each_stage_receives_only_its_options():
    pipe = Recorder(None, suffix="!")  # a call option given at construction is the pipeline's default
    assert pipe("ab", prefix=">", times=2) == ">ab>ab!"
    assert Recorder.seen == {"preprocess": {"prefix": ">"}, "forward": {"times": 2}, "postprocess": {"suffix": "!"}}
    with pytest.raises(InvalidInputError, match="prefix must be a string"):
        pipe("ab", prefix=3)
    with pytest.raises(InvalidInputError, match="suffix must be a string"):
        Recorder(None, suffix=3)


def test_search_returns_search_results(tmp_path):
    import pathlib

    from mm.index import build_job

    from mm.results import SearchResults

    src = pathlib.Path(tmp_path) / "c.jsonl"
    src.write_text('{"_id": "a", "text": "The Eiffel tower is in Paris."}\n'
                   '{"_id": "b", "text": "Cologne has a cathedral."}\n')
    index = tmp_path / "idx"
    build_job(src, index, encoder="minilm", progress=False)
    search = mm.pipeline("search", index=index)
    hits = search("Eiffel", k=1)
    assert isinstance(hits, SearchResults) and len(hits) == 1 and hits[0].id == "a"
    assert set(hits.timings) == {"encode_s", "search_s"} and all(v >= 0 for v in hits.timings.values())
    assert [type(h) for h in search(["a", "b"], k=1)] == [SearchResults, SearchResults]


# -- no process-wide side effects -------------------------------------------------------------------


def test_calls_leave_threads_and_global_rng_alone(tiny_lfm2, tmp_path_factory, audio_path):
    from mm.testing import make_tiny_lfm2_vl

    before_threads = torch.get_num_threads()
    wanted = 1 if before_threads != 1 else 2
    chat = mm.pipeline("chat", model=tiny_lfm2, dtype="float32", threads=wanted)
    vqa = mm.pipeline("vqa", model=make_tiny_lfm2_vl(tmp_path_factory.mktemp("vl2")), dtype="float32",
                      threads=wanted)
    s2s = mm.pipeline("s2s", model=audio_path, dtype="float32", threads=wanted)
    assert torch.get_num_threads() == before_threads  # loading changes nothing either
    image = np.zeros((32, 32, 3), np.uint8)
    sampled = {"do_sample": True, "temperature": 1.3, "seed": 7, "max_new_tokens": 4}
    for engine in ("fast", "transformers"):
        chat.engine = vqa.engine = s2s.engine = engine
        for pipe, item in ((chat, "Hi"), (vqa, (image, "Q")), (s2s, (WAVE, 16000))):
            torch.manual_seed(1234)
            state = torch.get_rng_state()
            first = pipe(item, **sampled)
            assert torch.equal(torch.get_rng_state(), state), (type(pipe).__name__, engine)
            assert torch.get_num_threads() == before_threads
            torch.manual_seed(99)  # a different global state does not change a seeded result
            assert pipe(item, **sampled).token_ids == first.token_ids
            state = torch.get_rng_state()
            list(pipe.stream(item, **sampled))
            assert torch.equal(torch.get_rng_state(), state), (type(pipe).__name__, engine, "stream")
            assert torch.get_num_threads() == before_threads


@pytest.mark.parametrize("preset", [False, True])
def test_calls_leave_flush_denormal_alone(chat, vqa, s2s, asr, tts, preset, tmp_path):
    """torch's flush-denormal mode is process-wide (per thread, inherited by new threads): pipelines,
    their streams, the HTTP app and a search call must leave it as the caller set it, on or off."""
    from fastapi.testclient import TestClient
    from mm.index import build_job

    from mm.runtime import flush_denormal_enabled
    from mm.server import ServerConfig, create_app

    original = flush_denormal_enabled()
    if torch.set_flush_denormal(preset) is False and preset:
        pytest.skip("this CPU cannot flush denormals")
    try:
        assert flush_denormal_enabled() is preset
        for name, pipe, item in calls(chat, vqa, s2s, asr, tts):
            pipe(item, max_new_tokens=3)
            assert flush_denormal_enabled() is preset, name
            list(pipe.stream(item, max_new_tokens=2))
            assert flush_denormal_enabled() is preset, f"{name}.stream"
        (tmp_path / "c.jsonl").write_text('{"_id": "a", "text": "one two"}\n{"_id": "b", "text": "three"}\n')
        build_job(tmp_path / "c.jsonl", tmp_path / "idx", encoder="minilm", progress=False)
        mm.pipeline("search", index=tmp_path / "idx")("one", k=1)
        with TestClient(create_app(ServerConfig(), load_models=False)) as client:
            client.get("/v1/models")
        assert flush_denormal_enabled() is preset, "search / server"
    finally:
        torch.set_flush_denormal(original)


def test_threads_apply_during_the_call(tiny_lfm2):
    seen = []
    chat = mm.pipeline("chat", model=tiny_lfm2, dtype="float32", threads=1)
    original = chat.backbone.generate_rows

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    chat.backbone.generate_rows = spy
    try:
        chat("Hi", max_new_tokens=2)
    finally:
        del chat.backbone.generate_rows
    assert seen == [1]
    with pytest.raises(InvalidInputError, match="threads must be a positive integer"):
        mm.pipeline("chat", model=tiny_lfm2, dtype="float32", threads=0)


def test_random_weight_factories_leave_the_global_rng_alone(tmp_path):
    from mm.testing import make_tiny_lfm2

    torch.manual_seed(5)
    state = torch.get_rng_state()
    make_tiny_lfm2(tmp_path / "a", seed=3)
    assert torch.equal(torch.get_rng_state(), state)
