"""`mm serve`: argument errors, and the full `--task all` app driven in headless Chromium."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess

import pytest

from tests.apps import ui
from tests.apps.conftest import REPO, free_port, mm_command, wait_http


def run_mm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``mm``; stderr comes back with rich's line wrapping undone."""
    proc = subprocess.run(mm_command(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO)
    proc.stderr = " ".join(proc.stderr.split())
    return proc


def test_serve_argument_errors(tmp_path):
    proc = run_mm("serve", "--task", "vqa")
    assert proc.returncode == 2 and "--task vqa needs --vqa-model DIR" in proc.stderr
    proc = run_mm("serve", "--task", "search", "--search-index", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "is not a directory" in proc.stderr
    proc = run_mm("serve", "--task", "all")
    assert proc.returncode == 2 and "needs at least one of" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_refuses_a_busy_port(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_mm("serve", "--task", "search", "--search-index", str(tmp_path), "--port", str(port))
    assert proc.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in proc.stderr


@pytest.fixture(scope="module")
def served_all(tiny_vl, tiny_audio, tiny_index, tmp_path_factory):
    """`mm serve --task all` on the tiny checkpoints and index, as a real subprocess on loopback."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "MM_NUM_THREADS": "2"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            mm_command("serve", "--task", "all", "--port", str(port), "--vqa-model", str(tiny_vl),
                       "--speech-model", str(tiny_audio), "--search-index", str(tiny_index), "--max-new-tokens", "32"),
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_http(url, 240, proc)
    except Exception:
        proc.kill()
        pytest.fail(f"mm serve did not start:\n{log_path.read_text()}")
    yield url, proc, log_path
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def test_serve_listens_on_loopback_only(served_all):
    url = served_all[0]
    port = int(url.rsplit(":", 1)[1].strip("/"))
    listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True)
    if listening.returncode != 0:
        pytest.skip("ss is not available to list listening sockets")
    addresses = {line.split()[3].rsplit(":", 1)[0] for line in listening.stdout.splitlines() if line.strip()}
    assert addresses == {"127.0.0.1"}, listening.stdout


@pytest.mark.browser
def test_serve_all_browser_session(served_all, page, samples, artifacts_dir):
    url = served_all[0]
    ui.open_app(page, url, "#vqa-image")
    ui.wait_status(page, "vqa-model-status", "ok")

    # VQA: upload an image, ask, see the answer and its stats
    ui.upload(page, "vqa-image", samples["image"])
    ui.wait_status(page, "vqa-image-status", "ok")
    ui.fill(page, "vqa-question", "What is in the picture?")
    ui.choose(page, "vqa-preset", "fast")
    ui.set_number(page, "vqa-max-new", 6)
    page.locator("#vqa-ask").click()
    stats = ui.wait_status(page, "vqa-stats", "ok", timeout=120_000)
    assert re.search(r"image tokens: \d+", stats) and "latency" in stats
    ui.screenshot(page, artifacts_dir, "serve-all-vqa")

    # a corrupt image: an error message in the page, no traceback
    ui.upload(page, "vqa-image", samples["corrupt_image"])
    assert "could not be read as an image" in ui.wait_status(page, "vqa-image-status", "error")
    page.locator("#vqa-ask").click()
    toasts = ui.toast_texts(page)
    assert any("could not be read as an image" in t for t in toasts) and not any("Traceback" in t for t in toasts)

    # speech: upload a WAV, get an audio reply in the player
    ui.open_tab(page, "Speech")
    ui.wait_status(page, "speech-model-status", "ok")
    ui.upload(page, "speech-input", samples["wav"])
    page.locator("#speech-input audio").first.wait_for(state="attached")
    ui.set_number(page, "speech-max-new", 24)
    page.locator("#speech-send").click()
    ui.wait_status(page, "speech-stats", "ok", timeout=120_000)
    assert ui.audio_duration(page, "speech-reply") > 0
    ui.screenshot(page, artifacts_dir, "serve-all-speech")

    # search: a query, ranked results with scores
    ui.open_tab(page, "Search")
    ui.wait_status(page, "search-model-status", "ok")
    ui.fill(page, "search-query", "capital of France")
    page.locator("#search-run").click()
    ui.wait_status(page, "search-stats", "ok")
    scores = [float(re.search(r"[-\d.]+", s).group())
              for s in page.locator("#search-results .mm-hit-score").all_inner_texts()]
    assert scores and scores == sorted(scores, reverse=True)
    ui.screenshot(page, artifacts_dir, "serve-all-search")
    assert "Traceback" not in page.content()
