"""Fixtures for the app tests: tiny checkpoints, sample uploads, apps served on loopback, headless Chromium.

Apps run in-process on a free loopback port (one server per test module); the ``mm serve`` test
starts the real command as a subprocess. Browser tests drive Debian's ``/usr/bin/chromium``
through Playwright and skip with a reason when either is missing.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Wait until ``url`` answers (or the process died / time ran out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def _factory(name: str):
    import mm.testing

    factory = getattr(mm.testing, name, None)
    if factory is None:
        pytest.skip(f"mm.testing.{name} is not available yet (its pipeline has not landed)")
    return factory


def _pipeline_module(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not available yet (the pipeline has not landed)")


# -- tiny models and an index ----------------------------------------------------------------------

@pytest.fixture(scope="session")
def tiny_vl(tmp_path_factory) -> Path:
    """A tiny random LFM2-VL checkpoint."""
    _pipeline_module("mm.pipelines.vqa")
    return Path(_factory("make_tiny_lfm2_vl")(tmp_path_factory.mktemp("tiny_vl")))


@pytest.fixture(scope="session")
def tiny_audio(tmp_path_factory) -> Path:
    """A tiny random LFM2-Audio checkpoint."""
    _pipeline_module("mm.pipelines.speech")
    return Path(_factory("make_tiny_lfm2_audio")(tmp_path_factory.mktemp("tiny_audio")))


DOCS = [
    {"id": "fox-en", "text": "The quick brown fox jumps over the lazy dog near the river bank.", "lang": "en"},
    {"id": "fox-de", "text": "Der schnelle braune Fuchs springt über den faulen Hund am Flussufer.", "lang": "de"},
    {"id": "paris-fr", "text": "Paris est la capitale de la France et compte de nombreux musées.", "lang": "fr"},
    {"id": "tokyo-en", "text": "Tokyo is the capital of Japan and one of the largest cities in the world.",
     "lang": "en"},
    {"id": "bread-es", "text": "El pan se hornea cada mañana en la panadería del pueblo.", "lang": "es"},
]


@pytest.fixture(scope="session")
def docs_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("docs") / "docs.jsonl"
    path.write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in DOCS) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory, docs_file) -> Path:
    """A small mm index over :data:`DOCS`, built with the real ``mm index build`` command."""
    _pipeline_module("mm.pipelines.search")
    _pipeline_module("mm.index")
    index = tmp_path_factory.mktemp("index") / "idx"
    proc = subprocess.run([sys.executable, "-m", "mm", "index", "build", str(docs_file), "--index", str(index)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    if proc.returncode != 0:
        pytest.fail(f"mm index build failed:\n{proc.stdout}\n{proc.stderr}")
    return index


# -- sample uploads -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def samples(tmp_path_factory) -> dict[str, Path]:
    """An image, a corrupt image, a WAV, a corrupt WAV and a document file to upload."""
    import soundfile as sf
    from PIL import Image, ImageDraw

    root = tmp_path_factory.mktemp("uploads")
    image = Image.new("RGB", (96, 64), (250, 250, 250))
    ImageDraw.Draw(image).rectangle((20, 10, 70, 50), fill=(220, 30, 30))
    image.save(root / "square.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"this is not really a png" * 20)
    t = np.arange(16000) / 16000
    sf.write(root / "hello.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    (root / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 4)
    return {"image": root / "square.png", "corrupt_image": root / "corrupt.png", "wav": root / "hello.wav",
            "corrupt_wav": root / "corrupt.wav"}


# -- serving and the browser ----------------------------------------------------------------------

class Served:
    """An app served in-process on loopback."""

    def __init__(self, blocks: Any, limits: Any = None) -> None:
        from mm.apps.common import launch

        self.blocks = blocks
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        launch(blocks, host="127.0.0.1", port=self.port, limits=limits, block=False, quiet=True)
        wait_http(self.url, 60)

    def close(self) -> None:
        self.blocks.close()


@pytest.fixture(scope="session")
def serve_in_process() -> Iterator[Any]:
    """A function that serves Blocks on a free loopback port; every server is closed at session end."""
    servers: list[Served] = []

    def serve(blocks: Any, limits: Any = None) -> Served:
        served = Served(blocks, limits)
        servers.append(served)
        return served

    yield serve
    for served in servers:
        served.close()


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """A headless Debian Chromium driven by Playwright (skips when either is missing)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found; install it with scripts/system_deps.sh (Debian package chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, request, artifacts_dir) -> Iterator[Any]:
    """A fresh page; on failure a screenshot named after the test is saved to the artifacts dir."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        pg.screenshot(path=str(artifacts_dir / f"FAILED-{request.node.name}.png"), full_page=True)
    context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report


def mm_command(*args: str) -> list[str]:
    """The ``mm`` command of the running interpreter's environment, with ``args``."""
    exe = shutil.which("mm", path=str(Path(sys.executable).parent))
    return ([exe] if exe else [sys.executable, "-m", "mm"]) + list(args)
