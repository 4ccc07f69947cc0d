"""Task registry, pipeline() factory and option checking."""

from __future__ import annotations

import pytest

import mm
from mm.base import Pipeline
from mm.errors import InvalidInputError, MMError, UnknownTaskError, UnsupportedOptionError


def test_tasks_lists_builtins_with_aliases_and_defaults():
    specs = {spec.name: spec for spec in mm.tasks()}
    assert {"chat", "vqa", "speech-to-speech", "asr", "tts", "search"} <= set(specs)
    assert "visual-question-answering" in specs["vqa"].aliases
    assert "s2s" in specs["speech-to-speech"].aliases
    assert specs["vqa"].default_model == "LiquidAI/LFM2-VL-450M"
    assert specs["speech-to-speech"].default_model == "LiquidAI/LFM2-Audio-1.5B"


@pytest.mark.parametrize("alias", ["vqa", "Visual-Question-Answering", "visual_question_answering"])
def test_aliases_resolve_case_and_separator_insensitively(alias):
    assert mm.registry.resolve_task(alias).name == "vqa"


def test_unknown_task_names_the_valid_ones():
    with pytest.raises(UnknownTaskError) as info:
        mm.pipeline("nope")
    assert isinstance(info.value, MMError)
    for name in ("chat", "vqa", "s2s", "search"):
        assert repr(name) in str(info.value)


class Reverse(Pipeline):
    task = "reverse"
    init_options = {"suffix": ""}
    call_options = {"upper": False}

    def setup(self, suffix=""):
        self.suffix = suffix

    def _forward(self, batch, upper=False):
        return [(s[::-1].upper() if upper else s[::-1]) + self.suffix for s in batch]


def test_third_party_registration_single_and_batch():
    mm.register_task("reverse", Reverse, aliases=["backwards"], description="reverse text", overwrite=True)
    pipe = mm.pipeline("backwards", suffix="!")
    assert pipe("abc") == "cba!"
    assert pipe(["ab", "cd"], upper=True) == ["BA!", "DC!"]
    assert "reverse" in [t.name for t in mm.tasks()]


def test_registering_a_taken_name_needs_overwrite():
    mm.register_task("reverse2", Reverse, overwrite=True)
    with pytest.raises(UnknownTaskError, match="already registered"):
        mm.register_task("reverse2", Reverse)


def test_unknown_init_and_call_options_are_rejected_with_choices():
    mm.register_task("reverse", Reverse, overwrite=True)
    with pytest.raises(UnsupportedOptionError, match="'suffix'"):
        mm.pipeline("reverse", sufix="!")
    pipe = mm.pipeline("reverse")
    with pytest.raises(UnsupportedOptionError, match="'upper'"):
        pipe("abc", uper=True)


def test_empty_batch_is_a_clear_error():
    mm.register_task("reverse", Reverse, overwrite=True)
    with pytest.raises(InvalidInputError, match="empty list"):
        mm.pipeline("reverse")([])


def test_streaming_is_refused_where_not_supported():
    mm.register_task("reverse", Reverse, overwrite=True)
    with pytest.raises(UnsupportedOptionError, match="does not stream"):
        list(mm.pipeline("reverse").stream("abc"))


def test_import_mm_is_light():
    import subprocess
    import sys

    code = "import sys, mm; mm.tasks(); print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
