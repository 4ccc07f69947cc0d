"""A load driver shared by the app and HTTP-server load tests.

``run_load`` runs ``clients`` threads against a served process for ``seconds`` in two halves; each
thread calls ``request(client_state, i)`` in a loop, which returns an outcome kind ("answered",
"answered (input error)", "refused (queue)") or raises :class:`Failed`. Between and after the halves
it samples the server's RSS, threads and open file descriptors (the process and its children), so a
test can ask for flat memory (after warm-up) and no growth of threads or descriptors from the first
half to the second (worker pools fill once in the first half; a leak keeps growing in the second).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Failed(Exception):
    """A request that was neither answered nor refused with a queue message (a test failure)."""


def snapshot(proc: Any) -> dict[str, int]:
    """RSS (bytes), threads and open file descriptors of ``proc`` (a psutil.Process) and its children."""
    alive = [p for p in [proc, *proc.children(recursive=True)] if p.is_running()]
    return {"rss": sum(p.memory_info().rss for p in alive), "threads": sum(p.num_threads() for p in alive),
            "fds": sum(p.num_fds() for p in alive)}


def fd_kinds(proc: Any) -> dict[str, int]:
    """Open descriptors of ``proc`` and its children by kind (socket, pipe, anon_inode, file)."""
    kinds: Counter = Counter()
    for p in [proc, *proc.children(recursive=True)]:
        fd_dir = Path(f"/proc/{p.pid}/fd")
        for fd in fd_dir.iterdir() if fd_dir.is_dir() else ():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            kinds[target.split(":")[0] if ":" in target and not target.startswith("/") else "file"] += 1
    return dict(kinds)


def _client_loop(make_state: Callable[[int], Any], request: Callable[[Any, int], str], seed: int,
                 deadline: float, outcomes: Counter, errors: list[str], lock: threading.Lock) -> None:
    state = make_state(seed)
    i = seed
    try:
        while time.monotonic() < deadline:
            try:
                kind = request(state, i)
            except Failed as exc:
                kind = "failed"
                with lock:
                    errors.append(str(exc)[:300])
            except Exception as exc:
                kind = "failed"
                with lock:
                    errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")
            with lock:
                outcomes[kind] += 1
            i += 1
    finally:
        _close(state)


def _close(state: Any) -> None:
    """Close a client state that has a ``close()`` (httpx and Gradio clients do)."""
    close = getattr(state, "close", None)
    if close is not None:
        close()


def _phase(proc: Any, make_state: Callable[[int], Any], request: Callable[[Any, int], str], first_seed: int,
           clients: int, seconds: float, outcomes: Counter, errors: list[str], peak: dict[str, int]) -> None:
    """``clients`` threads for ``seconds`` (each finishes its request in flight); ``peak`` is updated."""
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=_client_loop, daemon=True,
                                args=(make_state, request, first_seed + n, deadline, outcomes, errors, lock))
               for n in range(clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        now = snapshot(proc)
        for k in peak:
            peak[k] = max(peak[k], now[k])
        time.sleep(1)


def settled_snapshot(proc: Any, settle: float, threads_at_rest: int, poke: Callable[[], Any],
                     patience: float = 20.0) -> dict[str, int]:
    """A snapshot after the clients stopped: ``settle`` seconds of quiet, one ``poke`` (a single request),
    then up to ``patience`` seconds more while the process still runs more threads than it did at rest.

    anyio's worker pool (Gradio and FastAPI run handlers on it) grows to the peak number of calls in flight
    and retires workers idle for over 10 s only when the next call arrives; so without the poke the
    count is the pool's high-water mark, which depends on how loaded the machine was, not a leak. The
    retired workers exit on their own, so one look can catch some on their way out; a leaked thread
    outlives the wait."""
    time.sleep(settle)
    poke()
    deadline = time.monotonic() + patience
    snap = snapshot(proc)
    while snap["threads"] > threads_at_rest and time.monotonic() < deadline:
        time.sleep(1.0)
        snap = snapshot(proc)
    return snap


def run_load(proc: Any, make_state: Callable[[int], Any], request: Callable[[Any, int], str], *,
             clients: int, seconds: float, warmup: float = 0.0, settle: float = 15.0) -> dict[str, Any]:
    """Drive the served process ``proc`` (psutil.Process) with ``clients`` threads for ``seconds``.

    ``warmup`` seconds of the same load come first (model batches, caches, worker pools and malloc
    arenas reach their working size); memory growth is measured from the end of the warm-up. Returns
    a report: outcome counts (warm-up included), the first failures, and RSS/threads/fds after the
    sequential warm-up, before the measured run, after its first half, at peak and at the end, each
    taken after ``settle`` quiet seconds and one more request, which lets anyio retire the worker
    threads idle since the load stopped, and after each half up to 20 s more while threads are still
    exiting (:func:`settled_snapshot`).
    """
    outcomes: Counter = Counter()
    errors: list[str] = []
    started = time.monotonic()
    sequential = snapshot(proc)
    peak = dict(sequential)

    def poke() -> None:
        state = make_state(9999)
        try:
            request(state, 0)
        except Exception as exc:
            errors.append(f"the poke after the quiet: {type(exc).__name__}: {str(exc)[:300]}")
        finally:
            _close(state)

    before = sequential
    if warmup > 0:
        _phase(proc, make_state, request, 5000, clients, warmup, outcomes, errors, peak)
        before = settled_snapshot(proc, settle, sequential["threads"], poke)
    kinds_before = fd_kinds(proc)
    phases = []
    for half in range(2):
        _phase(proc, make_state, request, half * 1000, clients, seconds / 2, outcomes, errors, peak)
        phases.append(settled_snapshot(proc, settle, before["threads"], poke))
    first, after = phases
    return {"clients": clients, "seconds": seconds, "warmup_s": warmup,
            "wall_s": round(time.monotonic() - started, 1), "requests": sum(outcomes.values()),
            "outcomes": dict(outcomes), "after_sequential_warmup": sequential,
            "rss_growth_from_sequential_warmup": round(phases[1]["rss"] / sequential["rss"] - 1, 4),
            "before": before,
            "after_first_half": first, "peak": peak, "after": after,
            "fd_kinds": {"before": kinds_before, "after": fd_kinds(proc)},
            "rss_growth": round(after["rss"] / before["rss"] - 1, 4),
            "rss_growth_second_half": round(after["rss"] / first["rss"] - 1, 4), "errors": errors[:8],
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def save_report(name: str, report: dict[str, Any]) -> None:
    """Add ``report`` under ``name`` to the JSON file named by ``MM_LOAD_REPORT`` (when set)."""
    target = os.environ.get("MM_LOAD_REPORT")
    if not target:
        return
    path = Path(target)
    data = json.loads(path.read_text()) if path.exists() and path.stat().st_size else {}
    data[name] = report
    path.write_text(json.dumps(data, indent=2))


def check_report(report: dict[str, Any], *, min_answered: int, rss_growth: float = 0.10,
                 thread_slack: int = 2, fd_slack: int = 4) -> None:
    """The load gates: no failure, enough answers, RSS within ``rss_growth`` of the warmed-up size, no
    growth of threads or file descriptors from the first half to the end."""
    first, after, before = report["after_first_half"], report["after"], report["before"]
    assert not report["errors"] and not report["outcomes"].get("failed"), report
    assert report["outcomes"].get("answered", 0) >= min_answered, report
    assert after["rss"] < before["rss"] * (1 + rss_growth), report
    assert after["threads"] <= first["threads"] + thread_slack, report
    assert after["fds"] <= max(first["fds"], before["fds"]) + fd_slack, report
