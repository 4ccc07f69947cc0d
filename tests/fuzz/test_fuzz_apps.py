"""Fuzz what the apps receive: uploaded files (any bytes, any suffix), form fields and the search handler.

An upload or a field ends in a value or an MMError; a handler ends in a result or an error message
for the user - never the generic 'Something went wrong on the server' of an escaped exception.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import strategies as st

from mm.errors import InvalidInputError
from tests.fuzz.harness import any_scalar, any_text, any_value, fuzz_tests, small_index
from tests.fuzz.test_fuzz_media import _png, _wav, mutated

SUFFIXES = st.sampled_from([".png", ".jpg", ".webp", ".gif", ".wav", ".flac", ".mp3", ".ogg", ".txt", "", ".PNG"])


@st.composite
def uploads(draw):
    import numpy as np

    content = draw(st.one_of(st.binary(max_size=300), mutated(_png(30, 20, "RGB")),
                             mutated(_wav((np.sin(np.arange(3000) / 5) * 0.2).astype("float32"), 16000))))
    shape = draw(st.sampled_from(["path", "dict", "str", "missing", "value"]))
    return content, draw(SUFFIXES), shape, draw(any_scalar)


def _upload_value(content: bytes, suffix: str, shape: str, value):
    folder = Path(tempfile.mkdtemp(prefix="mm-fuzz-upload-"))
    path = folder / f"upload{suffix}"
    path.write_bytes(content)
    return {"path": path, "dict": {"path": str(path)}, "str": str(path), "missing": str(folder / "gone.png"),
            "value": value}[shape]


def check_upload(case) -> None:
    from mm.apps.common import AppLimits, load_audio, load_image

    content, suffix, shape, value = case
    upload = _upload_value(content, suffix, shape, value)
    limits = AppLimits()
    if suffix in (".wav", ".flac", ".mp3", ".ogg"):
        clip = load_audio(upload, limits, target_rate=16000)
        assert clip.samples.size and clip.sample_rate == 16000
    else:
        image = load_image(upload, limits)
        assert image.mode == "RGB"


test_app_uploads, test_app_uploads_long = fuzz_tests("app uploads", uploads(), check_upload, fast=50, long=1000)


FIELDS = st.tuples(st.sampled_from(["text", "tokens", "filters"]), st.one_of(any_text, any_value))


def check_field(case) -> None:
    from mm.apps.common import AppLimits, check_new_tokens, check_text
    from mm.apps.search import parse_filters

    which, value = case
    limits = AppLimits()
    if which == "text":
        check_text(value, "question", limits)
    elif which == "tokens":
        check_new_tokens(value, limits)
    else:
        filters = parse_filters(value)
        json.dumps(filters)


test_app_fields, test_app_fields_long = fuzz_tests("app form fields", FIELDS, check_field, fast=100, long=3000)


@pytest.fixture(scope="module")
def search_slot(tmp_path_factory):
    from mm.apps.search import search_slot as make_slot

    slot = make_slot(str(small_index(tmp_path_factory.mktemp("fuzz-app"))))
    slot.load()
    return slot


SLOT = {}


@pytest.fixture(autouse=True)
def _slot(search_slot):
    SLOT["search"] = search_slot


class HandlerEscape(Exception):
    """A handler let an unexpected exception through (the user saw the generic server-fault message)."""


def check_search_handler(case) -> None:
    import gradio as gr
    from mm.apps.common import AppLimits, user_errors
    from mm.apps.search import run_search

    query, k, filters = case
    try:
        html, status = user_errors(run_search)(SLOT["search"], AppLimits(), query, k, filters)
    except gr.Error as exc:
        if "Something went wrong on the server" in str(exc.message):
            raise HandlerEscape(f"{exc.__cause__!r}") from exc
        raise InvalidInputError(str(exc.message)) from exc  # refused with a message for the user: counted so
    assert isinstance(html, str) and isinstance(status, str)


test_search_handler, test_search_handler_long = fuzz_tests(
    "app search handler", st.tuples(any_text, st.one_of(st.integers(-2, 60), any_scalar),
                                    st.one_of(any_text, st.sampled_from(["lang=en", '{"lang": "en"}', "x=1;y=2"]))),
    check_search_handler, fast=40, long=600)
