"""Unit tests: chunking, the index as checkpoint, sources, option validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mm.encoders.chunking import ChunkPolicy, chunk_ids
from mm.index.jobs import EncoderSpec, IndexOptions, build_job
from mm.index.jobs.encode import DocEncoder, encode_sorted
from mm.index.jobs.engines import doc_key, done_keys
from mm.index.jobs.source import FileSource
from mm.index.writer import IndexWriter, content_hash

from mm.corpus import Document
from mm.errors import InvalidInputError
from mm.testing.hash_encoder import HashEncoder
from tests.jobs.conftest import encoder, write_corpus


def split(text, enc, max_tokens, overlap):
    return ChunkPolicy(max_tokens=max_tokens, overlap=overlap).resolve(enc).split(text, enc)


def test_chunks_fit_the_window_and_overlap():
    enc = HashEncoder(dim=4, max_tokens=10)
    words = [f"x{i}" for i in range(35)]
    chunks = split(" ".join(words), enc, 10, 3)
    assert all(len(c.split()) <= 10 for c in chunks)
    assert chunks[0].split()[-3:] == chunks[1].split()[:3]  # 3 tokens of overlap
    covered = set(w for c in chunks for w in c.split())
    assert covered == set(words)  # nothing dropped
    assert chunks[-1].split()[-1] == "x34"


def test_short_and_empty_documents_are_one_chunk():
    enc = HashEncoder(dim=4)
    assert split("one two", enc, 10, 2) == ["one two"]
    assert split("", enc, 10, 2) == [""]


def test_overlong_word_is_split_not_truncated():
    class CharTokens(HashEncoder):  # one token per character
        def token_lengths(self, texts):
            return [len(t) for t in texts]

    enc = CharTokens(dim=4, max_tokens=8)
    chunks = split("ab " + "z" * 30, enc, 8, 0)
    assert all(len(c.replace(" ", "")) <= 8 for c in chunks)
    assert "".join(c.replace(" ", "") for c in chunks) == "ab" + "z" * 30


def test_chunk_policy_rejects_bad_settings():
    enc = HashEncoder(dim=4, max_tokens=20)
    with pytest.raises(InvalidInputError):
        ChunkPolicy(max_tokens=0).resolve(enc)
    with pytest.raises(InvalidInputError):
        ChunkPolicy(max_tokens=8, overlap=8).resolve(enc)
    with pytest.raises(InvalidInputError, match="more than the encoder reads"):
        ChunkPolicy(max_tokens=21).resolve(enc)
    assert ChunkPolicy().resolve(enc).max_tokens == 12  # the encoder's window less a margin of 8


def test_length_sorted_batches_keep_input_order():
    calls = []

    class Recording(HashEncoder):
        def encode_documents(self, texts, *, batch_size=None):
            calls.append([len(t.split()) for t in texts])
            return super().encode_documents(texts)

    enc = Recording(dim=4)
    texts = ["a " * n for n in (3, 9, 1, 7, 5, 2)]
    vecs, tokens = encode_sorted(enc, texts, batch_size=2)
    assert calls == [[9, 7], [5, 3], [2, 1]]  # longest first, similar lengths together
    assert tokens == [3, 9, 1, 7, 5, 2]
    for text, vec in zip(texts, vecs, strict=True):
        np.testing.assert_array_equal(vec, HashEncoder(dim=4).encode_documents([text])[0])


def test_doc_encoder_groups_chunks_per_document():
    worker = DocEncoder.from_spec(encoder(), ChunkPolicy(overlap=8), "fp", batch_size=4)
    docs = [Document("a", "w " * 100), Document("b", "short")]
    out = worker.process(docs)
    assert [d.doc_id for d in out] == ["a", "b"]
    assert out[0].n_chunks == 3 and out[1].n_chunks == 1
    assert out[1].content_hash == content_hash(docs[1], "fp") != content_hash(docs[1], "other encoder")
    assert all(v.shape[1] == 16 for d in out for v in d.vectors)


def test_the_index_is_the_checkpoint(tmp_path):
    enc = HashEncoder(dim=4, max_tokens=20)
    writer = IndexWriter.open_or_create(tmp_path / "i", enc, ChunkPolicy())
    worker = DocEncoder(enc, ChunkPolicy(), json.dumps({"x": 1}))
    docs = [Document("a", "w " * 30), Document("b", "two words", {"k": 1})]
    writer.commit(worker.process(docs))
    known = writer.known(["a", "b", "c"])
    assert set(known) == {"a", "b"} and known["a"][1] == 3 and known["b"][1] == 1
    # a fresh writer reads the same state from the index alone
    again = IndexWriter.for_index(writer.index)
    assert again.known(["a", "b"]) == known
    keys = done_keys(again.table())
    assert doc_key("a", known["a"][0]) in set(keys.tolist()) and len(keys) == 2
    # re-encoding "a" as one chunk replaces its three old chunks in one commit
    writer.commit(worker.process([Document("a", "now short")]))
    assert sorted(writer.index.ids()) == ["a", "b"] and writer.known(["a"])["a"][1] == 1
    assert writer.delete_documents(["a", "zzz"]) == (1, 1)
    assert IndexWriter.for_index(writer.index).known(["a", "b"]).keys() == {"b"}


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
    assert not (tmp_path / "i").exists()  # a failed new build leaves no folder
    with pytest.raises(InvalidInputError, match="unknown indexing option"):
        build_job(corpus, tmp_path / "i", encoder=encoder(), batch_docs=5)
    with pytest.raises(InvalidInputError, match="prune"):
        IndexOptions(prune=True)
    with pytest.raises(InvalidInputError, match="workers=1"):
        build_job(corpus, tmp_path / "i", encoder=HashEncoder(dim=4), workers=2, progress=False)
    with pytest.raises(InvalidInputError, match="cannot import encoder"):
        build_job(corpus, tmp_path / "i", encoder=EncoderSpec("nope.mod:X"), progress=False)
    with pytest.raises(InvalidInputError, match="pass a corpus file"):
        build_job([Document("a", "b")], tmp_path / "i", encoder=encoder(), engine="ray", progress=False)
