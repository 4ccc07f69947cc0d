"""Fixtures for the HTTP API tests: tiny checkpoints, a small index, and `mm serve --api` as a real process.

One server (every endpoint, an API key, a 1 MiB upload limit, a short queue) is started per test
session as a subprocess on a free loopback port and shared by the test modules; the official
``openai`` client talks to it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
API_KEY = "test-key-123"
DOCS = [
    {"_id": "fox-en", "text": "The quick brown fox jumps over the lazy dog near the river bank.", "lang": "en"},
    {"_id": "paris-fr", "text": "Paris est la capitale de la France et compte de nombreux musées.", "lang": "fr"},
    {"_id": "tokyo-en", "text": "Tokyo is the capital of Japan and one of the largest cities in the world.",
     "lang": "en"},
    {"_id": "bread-es", "text": "El pan se hornea cada mañana en la panadería del pueblo.", "lang": "es"},
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path
    models: dict[str, str]  # kind -> model id

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def client(self, key: str | None = API_KEY, **kwargs):
        from openai import OpenAI

        return OpenAI(base_url=self.base_url, api_key=key or "none", max_retries=0, timeout=120, **kwargs)


def start_server(args: list[str], log_path: Path, timeout: float = 240) -> Server:
    """Start ``mm serve --api ARGS`` and wait until GET /health says every model is ready."""
    port = free_port()
    env = {**os.environ, "MM_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    env.pop("MM_API_KEY", None)
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mm", "serve", "--api", "--port", str(port), *args],
                                stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mm serve --api exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return Server(url, proc, log_path, {})
        except urllib.error.HTTPError as exc:
            if exc.code != 503:
                raise
            body = exc.read().decode()
            if '"failed"' in body or '"degraded"' in body:
                proc.kill()
                pytest.fail(f"a model failed to load: {body}\n{log_path.read_text()}")
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    pytest.fail(f"mm serve --api did not get ready in {timeout:.0f} s:\n{log_path.read_text()}")


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def tiny_chat(tmp_path_factory) -> Path:
    import mm.testing

    return Path(mm.testing.make_tiny_lfm2(tmp_path_factory.mktemp("LFM2-tiny")))


@pytest.fixture(scope="session")
def tiny_vl(tmp_path_factory) -> Path:
    import mm.testing

    return Path(mm.testing.make_tiny_lfm2_vl(tmp_path_factory.mktemp("LFM2-VL-tiny")))


@pytest.fixture(scope="session")
def tiny_audio(tmp_path_factory) -> Path:
    import mm.testing

    return Path(mm.testing.make_tiny_lfm2_audio(tmp_path_factory.mktemp("LFM2-Audio-tiny")))


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory) -> Path:
    import json

    root = tmp_path_factory.mktemp("corpus")
    source = root / "docs.jsonl"
    source.write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in DOCS) + "\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "mm", "index", "build", str(source), "--index", str(root / "idx"),
                           "--model", "minilm"], capture_output=True, text=True, timeout=300, cwd=REPO)
    if proc.returncode != 0:
        pytest.fail(f"mm index build failed:\n{proc.stdout}\n{proc.stderr}")
    return root / "idx"


def start_full_server(chat: Path, vl: Path, audio: Path, index: Path, log_path: Path, max_new_tokens: int) -> Server:
    """`mm serve --api` with every endpoint, an API key, a 1 MiB upload limit and a queue of 4."""
    served = start_server(["--chat-model", str(chat), "--vqa-model", str(vl), "--speech-model",
                           str(audio), "--embedding-model", "minilm", "--search-index", str(index),
                           "--api-key", API_KEY, "--max-file-size", "1mb", "--queue-size", "4",
                           "--max-new-tokens", str(max_new_tokens)], log_path)
    served.models = {"chat": chat.name, "vqa": vl.name, "speech": audio.name,
                     "embedding": "minilm", "search": f"search-{index.name}"}
    return served


@pytest.fixture(scope="session")
def server(tiny_chat, tiny_vl, tiny_audio, tiny_index, tmp_path_factory) -> Server:
    """The full server (:func:`start_full_server`), 64 new tokens at most."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    served = start_full_server(tiny_chat, tiny_vl, tiny_audio, tiny_index, log, max_new_tokens=64)
    yield served
    stop_server(served)


@pytest.fixture(scope="session")
def png_data_url() -> str:
    import base64
    import io

    from PIL import Image

    image = Image.fromarray((np.arange(64 * 48 * 3) % 251).astype(np.uint8).reshape(48, 64, 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="session")
def wav_bytes() -> bytes:
    import io

    import soundfile as sf

    t = np.arange(16000) / 16000
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000, format="WAV")
    return buffer.getvalue()
