"""API key, upload limits, unknown routes and models: the error statuses and OpenAI error bodies."""

from __future__ import annotations

import httpx
import openai
import pytest


def test_bad_or_missing_key_is_401(server):
    with pytest.raises(openai.AuthenticationError) as info:
        server.client(key="wrong").models.list()
    assert info.value.response.json()["error"]["code"] == "invalid_api_key"
    response = httpx.get(server.base_url + "/models")
    assert response.status_code == 401 and "missing API key" in response.json()["error"]["message"]


def test_oversized_upload_is_413(server):
    big = b"\0" * (2 * 1024 * 1024)  # the server allows 1 MiB
    with pytest.raises(openai.APIStatusError) as info:
        server.client().audio.transcriptions.create(model=server.models["speech"], file=("big.wav", big))
    assert info.value.status_code == 413
    assert "limit" in info.value.response.json()["error"]["message"]


def test_oversized_image_is_413(server):
    import base64

    url = "data:image/png;base64," + base64.b64encode(b"\0" * (1024 * 1024 + 10)).decode()
    with pytest.raises(openai.APIStatusError) as info:
        server.client().chat.completions.create(model=server.models["vqa"], messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": "?"}]}])
    assert info.value.status_code == 413


def test_unknown_route_and_model(server):
    from tests.server.conftest import API_KEY

    response = httpx.get(server.base_url + "/nothing", headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 404 and "error" in response.json()
    with pytest.raises(openai.NotFoundError):
        server.client().embeddings.create(model="text-embedding-3-small", input="x")


def test_health_needs_no_key(server):
    response = httpx.get(server.url + "/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"
