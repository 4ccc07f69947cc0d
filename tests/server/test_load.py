"""Load: ``mm serve --api`` (every endpoint) under 20 concurrent clients for a minute.

Each client cycles through chat (plain and streamed), a chat stream it abandons after the first
chunk, VQA, transcription, speech, embeddings, search, a malformed JSON body and a corrupt audio
upload. Every request must end as a 200 with a complete body, a 429 ``queue_full`` JSON error, or
(for the two bad requests) a 4xx JSON error; a 5xx, a transport error or a cut body fails the test.
The server's RSS stays within 10% of its size after a warm-up (a third of a minute of the same load), and threads and open file descriptors do not
grow from the first half to the second. ``MM_LOAD_SECONDS`` / ``MM_LOAD_CLIENTS`` size the slow run;
the default run has a short variant on the shared session server (4 clients, 4 s, light requests).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.loadkit import Failed, check_report, run_load, save_report
from tests.server.conftest import API_KEY, start_full_server, stop_server

SECONDS = float(os.environ.get("MM_LOAD_SECONDS", "60"))
CLIENTS = int(os.environ.get("MM_LOAD_CLIENTS", "20"))
HEADERS = {"Authorization": f"Bearer {API_KEY}"}


def _json_error(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise Failed(f"{response.status_code} without a JSON body: {response.text[:200]!r}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict) or not body["error"].get("message"):
        raise Failed(f"{response.status_code} without an error object: {body!r:.200}")
    return body["error"]


def outcome(response: httpx.Response, *, bad_input: bool = False, check: Callable[[httpx.Response], bool]
            = lambda r: True) -> str:
    """Sort one finished response into an outcome kind, or raise :class:`Failed`."""
    if response.status_code == 429:
        if _json_error(response).get("code") != "queue_full":
            raise Failed(f"429 that is not a queue message: {response.text[:200]}")
        return "refused (queue)"
    if bad_input:
        if 400 <= response.status_code < 500 and response.status_code != 429:
            _json_error(response)
            return "answered (input error)"
        raise Failed(f"a bad request got {response.status_code}: {response.text[:200]}")
    if response.status_code != 200:
        raise Failed(f"{response.status_code}: {response.text[:300]}")
    if not check(response):
        raise Failed(f"an incomplete 200 body: {response.content[:200]!r}")
    return "answered"


def _stream(client: httpx.Client, path: str, body: dict, *, abandon: bool = False) -> str:
    with client.stream("POST", path, json=body) as response:
        if response.status_code != 200:
            response.read()
            return outcome(response)
        if abandon:  # read the first chunk, then hang up: the server must cancel and free the slot
            next(response.iter_bytes(), None)
            return "answered (abandoned)"
        data = response.read()
    ok = data.startswith(b"RIFF") if path.endswith("speech") else data.rstrip().endswith(b"data: [DONE]")
    if not ok:
        raise Failed(f"an incomplete stream from {path}: {data[-200:]!r}")
    return "answered"


def make_requests(models: dict[str, str], png_data_url: str, wav_bytes: bytes) -> list[Callable[[Any], str]]:
    """The request mix, one function per kind (each takes an httpx.Client)."""
    chat = {"model": models["chat"], "messages": [{"role": "user", "content": "Say something"}], "max_tokens": 8}
    vqa = {"model": models["vqa"], "max_tokens": 6, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": png_data_url}}]}]}

    def json_ok(r: httpx.Response) -> bool:
        return bool(r.json())

    return [
        lambda c: outcome(c.post("/v1/chat/completions", json=chat),
                          check=lambda r: r.json()["choices"][0]["message"]["content"] is not None),
        lambda c: _stream(c, "/v1/chat/completions", {**chat, "stream": True}),
        lambda c: _stream(c, "/v1/chat/completions", {**chat, "stream": True, "max_tokens": 30}, abandon=True),
        lambda c: outcome(c.post("/v1/chat/completions", json=vqa), check=json_ok),
        lambda c: outcome(c.post("/v1/audio/transcriptions", data={"model": models["speech"]},
                                 files={"file": ("a.wav", wav_bytes, "audio/wav")}),
                          check=lambda r: "text" in r.json()),
        lambda c: _stream(c, "/v1/audio/speech", {"model": models["speech"], "input": "Hello there."}),
        lambda c: outcome(c.post("/v1/embeddings", json={"model": models["embedding"], "input": ["a", "b c"]}),
                          check=lambda r: len(r.json()["data"]) == 2),
        lambda c: outcome(c.post("/v1/search", json={"model": models["search"], "query": "capital", "k": 2}),
                          check=json_ok),
        lambda c: outcome(c.post("/v1/chat/completions", content=b'{"model": "x", "messages": [',
                                 headers={"Content-Type": "application/json"}), bad_input=True),
        lambda c: outcome(c.post("/v1/audio/transcriptions", data={"model": models["speech"]},
                                 files={"file": ("a.wav", b"RIFF not audio" * 20, "audio/wav")}), bad_input=True),
    ]


#: the default run's light mix: chat (plain, streamed, abandoned), embeddings, search, malformed JSON
LIGHT = (0, 1, 2, 6, 7, 8)


def load(served: Any, png_data_url: str, wav_bytes: bytes, *, clients: int, seconds: float,
         warmup: float = 0.0, only: tuple[int, ...] | None = None, settle: float = 15.0) -> dict[str, Any]:
    import psutil

    requests = make_requests(served.models, png_data_url, wav_bytes)
    if only is not None:
        requests = [requests[i] for i in only]

    def make_client(_seed: int) -> httpx.Client:
        return httpx.Client(base_url=served.url, headers=HEADERS, timeout=300)

    with make_client(0) as warm:
        for request in requests * 2:  # warm caches and pools
            request(warm)
    return run_load(psutil.Process(served.proc.pid), make_client, lambda c, i: requests[i % len(requests)](c),
                    clients=clients, seconds=seconds, warmup=warmup, settle=settle)


@pytest.fixture(scope="module")
def load_server(tiny_chat, tiny_vl, tiny_audio, tiny_index, tmp_path_factory):
    log = tmp_path_factory.mktemp("load-server") / "server.log"
    served = start_full_server(tiny_chat, tiny_vl, tiny_audio, tiny_index, log, max_new_tokens=32)
    yield served
    stop_server(served)


def test_server_short_load(server, png_data_url, wav_bytes):
    """The default run's variant: a few clients for a few seconds on the shared server, light requests only
    (speech and VQA requests queue behind one model each and would take minutes on a loaded machine). A warm-up
    of the same load fills the route's thread pool (asyncio's default executor, each worker with torch's
    thread beside it) before the measured halves, so the gate compares a full pool with itself."""
    report = load(server, png_data_url, wav_bytes, clients=4, seconds=4, warmup=4, only=LIGHT, settle=11)
    save_report("http server (short)", report)
    check_report(report, min_answered=6, rss_growth=0.5)


@pytest.mark.slow
def test_server_under_concurrent_clients(load_server, png_data_url, wav_bytes):
    report = load(load_server, png_data_url, wav_bytes, clients=CLIENTS, seconds=SECONDS, warmup=SECONDS / 3)
    save_report("http server", report)
    check_report(report, min_answered=CLIENTS)
