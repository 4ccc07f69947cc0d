"""A client that disconnects mid-stream stops its generation (a chat-only server with a long token budget)."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.server.conftest import start_server, stop_server


@pytest.fixture(scope="module")
def long_server(tiny_chat, tmp_path_factory):
    served = start_server(["--chat-model", str(tiny_chat), "--max-new-tokens", "300"],
                          tmp_path_factory.mktemp("long") / "server.log")
    yield served
    stop_server(served)


def _queue_stats(served) -> dict:
    return httpx.get(served.base_url + "/models").json()["data"][0]["mm"]["queue"]


@pytest.mark.slow
def test_disconnect_stops_generation(long_server, tiny_chat):
    body = {"model": tiny_chat.name, "messages": [{"role": "user", "content": "Go on and on"}], "max_tokens": 300}
    t0 = time.perf_counter()
    full = httpx.post(long_server.base_url + "/chat/completions", json=body, timeout=600).json()
    full_s = time.perf_counter() - t0
    if full["choices"][0]["finish_reason"] != "length" or full_s < 1.0:
        pytest.skip(f"the tiny model stopped early or too fast ({full['usage']['completion_tokens']} tokens in "
                    f"{full_s:.2f}s) to observe a cancellation")
    with httpx.stream("POST", long_server.base_url + "/chat/completions", json={**body, "stream": True},
                      timeout=600) as response:
        lines = response.iter_lines()
        next(lines)  # the role chunk: generation is under way
    t0 = time.perf_counter()
    short = httpx.post(long_server.base_url + "/chat/completions", timeout=600,
                       json={**body, "max_tokens": 2}).json()
    short_s = time.perf_counter() - t0
    assert short["usage"]["completion_tokens"] <= 2
    assert short_s < full_s / 2, (short_s, full_s)  # it did not wait for the abandoned 300-token stream
    assert _queue_stats(long_server)["cancelled"] == 1
