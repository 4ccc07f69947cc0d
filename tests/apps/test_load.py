"""Load: ``mm serve`` under 20 concurrent clients for a minute.

Every request is answered, or refused with a queue message; the server's memory stays within 10% of
its warmed-up size; threads and open files do not grow from the first half of the run to the second
(Gradio's worker pool fills up once, then stays).
``MM_LOAD_SECONDS`` (default 60) and ``MM_LOAD_CLIENTS`` (default 20) size the run; the numbers of
the last run are written to ``MM_LOAD_REPORT`` (a JSON file) when that is set.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.apps.conftest import free_port, mm_command, wait_http

SECONDS = float(os.environ.get("MM_LOAD_SECONDS", "60"))
CLIENTS = int(os.environ.get("MM_LOAD_CLIENTS", "20"))
QUERIES = ["the fox jumps over the dog", "capital of Japan", "pan", "Fluss", "musées de Paris", "", "x" * 5000]


def _snapshot(proc) -> dict[str, int]:
    """RSS (bytes), threads and open file descriptors of the server process and its children."""
    procs = [proc, *proc.children(recursive=True)]
    alive = [p for p in procs if p.is_running()]
    return {"rss": sum(p.memory_info().rss for p in alive), "threads": sum(p.num_threads() for p in alive),
            "fds": sum(p.num_fds() for p in alive)}


def _client_loop(url: str, deadline: float, seed: int, outcomes: Counter, errors: list[str], lock) -> None:
    from gradio_client import Client

    client = Client(url, verbose=False)
    i = seed
    while time.monotonic() < deadline:
        query = QUERIES[i % len(QUERIES)]
        i += 1
        try:
            client.predict(query, 3, "", api_name="/search")
            kind = "answered"
        except Exception as exc:
            text = str(exc).lower()
            if "queue" in text or "too many" in text or "busy" in text:
                kind = "refused (queue)"
            elif "empty" in text or "limit" in text:  # the input checks' messages
                kind = "answered (input error)"
            else:
                kind = "failed"
                with lock:
                    errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
        with lock:
            outcomes[kind] += 1


@pytest.mark.slow
def test_search_app_under_concurrent_clients(tiny_index, tmp_path):
    import psutil

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = subprocess.Popen(mm_command("serve", "--task", "search", "--search-index", str(tiny_index),
                                         "--port", str(port), "--queue-size", "8", "--concurrency", "2"),
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "w"))  # noqa: SIM115
    try:
        wait_http(url, 180, server)
        proc = psutil.Process(server.pid)
        from gradio_client import Client

        warm = Client(url, verbose=False)
        for query in QUERIES[:3] * 3:  # load the model, fill caches
            warm.predict(query, 3, "", api_name="/search")
        time.sleep(2)
        before = _snapshot(proc)
        outcomes: Counter = Counter()
        errors: list[str] = []
        lock = threading.Lock()
        peak = dict(before)
        phases = []
        for _ in range(2):  # two halves: thread pools fill up in the first; a leak keeps growing in the second
            deadline = time.monotonic() + SECONDS / 2
            threads = [threading.Thread(target=_client_loop, args=(url, deadline, n, outcomes, errors, lock))
                       for n in range(CLIENTS)]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                now = _snapshot(proc)
                peak = {k: max(peak[k], now[k]) for k in peak}
                time.sleep(1)
            for t in threads:
                t.join()
            time.sleep(5)  # let finished requests release their threads and sockets
            phases.append(_snapshot(proc))
        first, after = phases
        report = {"clients": CLIENTS, "seconds": SECONDS, "outcomes": dict(outcomes), "before": before,
                  "after_first_half": first, "peak": peak, "after": after,
                  "rss_growth": after["rss"] / before["rss"] - 1, "errors": errors[:5]}
        if os.environ.get("MM_LOAD_REPORT"):
            Path(os.environ["MM_LOAD_REPORT"]).write_text(json.dumps(report, indent=2))
        assert not errors, report
        assert outcomes["answered"] > CLIENTS, report
        assert after["rss"] < before["rss"] * 1.10, report
        assert after["threads"] <= first["threads"] + 2, report  # bounded pools, no leak
        assert after["fds"] <= max(first["fds"], before["fds"]) + 4, report
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
