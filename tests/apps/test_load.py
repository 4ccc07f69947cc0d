"""Load: ``mm serve`` (the search, VQA and speech apps) under 20 concurrent clients for a minute.

Every request is answered (a result, or mm's own message for a deliberately bad input), or refused
with Gradio's queue message; never the generic server-fault message or a transport error. The
server's memory stays within 10% of its size after a warm-up (a third of a minute of the same load); threads and open files do not grow from the
first half of the run to the second (Gradio's worker pool fills up once, then stays). The driver is
``tests/loadkit.py``. ``MM_LOAD_SECONDS`` (default 60) and ``MM_LOAD_CLIENTS`` (default 20) size
the run; the numbers are added to the JSON file ``MM_LOAD_REPORT`` when that is set.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.apps.conftest import free_port, mm_command, wait_http
from tests.loadkit import Failed, check_report, run_load, save_report

SECONDS = float(os.environ.get("MM_LOAD_SECONDS", "60"))
CLIENTS = int(os.environ.get("MM_LOAD_CLIENTS", "20"))
WARMUP = SECONDS / 3  # the same concurrent load before memory is measured
QUERIES = ["the fox jumps over the dog", "capital of Japan", "pan", "Fluss", "musées de Paris", "", "x" * 5000]
GENERIC = "something went wrong on the server"  # apps.common.user_message for a server fault


@contextlib.contextmanager
def served_app(tmp_path: Path, *args: str) -> Iterator[tuple[str, Any]]:
    """``mm serve ARGS`` on a free loopback port with a queue of 8 and 2 workers per model."""
    import psutil

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115
    server = subprocess.Popen(mm_command("serve", *args, "--port", str(port), "--queue-size", "8",
                                         "--concurrency", "2", "--threads", "1"),
                              stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_http(url, 240, server)
        yield url, psutil.Process(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def classify(call: Callable[[], Any], *, bad_input: bool = False) -> str:
    """Run one gradio_client call: "answered", "answered (input error)", "refused (queue)", or raise Failed."""
    try:
        call()
    except Exception as exc:
        text = str(exc)
        low = text.lower()
        if "queue" in low or "too many" in low or "busy" in low:
            return "refused (queue)"
        if GENERIC in low or not text.strip():
            raise Failed(f"server fault: {type(exc).__name__}: {text[:200]}") from exc
        if bad_input or "empty" in low or "limit" in low:  # mm's own input checks
            return "answered (input error)"
        raise Failed(f"{type(exc).__name__}: {text[:200]}") from exc
    if bad_input:
        raise Failed("a bad input was answered as if it were fine")
    return "answered"


def client(url: str) -> Any:
    from gradio_client import Client

    return Client(url, verbose=False, httpx_kwargs={"timeout": 300})  # not httpx's 5 s: the server is loaded


def drive(url: str, proc: Any, name: str, request: Callable[[Any, int], str],
          warmup: Callable[[Any], None]) -> dict[str, Any]:
    warm = client(url)
    for _ in range(3):  # load the model, fill caches and pools
        warmup(warm)
    report = run_load(proc, lambda _seed: client(url), request, clients=CLIENTS, seconds=SECONDS, warmup=WARMUP)
    save_report(name, report)
    return report


@pytest.mark.slow
def test_search_app_under_concurrent_clients(tiny_index, tmp_path):
    def request(c: Any, i: int) -> str:
        return classify(lambda: c.predict(QUERIES[i % len(QUERIES)], 3, "", api_name="/search"))

    with served_app(tmp_path, "--task", "search", "--search-index", str(tiny_index)) as (url, proc):
        report = drive(url, proc, "search app", request,
                       lambda c: [c.predict(q, 3, "", api_name="/search") for q in QUERIES[:3]])
    check_report(report, min_answered=CLIENTS)


@pytest.mark.slow
def test_vqa_app_under_concurrent_clients(tiny_vl, samples, tmp_path):
    from gradio_client import handle_file

    def request(c: Any, i: int) -> str:
        if i % 5 == 4:  # a corrupt upload: mm's message, not a fault
            return classify(lambda: c.predict(handle_file(str(samples["corrupt_image"])), "What is this?", "fast",
                                              4, api_name="/vqa"), bad_input=True)
        question = ["What is in the picture?", "Which colour is the square?", "Describe it."][i % 3]
        return classify(lambda: c.predict(handle_file(str(samples["image"])), question, "fast", 6, api_name="/vqa"))

    with served_app(tmp_path, "--task", "vqa", "--vqa-model", str(tiny_vl)) as (url, proc):
        report = drive(url, proc, "vqa app", request,
                       lambda c: c.predict(handle_file(str(samples["image"])), "Hi?", "fast", 6, api_name="/vqa"))
    check_report(report, min_answered=CLIENTS)


@pytest.mark.slow
def test_speech_app_under_concurrent_clients(tiny_audio, samples, tmp_path):
    from gradio_client import handle_file

    def request(c: Any, i: int) -> str:
        if i % 6 == 5:
            return classify(lambda: c.predict(handle_file(str(samples["corrupt_wav"])), api_name="/asr"),
                            bad_input=True)
        if i % 2:
            return classify(lambda: c.predict(handle_file(str(samples["wav"])), api_name="/asr"))
        return classify(lambda: c.predict(f"Hello number {i}.", "model default", 6, api_name="/tts"))

    with served_app(tmp_path, "--task", "speech", "--speech-model", str(tiny_audio)) as (url, proc):
        report = drive(url, proc, "speech app", request,
                       lambda c: (c.predict(handle_file(str(samples["wav"])), api_name="/asr"),
                                  c.predict("Hello.", "model default", 6, api_name="/tts")))
    check_report(report, min_answered=CLIENTS)
