"""Fuzz the HTTP server (``mm.server.create_app`` with tiny models, in-process through Starlette's TestClient).

Each case is one request: malformed JSON (random bytes, cut or deeply nested documents, huge
numbers), wrong types and unknown fields in a valid body, options out of range, bodies past the size
limit (with and without ``Content-Length``), bad base64 images and audio, multipart uploads with
any bytes or any fields, odd paths, methods and content types. It must end as a 200 with a
complete body, or a 4xx with an OpenAI-shaped JSON error - never a 5xx, a body that is not JSON, a
stream cut by a server fault, or an error logged by the server - within the harness's time and
memory bounds. A 4xx counts as the case's ``MMError`` (the request was refused with a message).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

from mm.errors import MMError
from tests.fuzz.harness import any_scalar, any_text, any_value, fuzz_tests, small_index
from tests.fuzz.test_fuzz_media import _png, _wav, mutated

MAX_FILE = 64 * 1024  # --max-file-size of the fuzzed server: bodies past ~1.1 MiB are refused
SERVER: dict[str, Any] = {}


class Refused(MMError):
    """The server refused the request with a 4xx and a JSON error (counted as the case's MMError)."""


class HTTPEscape(Exception):
    """A 5xx, a 4xx without a JSON error, a cut stream or an error in the server log."""


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def http_server(tmp_path_factory):
    """A TestClient over the server with every endpoint on tiny models (no key, 64 KiB files, 16 tokens)."""
    from fastapi.testclient import TestClient

    import mm.testing
    from mm.server import ServerConfig, create_app

    root = tmp_path_factory.mktemp("fuzz-http")
    index = small_index(root)
    config = ServerConfig(chat_model=mm.testing.make_tiny_lfm2(root / "chat"),
                          vqa_model=mm.testing.make_tiny_lfm2_vl(root / "vl"),
                          speech_model=mm.testing.make_tiny_lfm2_audio(root / "audio"),
                          embedding_model="minilm", search_index=index, max_file_size=MAX_FILE,
                          queue_size=64, max_new_tokens=16, dtype="float32")
    app = create_app(config)
    with TestClient(app, raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 600
        while client.get("/health").status_code != 200:
            body = client.get("/health").json()
            assert time.monotonic() < deadline and body["status"] in ("loading", "ok"), body
            time.sleep(0.5)
        ids = {slot.kind: slot.id for slot in app.state.models.slots}
        yield client, ids


@pytest.fixture(autouse=True)
def _server(http_server):
    SERVER["client"], SERVER["ids"] = http_server


# -- strategies ----------------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


PNG = _png(24, 16, "RGB")
WAV = _wav((np.sin(np.arange(4000) / 5) * 0.2).astype("float32"), 16000)
images = st.one_of(
    st.just("data:image/png;base64," + _b64(PNG)),
    st.just("data:image/png;base64," + _b64(_png(40, 7, "RGBA"))),
    mutated(PNG).map(lambda b: "data:image/png;base64," + _b64(b)),
    st.binary(max_size=200).map(lambda b: "data:image/png;base64," + _b64(b)),
    st.text(max_size=80).map(lambda t: "data:image/png;base64," + t),  # not base64
    st.sampled_from(["data:image/png;base64,", "data:image/png,abc", "data:text/plain;base64,aGk=", "data:",
                     "https://example.com/cat.png", "/etc/passwd", "file:///etc/passwd", "c:\\x.png", "javascript:1",
                     "data:image/png;base64," + "A" * (MAX_FILE * 2)]),  # decodes past the file limit
    any_text,
)
KEYS = ["model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
        "top_p", "seed", "stop", "n", "input", "encoding_format", "dimensions", "voice", "response_format",
        "speed", "stream_format", "query", "k", "filters", "hybrid", "logprobs", "tools", "role", "content", "x"]


def _template(kind: str, image: str) -> dict[str, Any]:
    """A valid body for ``kind`` ('$chat' etc. stand for the served model ids)."""
    if kind == "chat":
        return {"model": "$chat", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    if kind == "vqa":
        return {"model": "$vqa", "max_tokens": 4, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": {"url": image}}]}]}
    if kind == "embeddings":
        return {"model": "$embedding", "input": ["one", "two"]}
    if kind == "search":
        return {"model": "$search", "query": "river", "k": 3}
    return {"model": "$speech", "input": "Hello."}


PATHS = {"chat": "/v1/chat/completions", "vqa": "/v1/chat/completions", "embeddings": "/v1/embeddings",
         "search": "/v1/search", "speech": "/v1/audio/speech"}


@st.composite
def json_bodies(draw):
    """A valid body with up to three edits: a field set to any value, dropped, added, or a nested value replaced."""
    kind = draw(st.sampled_from(list(PATHS)))
    body = _template(kind, draw(images))
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3]))):  # a third stay valid: the 200 path is fuzzed too
        how = draw(st.sampled_from(["set", "drop", "add", "message", "stream", "option"]))
        key = draw(st.sampled_from(KEYS))
        if how == "set" and body:
            body[draw(st.sampled_from(sorted(body)))] = draw(any_value)
        elif how == "drop" and body:
            body.pop(draw(st.sampled_from(sorted(body))))
        elif how == "add":
            body[key] = draw(any_value)
        elif how == "message":
            body["messages"] = draw(st.lists(st.one_of(
                any_value, st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool"]),
                                                  "content": st.one_of(any_text, st.lists(st.one_of(
                                                      any_value, st.fixed_dictionaries({
                                                          "type": st.sampled_from(["text", "image_url", "audio"]),
                                                          "text": any_text,
                                                          "image_url": st.fixed_dictionaries({"url": images})}))),
                                                      any_value)})), max_size=3))
        elif how == "stream":
            body["stream"] = True
        else:
            body[draw(st.sampled_from(["max_tokens", "temperature", "top_p", "seed", "stop", "n", "k", "dimensions",
                                       "speed", "voice", "filters", "hybrid"]))] = draw(any_scalar)
    return ("json", PATHS[kind], body)


