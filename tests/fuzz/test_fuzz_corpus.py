"""Fuzz corpus files of every format (jsonl/json/ndjson, csv/tsv, parquet, a folder of .txt/.md)."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

from hypothesis import strategies as st

from tests.fuzz.harness import any_text, any_value, fuzz_tests

ID_KEYS = st.sampled_from(["_id", "id", "doc_id", "ID", ""])
TEXT_KEYS = st.sampled_from(["text", "contents", "title", "body", "metadata", "x"])
record = st.one_of(
    st.dictionaries(st.one_of(ID_KEYS, TEXT_KEYS, st.text(max_size=6)), any_value, max_size=5),
    st.fixed_dictionaries({"_id": st.one_of(any_text, any_value), "text": st.one_of(any_text, any_value)},
                          optional={"title": any_text, "metadata": any_value, "lang": any_text}),
    any_value,
)


def _json_line(value) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    except (ValueError, TypeError):
        return repr(value).encode("utf-8", "surrogatepass")


raw_line = st.one_of(
    record.map(_json_line),
    st.binary(max_size=60),
    st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(4000, 20000).map(lambda n: b'{"_id": "big", "text": "t", "n": ' + b"9" * n + b"}"),
    st.sampled_from([b'{"_id": "a#0", "text": "x"}', b'{"_id": "a", "text": "y"}', b'{"_id": "n", "text": NaN}',
                     b'{"_id": "s", "text": "\\ud800"}', b'{"_id": "\\udc80", "text": "t"}', b"\xff\xfe", b""]),
)
JSONL = st.lists(raw_line, max_size=8).map(lambda lines: b"\n".join(lines))


def _table_bytes(rows: list[list[str]], delimiter: str) -> bytes:
    return "\n".join(delimiter.join(row) for row in rows).encode("utf-8", "surrogatepass")


CSV = st.one_of(
    st.lists(st.lists(any_text, max_size=4), max_size=6).map(lambda rows: _table_bytes([["id", "text"], *rows], ",")),
    st.binary(max_size=200),
    st.lists(st.lists(any_text, max_size=4), max_size=6).map(lambda rows: _table_bytes(rows, ",")),
)


def _parquet_bytes(records: list) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"id": [str(i) for i in range(len(records))],
               "text": [r if isinstance(r, str) else json.dumps(r, default=str) for r in records]}
    sink = io.BytesIO()
    pq.write_table(pa.table({k: [v.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for v in vals]
                             for k, vals in columns.items()}), sink)
    return sink.getvalue()


@st.composite
def parquet(draw) -> bytes:
    data = bytearray(_parquet_bytes(draw(st.lists(st.one_of(any_text, any_value), min_size=1, max_size=5))))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            data[at] = draw(st.integers(0, 255))
        else:
            del data[at:]
            if not data:
                break
    return bytes(data)


FILES = st.one_of(
    st.tuples(st.sampled_from([".jsonl", ".json", ".ndjson"]), JSONL),
    st.tuples(st.sampled_from([".csv", ".tsv"]), CSV),
    st.tuples(st.just(".parquet"), st.one_of(parquet(), st.binary(max_size=100))),
    st.tuples(st.just("folder"), st.lists(st.tuples(st.sampled_from(["a.txt", "b.md", "sub/c.txt", "d.bin"]),
                                                    st.binary(max_size=80)), max_size=4)),
)


def check_corpus(case) -> None:
    from mm.corpus import CorpusReader

    (suffix, content), skip_bad = case
    root = Path(tempfile.mkdtemp(prefix="mm-fuzz-corpus-"))
    if suffix == "folder":
        target = root / "docs"
        target.mkdir()
        for name, data in content:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(data)
    else:
        target = root / f"corpus{suffix}"
        target.write_bytes(content)
    reader = CorpusReader(target, skip_bad=skip_bad)
    for doc in reader:
        assert isinstance(doc.id, str) and doc.id and isinstance(doc.text, str) and doc.text.strip()
        doc.id.encode("utf-8")
        doc.text.encode("utf-8")
        json.dumps(doc.metadata, allow_nan=False, ensure_ascii=False).encode("utf-8")


test_corpus, test_corpus_long = fuzz_tests("corpus files", st.tuples(FILES, st.booleans()), check_corpus,
                                           fast=60, long=1500)
