"""The fuzz harness: run one case, classify how it ended, enforce time and memory bounds, count.

Every case must end as a result or an :class:`mm.MMError` (an *escape* is anything else: a
bare exception, a hang past :data:`CASE_SECONDS`, or memory growth past :data:`CASE_BYTES`).
Counts per target are kept in :data:`COUNTS`; ``MM_FUZZ_REPORT=path.json`` writes them at the
end of the session (``tests/fuzz/conftest.py``) - the figures in docs/hardening.md come from it.

Each target has a fast property test (a few dozen seeded examples, in the default test run)
and a long one (marked ``slow``) over the same strategy; :func:`fuzz_tests` builds both.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mm

#: wall-clock bound of one case (seconds); a case still running then is a hang
CASE_SECONDS = float(os.environ.get("MM_FUZZ_CASE_SECONDS", "60"))
#: resident-memory growth allowed in one case (bytes)
CASE_BYTES = int(float(os.environ.get("MM_FUZZ_CASE_MB", "1536")) * 2**20)
#: examples per target: fast (default test run) and long (``-m slow``)
FAST_EXAMPLES = int(os.environ.get("MM_FUZZ_FAST", "25"))
LONG_EXAMPLES = int(os.environ.get("MM_FUZZ_LONG", "400"))
#: multiplies every long run's example count (e.g. 0.3 for a quicker long run)
LONG_SCALE = float(os.environ.get("MM_FUZZ_LONG_SCALE", "1"))
#: True: count escapes and keep going (for measuring another tree); False: fail on the first
COUNT_ONLY = os.environ.get("MM_FUZZ_COUNT_ONLY") == "1"

COUNTS: dict[str, Counter] = {}
ESCAPES: dict[str, list[str]] = {}


class CaseTimeout(BaseException):
    """Raised in the main thread when a case runs past its time bound (BaseException: never caught as MMError)."""


@contextmanager
def time_limit(seconds: float):
    """Interrupt the main thread after ``seconds`` (SIGALRM); a no-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"case ran longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_case(target: str, fn: Callable[[], Any], describe: Any = None) -> str:
    """Run ``fn()``; return ``"result"`` or ``"mmerror"``; count; fail (or count) on an escape."""
    counts = COUNTS.setdefault(target, Counter())
    counts["cases"] += 1
    process = psutil.Process()
    before = process.memory_info().rss
    start = time.perf_counter()
    outcome, detail = "result", ""
    try:
        with time_limit(CASE_SECONDS):
            fn()
    except mm.MMError:
        outcome = "mmerror"
    except CaseTimeout as exc:
        outcome, detail = "escape", f"hang: {exc}"
    except Exception as exc:  # the escapes this suite hunts
        outcome, detail = "escape", f"{type(exc).__name__}: {str(exc)[:300]}"
    elapsed = time.perf_counter() - start
    grown = process.memory_info().rss - before
    if outcome != "escape" and grown > CASE_BYTES:
        outcome, detail = "escape", f"memory grew by {grown / 2**20:.0f} MiB"
    counts[outcome] += 1
    counts["max_seconds_x1000"] = max(counts["max_seconds_x1000"], int(elapsed * 1000))
    if outcome == "escape":
        ESCAPES.setdefault(target, []).append(f"{detail} <- {str(describe)[:300]}")
        if not COUNT_ONLY:
            pytest.fail(f"{target}: escaped as {detail}\ninput: {str(describe)[:500]}", pytrace=False)
    return outcome


def fuzz_tests(target: str, strategy: st.SearchStrategy, check: Callable[[Any], Any],
               fast: int | None = None, long: int | None = None) -> tuple[Callable, Callable]:
    """A fast and a long (``long``-marked, outside the default test command) hypothesis test running ``check(value)`` through :func:`run_case`."""
    common = {"derandomize": True, "deadline": None, "database": None, "print_blob": False,
              "suppress_health_check": list(HealthCheck)}

    def body(value: Any) -> None:
        run_case(target, lambda: check(value), value)

    fast_test = settings(max_examples=fast or FAST_EXAMPLES, **common)(given(strategy)(body))
    long_examples = max(1, int((long or LONG_EXAMPLES) * LONG_SCALE))
    long_test = pytest.mark.long(settings(max_examples=long_examples, **common)(given(strategy)(body)))
    return fast_test, long_test


# -- shared strategies ---------------------------------------------------------------------------
def floats(*args: Any, **kwargs: Any) -> st.SearchStrategy:
    """``st.floats`` without subnormals: the in-process ``mm`` runs of the CLI target call
    ``mm.runtime.configure_torch``, which turns on torch's flush-denormal mode for the test process (as
    the CLI does for its own), after which hypothesis refuses to generate them."""
    return st.floats(*args, allow_subnormal=False, **kwargs)


surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
#: any Python string: ordinary text, control characters, lone surrogates, huge and empty ones
any_text = st.one_of(
    st.text(max_size=200),
    st.text(st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF, categories=None), max_size=50),
    st.lists(st.one_of(st.text(max_size=5), surrogates), max_size=10).map("".join),
    st.sampled_from(["", " ", "\n\t", "\x00", "<|im_end|>", "<image>", "a#0", "\ufeff", "x" * 5000]),
)
#: scalar values of every kind (what an option may be given by mistake)
any_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    floats(allow_nan=True, allow_infinity=True), any_text, st.binary(max_size=8),
)
any_value = st.recursive(any_scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=4), inner, max_size=4)),
                         max_leaves=8)


def small_index(root: Any) -> Any:
    """Build a five-document MiniLM index under ``root / "index"`` (the fuzz targets' search fixture)."""
    import json

    from mm.index import build_job

    corpus = root / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"_id": f"d{i}", "text": f"river {i} flows", "lang": "en"})
                                for i in range(5)))
    build_job(corpus, root / "index", encoder="minilm", workers=1, progress=False)
    return root / "index"
