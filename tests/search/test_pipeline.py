"""mm.pipeline("search"): one query or a batch, k, filters, options, errors; encoder loading by files."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mm
from mm.errors import CheckpointError, IndexFormatError, InvalidInputError, UnsupportedOptionError


@pytest.fixture(scope="module")
def dense(minilm_index):
    return mm.pipeline("search", index=str(minilm_index))


@pytest.fixture(scope="module")
def multi(colbert_index):
    return mm.pipeline("search", index=str(colbert_index))


def test_one_query_and_batch(dense):
    hits = dense("Where is the Eiffel Tower?", k=3)
    assert hits[0].id == "eiffel" and len(hits) == 3
    assert all(isinstance(h.score, float) for h in hits) and hits[0].score >= hits[1].score >= hits[2].score
    assert hits[0].text.startswith("Eiffel Tower The Eiffel Tower") and hits[0].metadata["lang"] == "en"
    batch = dense(["Eiffel Tower", "tortilla de patatas"], k=1)
    assert [b[0].id for b in batch] == ["eiffel", "tortilla"]
    assert batch[0][0].to_dict()["id"] == "eiffel"


def test_k_larger_than_index_and_filters(dense):
    hits = dense("anything", k=100)
    assert sorted(h.id for h in hits) == ["eiffel", "long", "photo", "rhein", "tortilla"]
    assert [h.id for h in dense("Paris", k=5, filters={"lang": "es"})] == ["tortilla"]
    assert [h.id for h in dense("Paris", k=5, filters={"lang": {"$in": ["de"]}})] == ["rhein"]


def test_bad_queries_and_options(dense):
    for bad in ("", "   ", None, 3):
        with pytest.raises(InvalidInputError):
            dense(bad)
    with pytest.raises(InvalidInputError, match="empty list"):
        dense([])
    for k in (0, -1, 1.5, True):
        with pytest.raises(InvalidInputError, match="k must be"):
            dense("hello", k=k)
    with pytest.raises(UnsupportedOptionError, match="multi-vector"):
        dense("hello", nprobe=8)
    with pytest.raises(UnsupportedOptionError, match="hybrid"):
        dense("hello", alpha=0.3)
    with pytest.raises(UnsupportedOptionError):
        dense("hello", top_k=3)
    with pytest.raises(InvalidInputError):
        dense("hello", filters={"lang": {"$regex": "e"}})


def test_multivector_pipeline(multi, colbert_index):
    from mm.index import open_index

    assert open_index(colbert_index).kind == "multivector"
    hits = multi(["Eiffel Tower 1889", "Rhein Basel"], k=5, nprobe=8, ncandidates=64)
    assert all(len(h) == 5 for h in hits)
    exact = multi("Eiffel Tower 1889", k=5, exact=True)
    # the random tiny model ranks arbitrarily, but exact scores are true MaxSim over the stored vectors
    assert [h.score for h in exact] == sorted((h.score for h in exact), reverse=True)


def test_multivector_exact_scores_are_maxsim(multi, small_corpus):
    from mm.encoders.chunking import ChunkPolicy

    from mm.corpus import CorpusReader

    docs = CorpusReader(small_corpus).read_all()
    enc = multi.encoder
    short = [d for d in docs if d.id != "long"]
    d_vecs = {d.id: v for d, v in zip(short, enc.encode_documents([d.text for d in short]), strict=True)}
    q = enc.encode_queries(["Eiffel Tower 1889"])[0]
    expected = {i: float((q @ v.T).max(1).sum()) for i, v in d_vecs.items()}
    for hit in multi("Eiffel Tower 1889", k=5, exact=True):
        if hit.id in expected:
            assert hit.score == pytest.approx(expected[hit.id], abs=0.05)  # stored vectors are float16
    policy = ChunkPolicy().resolve(enc)
    assert sum(len(policy.split(d.text, enc)) for d in docs) > len(docs)  # the long document is chunked


def test_hybrid_search(dense):
    hits = dense("zirconium", k=2, hybrid=True)
    assert hits[0].id == "long"


def test_pipeline_needs_an_index(tmp_path):
    with pytest.raises(InvalidInputError, match="needs an index"):
        mm.pipeline("search")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexFormatError):
        mm.pipeline("search", index=str(tmp_path / "empty"))
    with pytest.raises(UnsupportedOptionError):
        mm.pipeline("search", index=str(tmp_path), nbits=2)


def test_model_override_must_match(minilm_index, tiny_colbert):
    with pytest.raises(InvalidInputError, match="384-d"):
        mm.pipeline("search", model=str(tiny_colbert), index=str(minilm_index))


def test_loader_tells_checkpoints_apart(tiny_colbert, tmp_path):
    from mm.encoders.dense import minilm_path
    from mm.encoders.loader import detect_kind, load_encoder

    assert detect_kind(tiny_colbert) == "colbert"
    assert detect_kind(minilm_path()) == "sentence-transformers"
    assert load_encoder(str(tiny_colbert)).kind == "multivector"
    with pytest.raises(InvalidInputError, match="no dense mode"):
        load_encoder(str(tiny_colbert), kind="dense")
    with pytest.raises(InvalidInputError, match="unknown encoder kind"):
        load_encoder("minilm", kind="sparse")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(mm.MMError):
        load_encoder(str(tmp_path))
    with pytest.raises(CheckpointError, match=r"no modules\.json"):
        detect_kind(tmp_path)


def test_minilm_token_encoder():
    from mm.encoders.loader import load_encoder

    enc = load_encoder("minilm", kind="multivector")
    vecs = enc.encode_documents(["Paris is the capital of France.", "Hi"])
    assert [v.shape[1] for v in vecs] == [384, 384] and vecs[0].shape[0] > vecs[1].shape[0]
    np.testing.assert_allclose(np.linalg.norm(vecs[0], axis=1), 1.0, atol=1e-5)
    dense = load_encoder("minilm")
    one = dense.encode_queries(["Paris"])
    assert one.shape == (1, 384) and one.dtype == np.float32


def test_sample_corpus_is_valid_and_small():
    from pathlib import Path

    from mm.corpus import CorpusReader, read_queries

    data = Path(mm.__file__).parent / "data"
    corpus = data / "sample_corpus.jsonl"
    assert corpus.stat().st_size + (data / "sample_queries.jsonl").stat().st_size < 1_000_000
    docs = CorpusReader(corpus).read_all()
    langs = {d.metadata["lang"] for d in docs}
    assert len(docs) == 240 and len(langs) == 12
    ids = {d.id for d in docs}
    queries = [json.loads(line) for line in (data / "sample_queries.jsonl").read_text().splitlines()]
    assert len(read_queries(data / "sample_queries.jsonl")) == len(queries) > 500
    assert all(q["answer_doc"] in ids for q in queries)
    assert "CC BY-SA 4.0" in (data / "SAMPLE_CORPUS.md").read_text()


def test_default_encoder_is_lfm2_colbert_else_offline_minilm(monkeypatch):
    from mm.encoders import loader
    from mm.encoders.dense import minilm_path

    from mm.errors import ModelNotFoundError

    def missing(model, required=()):
        raise ModelNotFoundError(f"{model} not found")

    monkeypatch.setattr("mm.hub.resolve_model", missing)
    assert loader.resolve_encoder_path(None) == minilm_path()
    monkeypatch.setattr("mm.hub.resolve_model", lambda model, required=(): f"resolved:{model}")
    assert loader.resolve_encoder_path(None) == f"resolved:{loader.DEFAULT_COLBERT}"
    assert loader.resolve_encoder_path("MiniLM") == minilm_path()
