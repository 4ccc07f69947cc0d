"""Unit tests: chunking, checkpoint state, sources, option validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mm.index.job_encode import Chunking, DocEncoder, encode_sorted
from mm.index.job_source import FileSource
from mm.index.job_state import JobState, doc_key
from mm.index.job_types import Document, EncoderSpec, chunk_ids, content_hash
from mm.index.jobs import build_job

from mm.errors import InvalidInputError, MMError
from mm.testing.hash_encoder import HashEncoder
from tests.jobs.conftest import encoder, write_corpus


def test_chunks_fit_the_window_and_overlap():
    enc = HashEncoder(dim=4, max_tokens=10)
    words = [f"x{i}" for i in range(35)]
    chunks = Chunking(max_tokens=10, overlap=3).split(Document("a", " ".join(words)), enc)
    assert all(len(c.split()) <= 10 for c in chunks)
    assert chunks[0].split()[-3:] == chunks[1].split()[:3]  # 3 tokens of overlap
    covered = set(w for c in chunks for w in c.split())
    assert covered == set(words)  # nothing dropped
    assert chunks[-1].split()[-1] == "x34"


def test_short_and_empty_documents_are_one_chunk():
    enc = HashEncoder(dim=4)
    chunking = Chunking(max_tokens=10, overlap=2)
    assert chunking.split(Document("a", "one two", title="T"), enc) == ["T\n\none two"]
    assert chunking.split(Document("b", ""), enc) == [""]


def test_overlong_word_is_split_not_truncated():
    class CharTokens(HashEncoder):  # one token per character
        def count_tokens(self, texts):
            return [len(t) for t in texts]

    enc = CharTokens(dim=4, max_tokens=8)
    chunks = Chunking(max_tokens=8, overlap=0).split(Document("a", "ab " + "z" * 30), enc)
    assert all(len(c.replace(" ", "")) <= 8 for c in chunks)
    assert "".join(c.replace(" ", "") for c in chunks) == "ab" + "z" * 30


def test_chunking_rejects_bad_settings():
    with pytest.raises(InvalidInputError):
        Chunking(max_tokens=0)
    with pytest.raises(InvalidInputError):
        Chunking(max_tokens=8, overlap=8)


def test_length_sorted_batches_keep_input_order():
    calls = []

    class Recording(HashEncoder):
        def encode_chunks(self, texts):
            calls.append([len(t.split()) for t in texts])
            return super().encode_chunks(texts)

    enc = Recording(dim=4)
    texts = ["a " * n for n in (3, 9, 1, 7, 5, 2)]
    vecs, tokens = encode_sorted(enc, texts, batch_size=2)
    assert calls == [[9, 7], [5, 3], [2, 1]]  # longest first, similar lengths together
    assert tokens == [3, 9, 1, 7, 5, 2]
    for text, vec in zip(texts, vecs, strict=True):
        np.testing.assert_array_equal(vec, HashEncoder(dim=4).encode_chunks([text])[0])


def test_doc_encoder_groups_chunks_per_document():
    worker = DocEncoder.from_spec(encoder(), Chunking(max_tokens=48, overlap=8), batch_size=4)
    docs = [Document("a", "w " * 100), Document("b", "short")]
    out = worker.process(docs)
    assert [d.doc_id for d in out] == ["a", "b"]
    assert out[0].n_chunks == 3 and out[1].n_chunks == 1
    assert out[1].content_hash == content_hash(docs[1])
    assert all(v.shape[1] == 16 for d in out for v in d.vectors)


def test_state_roundtrip_fingerprint_and_duplicates(tmp_path):
    state = JobState(tmp_path / "s.sqlite")
    state.check_fingerprint({"enc": 1})
    state.commit_docs([("a", "h", 2, 10), ("b", "g", 1, 3)])
    assert state.lookup(["a", "c"]) == {"a": ("h", 2)}
    assert state.totals() == (2, 3, 13)
    keys = state.done_keys()
    assert doc_key("a", "h") in set(keys.tolist()) and len(keys) == 2
    state.start_run()
    state.mark_seen(["a"])
    with pytest.raises(InvalidInputError, match="'a' occurs more than once"):
        state.mark_seen(["x", "a"])
    assert list(state.unseen()) == [["b"]]
    state.close()
    again = JobState(tmp_path / "s.sqlite")
    with pytest.raises(InvalidInputError, match="different encoder/chunking"):
        again.check_fingerprint({"enc": 2})
    again.close()


def test_corrupt_state_file_is_a_clear_error(tmp_path):
    (tmp_path / "s.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(MMError, match="not a readable SQLite"):
        JobState(tmp_path / "s.sqlite").lookup(["a"])


def test_file_sources_stream_all_formats(tmp_path):
    rows = [{"id": "1", "text": "alpha", "title": "A"}, {"id": "2", "text": "beta", "title": ""}]
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    csv = tmp_path / "c.csv"
    csv.write_text("id,title,text\n1,A,alpha\n2,,beta\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha")
    (folder / "sub" / "b.md").write_text("beta")
    expected = [("1", "A alpha"), ("2", "beta")]  # mm.corpus rules: the title goes before the text
    for path in (jsonl, csv, tmp_path / "c.parquet"):
        src = FileSource(path)
        docs = list(src)
        assert [(d.id, d.text) for d in docs] == expected
        assert docs[0].metadata["title"] == "A"
        assert src.count() == 2
    assert [(d.id, d.text) for d in FileSource(folder)] == [("a.txt", "alpha"), ("sub/b.md", "beta")]


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        FileSource(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "1", "text": "ok"}\n{not json\n')
    with pytest.raises(InvalidInputError, match=r"bad\.jsonl:2: invalid JSON"):
        list(FileSource(bad))
    assert [d.id for d in FileSource(bad, skip_bad=True)] == ["1"]
    noid = tmp_path / "noid.jsonl"
    noid.write_text('{"text": "ok"}\n')
    with pytest.raises(InvalidInputError, match="record has no id"):
        list(FileSource(noid))
    weird = tmp_path / "c.xml"
    weird.write_text("<x/>")
    with pytest.raises(InvalidInputError, match="unsupported corpus file type"):
        FileSource(weird)


def test_chunk_ids():
    assert chunk_ids("d", 1) == ["d"]
    assert chunk_ids("d", 3) == ["d#0", "d#1", "d#2"]


def test_option_validation(tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", 5)
    with pytest.raises(InvalidInputError, match="unknown engine"):
        build_job(corpus, tmp_path / "i", encoder=encoder(), engine="spark", progress=False)
    with pytest.raises(InvalidInputError, match="only used with engine='ray'"):
        build_job(corpus, tmp_path / "i", encoder=encoder(), ray_address="auto", progress=False)
    with pytest.raises(InvalidInputError, match="more than the encoder reads"):
        build_job(corpus, tmp_path / "i", encoder=encoder(), max_tokens=1000, progress=False)
    with pytest.raises(InvalidInputError, match="cannot import encoder"):
        build_job(corpus, tmp_path / "i", encoder=EncoderSpec("nope.mod:X"), progress=False)
    with pytest.raises(InvalidInputError, match="pass a corpus file"):
        build_job([Document("a", "b")], tmp_path / "i", encoder=encoder(), engine="ray", progress=False)
