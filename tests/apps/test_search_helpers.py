"""The search app's own logic: filters, documents from uploads, passages and highlighting."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from mm.apps.search import highlight, parse_filters, passage, read_documents, results_html

from mm.errors import InputTooLargeError, InvalidInputError


def test_parse_filters():
    assert parse_filters("lang=en; year=2020, draft=false") == {"lang": "en", "year": 2020, "draft": False}
    assert parse_filters("title = A B ") == {"title": "A B"}
    assert parse_filters('{"lang": ["en", "de"]}') == {"lang": ["en", "de"]}
    assert parse_filters("  ") == {}
    for bad in ("lang", "=en", "lang=", "{not json", "[1, 2]", '{"": 1}'):
        with pytest.raises(InvalidInputError):
            parse_filters(bad)


def test_read_documents_formats(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"id": 1, "text": "a", "lang": "en"}\n\n{"text": "b", "metadata": {"x": 1}}\n')
    assert read_documents(tmp_path / "d.jsonl") == [
        {"text": "a", "id": "1", "metadata": {"lang": "en"}}, {"text": "b", "metadata": {"x": 1}}]
    (tmp_path / "d.json").write_text(json.dumps({"documents": [{"text": "c"}]}))
    assert read_documents(tmp_path / "d.json") == [{"text": "c"}]
    (tmp_path / "d.csv").write_text("id,text,lang\nq1,hello there,en\n")
    assert read_documents(tmp_path / "d.csv") == [{"text": "hello there", "id": "q1", "metadata": {"lang": "en"}}]
    (tmp_path / "notes.txt").write_text("first para\nstill first\n\n\nsecond para\n")
    docs = read_documents(tmp_path / "notes.txt")
    assert [d["text"] for d in docs] == ["first para\nstill first", "second para"]
    assert docs[1]["id"] == "notes-1" and docs[1]["metadata"] == {"source": "notes.txt"}


def test_read_documents_errors(tmp_path, monkeypatch):
    cases = {
        "a.jsonl": ('{"text": "ok"}\n{broken\n', "line 2 is not valid JSON"),
        "b.jsonl": ('{"title": "no text"}\n', "non-empty 'text'"),
        "c.csv": ("id,body\n1,x\n", "'text' column"),
        "d.json": ('"just a string"', "list of documents"),
        "e.txt": ("   \n\n ", "holds no documents"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_text(content)
        with pytest.raises(InvalidInputError, match=message):
            read_documents(tmp_path / name)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(InvalidInputError, match="UTF-8"):
        read_documents(tmp_path / "latin1.txt")
    monkeypatch.setattr("mm.apps.search.MAX_DOCUMENTS_PER_UPLOAD", 2)
    (tmp_path / "many.txt").write_text("a\n\nb\n\nc\n")
    with pytest.raises(InputTooLargeError, match="3 documents"):
        read_documents(tmp_path / "many.txt")


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
    hits = [SimpleNamespace(id="d<1>", score=3.14159, text="A fox.", metadata={"lang": "en"}),
            SimpleNamespace(id="d2", score=1.0, text="A dog.", metadata=None)]
    out = results_html(hits, "fox")
    assert out.index('data-rank="1"') < out.index('data-rank="2"')
    assert "score 3.1416" in out and "d&lt;1&gt;" in out and "<mark>fox</mark>" in out and "lang: en" in out
    assert "No documents matched" in results_html([], "fox")
