"""Corpus reading: formats, metadata, and bad input named by file and line."""

from __future__ import annotations

import json

import pytest

from mm.corpus import CorpusError, CorpusReader, read_queries


def _write(path, text: str | bytes):
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_beir_jsonl_title_and_metadata(tmp_path):
    path = _write(tmp_path / "corpus.jsonl", json.dumps(
        {"_id": "d1", "title": "Paris", "text": "Capital of France.", "metadata": {"year": 2020}, "lang": "en"}
    ) + "\n\n")
    [doc] = CorpusReader(path).read_all()
    assert (doc.id, doc.text) == ("d1", "Paris Capital of France.")
    assert doc.metadata == {"title": "Paris", "year": 2020, "lang": "en"}


def test_csv_tsv_and_parquet(tmp_path):
    csv_docs = CorpusReader(_write(tmp_path / "c.csv", 'id,text,lang\n1,"Hello, world",en\n2,Hola,es\n')).read_all()
    assert [(d.id, d.text, d.metadata["lang"]) for d in csv_docs] == [("1", "Hello, world", "en"), ("2", "Hola", "es")]
    tsv_docs = CorpusReader(_write(tmp_path / "c.tsv", "docid\tcontents\na\tAlpha\n")).read_all()
    assert [(d.id, d.text) for d in tsv_docs] == [("a", "Alpha")]
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"doc_id": ["x", "y"], "body": ["Xylophone", "Yak"], "n": [1, 2]}), tmp_path / "c.parquet")
    pq_docs = CorpusReader(tmp_path / "c.parquet").read_all()
    assert [(d.id, d.text, d.metadata) for d in pq_docs] == [("x", "Xylophone", {"n": 1}), ("y", "Yak", {"n": 2})]


def test_folder_of_text_files(tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    _write(tmp_path / "docs" / "a.txt", "Alpha text")
    _write(tmp_path / "docs" / "sub" / "b.md", "# Beta\nMarkdown")
    _write(tmp_path / "docs" / "ignored.bin", b"\x00\x01")
    docs = CorpusReader(tmp_path / "docs").read_all()
    assert [(d.id, d.metadata["path"]) for d in docs] == [("a.txt", "a.txt"), ("sub/b.md", "sub/b.md")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match=r"no \.txt or \.md"):
        CorpusReader(tmp_path / "empty").read_all()


BAD_LINES = [
    ('{"_id": "a", "text": "ok"}\n{"_id": "b", "text": \n', 2, "invalid JSON"),
    ('{"_id": "a", "text": "ok"}\n{"text": "no id"}\n', 2, "no id"),
    ('{"_id": "a", "text": "ok"}\n{"_id": "b"}\n', 2, "no text"),
    ('{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "  "}\n', 2, "empty text"),
    ('{"_id": "a", "text": "ok"}\n{"_id": "a", "text": "again"}\n', 2, "duplicate id 'a'"),
    ('{"_id": "a", "text": "ok"}\n["a", "list"]\n', 2, "expected an object"),
    ('{"_id": "a", "text": "ok"}\n{"_id": "b", "text": 5}\n', 2, "expected a string"),
]


@pytest.mark.parametrize("content, line, reason", BAD_LINES)
def test_malformed_record_names_file_and_line(tmp_path, content, line, reason):
    path = _write(tmp_path / "corpus.jsonl", content + '{"_id": "z", "text": "last"}\n')
    with pytest.raises(CorpusError) as info:
        CorpusReader(path).read_all()
    assert f"corpus.jsonl:{line}:" in str(info.value) and reason in str(info.value)
    reader = CorpusReader(path, skip_bad=True)
    ids = [d.id for d in reader]
    assert ids[0] == "a" and ids[-1] == "z"
    assert len(reader.skipped) == 1 and reader.skipped[0].where.endswith(f"corpus.jsonl:{line}")


def test_invalid_utf8_is_named(tmp_path, caplog):
    path = _write(tmp_path / "corpus.jsonl", b'{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "\xff\xfe"}\n')
    with pytest.raises(CorpusError, match=r"corpus\.jsonl:2: invalid UTF-8"):
        CorpusReader(path).read_all()
    reader = CorpusReader(path, skip_bad=True)
    assert [d.id for d in reader] == ["a"]
    assert "invalid UTF-8" in caplog.text and len(reader.skipped) == 1


def test_csv_row_with_wrong_field_count(tmp_path):
    path = _write(tmp_path / "c.csv", "id,text\n1,one\n2,two,extra\n")
    with pytest.raises(CorpusError, match=r"c\.csv:3: row has 3 fields"):
        CorpusReader(path).read_all()


def test_unsupported_or_missing_source(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        CorpusReader(tmp_path / "nope.jsonl")
    with pytest.raises(CorpusError, match="unsupported corpus file type"):
        CorpusReader(_write(tmp_path / "c.xml", "<x/>"))
    with pytest.raises(CorpusError, match="not a readable parquet"):
        CorpusReader(_write(tmp_path / "bad.parquet", b"garbage")).read_all()


def test_read_queries(tmp_path):
    path = _write(tmp_path / "q.jsonl", '{"_id": "q1", "text": "hello"}\n{"_id": "q2", "text": "world"}\n')
    assert read_queries(path) == [("q1", "hello"), ("q2", "world")]
    with pytest.raises(CorpusError, match="no queries"):
        read_queries(_write(tmp_path / "empty.jsonl", "\n"))