def _json(value: Any) -> bytes:
    """JSON bytes of any drawn value (bytes as latin-1 text, NaN as NaN, lone surrogates kept)."""
    return json.dumps(value, default=lambda b: b.decode("latin-1")).encode("utf-8", "surrogatepass")


raw_bodies = st.tuples(
    st.just("raw"), st.sampled_from([*sorted(set(PATHS.values())), "/v1/audio/transcriptions"]),
    st.one_of(
        st.binary(max_size=300),
        st.sampled_from([b"", b"{", b"[" * 100_000 + b"]" * 100_000, b'{"model": 1e999999}', b"null", b"[]",
                         b'{"model": "x", "messages": [', b"\xff\xfe{}", b'{"a": ' + b"9" * 5000 + b"}",
                         b'{"model": "$chat", "messages": [{"role": "user", "content": "\\ud800"}]}']),
        st.builds(lambda d, cut: _json(d)[:cut], any_value, st.integers(0, 200)),
    ),
    st.sampled_from(["application/json", "text/plain", "multipart/form-data", "application/x-www-form-urlencoded",
                     ""]),
)

huge_bodies = st.tuples(st.just("huge"), st.sampled_from([*sorted(set(PATHS.values())), "/v1/audio/transcriptions"]),
                        st.sampled_from([2 * 2**20, 8 * 2**20]), st.booleans())  # size, chunked (no length)

audio_files = st.one_of(st.just(WAV), mutated(WAV), st.binary(max_size=400), st.just(b""),
                        st.just(b"RIFF" + b"\x00" * (MAX_FILE + 10)))
multipart = st.tuples(
    st.just("multipart"),
    st.dictionaries(st.sampled_from(["model", "response_format", "temperature", "language", "prompt", "x", "file"]),
                    st.one_of(st.sampled_from(["$speech", "json", "text", "verbose_json", "srt", "0", "2.5", "nan"]),
                              any_text.filter(lambda t: "\x00" not in t)), max_size=4),
    st.one_of(st.none(), audio_files), st.sampled_from(["file", "audio", "files"]))

odd = st.tuples(st.just("odd"), st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "POST"]),
                st.sampled_from(["/v1/chat/completions", "/v1/models/$chat", "/v1/models/nope", "/v1/../etc/passwd",
                                 "/v1/models", "/v1/nope", "/health", "/v1/search?k=3", "/v1//models", "/"]))

REQUESTS = st.one_of(json_bodies(), raw_bodies, huge_bodies, multipart, odd)


