"""The app in-process (FastAPI's TestClient): 503 while loading and 429 when a model's queue is full."""

from __future__ import annotations

import threading
import time

from fastapi.testclient import TestClient

from mm.server import ServerConfig, create_app

BODY = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2}


def test_503_while_a_model_loads(tiny_chat):
    app = create_app(ServerConfig(chat_model=tiny_chat), load_models=False)
    with TestClient(app) as client:
        response = client.post("/v1/chat/completions", json={**BODY, "model": tiny_chat.name})
        assert response.status_code == 503 and response.headers["retry-after"] == "5"
        assert response.json()["error"]["code"] == "model_loading"
        health = client.get("/health")
        assert health.status_code == 503 and health.json() == {"status": "loading",
                                                               "models": {tiny_chat.name: "loading"}}


def test_429_when_the_queue_is_full(tiny_chat):
    from mm.server import loaders

    config = ServerConfig(chat_model=tiny_chat, queue_size=1, batch_size=1)
    app = create_app(config, load_models=False)
    slot = app.state.models.slots[0]
    slot.parts, slot.state = loaders.load("chat", str(tiny_chat), config), "ready"
    queue = slot.parts["queue"]
    codes: list[int] = []
    with TestClient(app) as client:
        def post() -> None:
            codes.append(client.post("/v1/chat/completions", json={**BODY, "model": slot.id}).status_code)

        with queue.engine.backbone._lock:  # the model is busy: the first request runs (blocked), one waits
            first = threading.Thread(target=post)
            first.start()
            deadline = time.monotonic() + 60
            while queue.running == 0 and time.monotonic() < deadline:  # the worker took it, waits for the model
                time.sleep(0.01)
            second = threading.Thread(target=post)
            second.start()
            while queue.waiting < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            refused = client.post("/v1/chat/completions", json={**BODY, "model": slot.id})
        first.join(60)
        second.join(60)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert sorted(codes) == [200, 200]



def test_413_for_a_chunked_body_without_content_length():
    app = create_app(ServerConfig(embedding_model="minilm", max_file_size="1kb"), load_models=False)

    def chunks():
        yield b'{"model": "minilm", "input": "'
        for _ in range(40):
            yield b"x" * 65536  # 2.5 MiB in all, over the 1 KiB * 4/3 + 1 MiB body limit
        yield b'"}'

    with TestClient(app) as client:
        response = client.post("/v1/embeddings", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "request_too_large"
