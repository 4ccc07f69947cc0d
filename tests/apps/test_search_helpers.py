"""The search app's own logic: filters, passages, highlighting and result cards."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from mm.apps.search import highlight, parse_filters, passage, results_html

from mm.errors import InvalidInputError


def test_parse_filters():
    assert parse_filters("lang=en; year=2020, draft=false") == {"lang": "en", "year": 2020, "draft": False}
    assert parse_filters("title = A B ") == {"title": "A B"}
    assert parse_filters('{"lang": ["en", "de"]}') == {"lang": ["en", "de"]}
    assert parse_filters("  ") == {}
    for bad in ("lang", "=en", "lang=", "{not json", "[1, 2]", '{"": 1}'):
        with pytest.raises(InvalidInputError):
            parse_filters(bad)


def test_highlight_is_case_insensitive_multilingual_and_escaped():
    assert highlight("Über den FUCHS", "fuchs über") == "<mark>Über</mark> den <mark>FUCHS</mark>"
    assert highlight("東京は日本の首都です", "東京") == "<mark>東京</mark>は日本の首都です"
    out = highlight("<b>fox</b> & <script>x</script>", "fox script")
    assert "<script>" not in out and "<b>" not in out
    assert "&lt;<mark>script</mark>&gt;" in out and "<mark>fox</mark>" in out
    assert highlight("nothing here", "") == "nothing here"


def test_passage_picks_the_matching_window():
    text = " ".join(["filler"] * 200 + ["the", "golden", "gate", "bridge"] + ["filler"] * 200)
    window = passage(text, "golden bridge", words=20)
    assert "golden gate bridge" in window and window.startswith("… ") and window.endswith(" …")
    assert passage("short text", "x") == "short text"


def test_results_html():
    hits = [SimpleNamespace(id="d<1>", score=3.14159, text="A fox.", metadata={"lang": "en"}, chunk=2),
            SimpleNamespace(id="d2", score=1.0, text="A dog.", metadata=None, chunk=None)]
    out = results_html(hits, "fox")
    assert out.index('data-rank="1"') < out.index('data-rank="2"')
    assert "passage 3" in out and out.count("mm-hit-chunk") == 1
    assert "score 3.1416" in out and "d&lt;1&gt;" in out and "<mark>fox</mark>" in out and "lang: en" in out
    assert "No documents matched" in results_html([], "fox")