# -- the check -----------------------------------------------------------------------------------

def _ids(value: Any) -> Any:
    """Replace '$chat'-style placeholders with the served model ids (anywhere in a body)."""
    ids = SERVER["ids"]
    if isinstance(value, str) and value.startswith("$") and value[1:] in ids:
        return ids[value[1:]]
    if isinstance(value, bytes):
        return value.replace(b"$chat", ids["chat"].encode("utf-8", "surrogatepass"))
    if isinstance(value, list):
        return [_ids(v) for v in value]
    if isinstance(value, dict):
        return {k: _ids(v) for k, v in value.items()}
    return value


def _send(case: tuple) -> Any:
    client = SERVER["client"]
    what = case[0]
    if what == "json":
        body = _json(_ids(case[2]))
        return client.post(case[1], content=body, headers={"Content-Type": "application/json"})
    if what == "raw":
        headers = {"Content-Type": case[3]} if case[3] else {}
        return client.post(case[1], content=_ids(case[2]), headers=headers)
    if what == "huge":
        size, chunked = case[2], case[3]
        payload = b'{"model": "x", "input": "' + b"a" * size + b'"}'
        if chunked:  # no Content-Length: the guard must stop reading at the limit
            return client.post(case[1], content=(payload[i:i + 65536] for i in range(0, len(payload), 65536)),
                               headers={"Content-Type": "application/json"})
        return client.post(case[1], content=payload, headers={"Content-Type": "application/json"})
    if what == "multipart":
        fields, audio, name = case[1], case[2], case[3]
        files = {name: ("a.wav", io.BytesIO(audio), "audio/wav")} if audio is not None else None
        # form values as bytes: lone surrogates travel as the invalid UTF-8 a hostile client can send
        data = {k: _ids(v).encode("utf-8", "surrogatepass") for k, v in fields.items() if not (files and k == name)}
        return client.post("/v1/audio/transcriptions", data=data, files=files)
    return client.request(case[1], _ids(case[2]))


def _check_response(response: Any) -> None:
    status = response.status_code
    if status >= 500 or status < 200 or (300 <= status < 400):
        raise HTTPEscape(f"{status}: {response.text[:300]}")
    if status >= 400:
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError) as exc:
            raise HTTPEscape(f"{status} without a JSON error: {response.text[:300]!r}") from exc
        if not isinstance(error, dict) or not isinstance(error.get("message"), str) or not error["message"]:
            raise HTTPEscape(f"{status} with an empty error: {error!r:.300}")
        raise Refused(f"{status}: {error['message'][:200]}")
    kind = response.headers.get("content-type", "")
    if "event-stream" in kind:
        text = response.text
        if not text.rstrip().endswith("data: [DONE]") or '"server_error"' in text:
            raise HTTPEscape(f"a stream ended by a fault: {text[-300:]!r}")
    elif "audio/wav" in kind:
        if not response.content.startswith(b"RIFF"):
            raise HTTPEscape(f"a speech reply that is not a WAV: {response.content[:40]!r}")
    elif "json" in kind:
        response.json()


def check_http(case: tuple) -> None:
    errors = _Errors()
    root = logging.getLogger()
    root.addHandler(errors)
    try:
        response = _send(case)
    finally:
        root.removeHandler(errors)
    if errors.records:
        record = errors.records[0]
        raise HTTPEscape(f"the server logged an error: {record.getMessage()[:200]} {record.exc_info!r:.200}")
    _check_response(response)


test_http, test_http_long = fuzz_tests("HTTP requests", REQUESTS, check_http, fast=60, long=1500)


def test_fuzz_server_answers_a_plain_request():
    """The fixture's server works: a valid chat request gets a 200 (so refusals above are the inputs' fault)."""
    client, ids = SERVER["client"], SERVER["ids"]
    response = client.post("/v1/chat/completions", json={"model": ids["chat"], "max_tokens": 2,
                                                         "messages": [{"role": "user", "content": "Hi"}]})
    assert response.status_code == 200, response.text
    response = client.post("/v1/audio/transcriptions", data={"model": ids["speech"]},
                           files={"file": ("a.wav", io.BytesIO(WAV), "audio/wav")})
    assert response.status_code == 200, response.text


