"""Embeddings and mm's /v1/search extension."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest

from tests.server.conftest import API_KEY


def test_embeddings_match_the_encoder(server):
    from mm.encoders.loader import load_encoder

    client = server.client()
    texts = ["The capital of France", "Le chat dort."]
    result = client.embeddings.create(model="minilm", input=texts, encoding_format="float")
    assert [d.index for d in result.data] == [0, 1] and result.model == "minilm"
    got = np.array([d.embedding for d in result.data], dtype=np.float32)
    want = load_encoder("minilm").encode_documents(texts)
    assert got.shape == (2, 384) and np.allclose(got, want, atol=1e-4)
    assert result.usage.prompt_tokens > 0
    single = client.embeddings.create(model="minilm", input="The capital of France")  # the client asks for base64
    assert np.allclose(single.data[0].embedding, got[0], atol=1e-6)


def test_embeddings_base64_and_errors(server):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    raw = httpx.post(server.base_url + "/embeddings", headers=headers,
                     json={"model": "minilm", "input": "hello", "encoding_format": "base64"}).json()
    vector = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert vector.shape == (384,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-3
    bad = httpx.post(server.base_url + "/embeddings", headers=headers,
                     json={"model": "minilm", "input": "hello", "dimensions": 128})
    assert bad.status_code == 400 and "384-d" in bad.json()["error"]["message"]
    wrong = httpx.post(server.base_url + "/embeddings", headers=headers,
                       json={"model": server.models["chat"], "input": "hello"})
    assert wrong.status_code == 400 and "/v1/chat/completions" in wrong.json()["error"]["message"]


def test_search(server):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    response = httpx.post(server.base_url + "/search", headers=headers, json={"query": "capital of Japan", "k": 2})
    assert response.status_code == 200, response.text
    hits = response.json()["data"]
    assert len(hits) == 2 and hits[0]["id"] == "tokyo-en"
    assert set(hits[0]) == {"id", "score", "text", "metadata"} and hits[0]["metadata"]["lang"] == "en"
    assert hits[0]["score"] >= hits[1]["score"]
    filtered = httpx.post(server.base_url + "/search", headers=headers,
                          json={"query": "capital", "k": 5, "filters": {"lang": "fr"}, "hybrid": True}).json()
    assert [h["id"] for h in filtered["data"]] == ["paris-fr"]
    via_openai = server.client().post("/search", body={"query": "capital of Japan", "k": 2}, cast_to=object)
    assert [h["id"] for h in via_openai["data"]] == [h["id"] for h in hits]  # the docs' openai-client example
    bad = httpx.post(server.base_url + "/search", headers=headers, json={"query": "x", "k": 0})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "k"


@pytest.mark.slow
def test_colbert_embedding_model_is_a_clear_400(tmp_path):
    from mm.testing import make_tiny_colbert
    from tests.server.conftest import start_server, stop_server

    colbert = make_tiny_colbert(tmp_path / "colbert")
    served = start_server(["--embedding-model", str(colbert)], tmp_path / "server.log")
    try:
        response = httpx.post(served.base_url + "/embeddings", json={"model": colbert.name, "input": "hi"})
        assert response.status_code == 400
        assert "/v1/search" in response.json()["error"]["message"]
    finally:
        stop_server(served)
