"""In-process tests of the batched generation rows and the per-model queue (no HTTP)."""

from __future__ import annotations

import threading
import time

import pytest

from mm.server.batching import ChatJob, ChatQueue, QueueFull
from mm.server.generation import Row, Sampling, generate_rows


@pytest.fixture(scope="module")
def chat(tiny_chat):
    import mm

    return mm.pipeline("chat", model=tiny_chat, dtype="float32")


@pytest.fixture(scope="module")
def engine(chat):
    from mm.server.adapters import ChatEngine

    return ChatEngine(chat)


PROMPTS = ["Hello", "Tell me a long story about a fox", "Hi there, how are you today?"]


def _convs(prompts):
    return [[{"role": "user", "content": p}] for p in prompts]


def test_batched_rows_equal_single_rows(chat):
    bb = chat.backbone
    batched = [Row(max_tokens=12) for _ in PROMPTS]
    generate_rows(bb, bb.encode_chat(_convs(PROMPTS)), batched, Sampling())
    for prompt, row in zip(PROMPTS, batched, strict=True):
        single = Row(max_tokens=12)
        generate_rows(bb, bb.encode_chat(_convs([prompt])), [single], Sampling())
        assert row.token_ids == single.token_ids and row.finish_reason == single.finish_reason
        # and the chat pipeline itself agrees
        assert chat(prompt, max_new_tokens=12).token_ids == single.token_ids


def test_rows_have_their_own_limits_and_cancel(chat):
    bb = chat.backbone
    pieces: list[str] = []
    cancelled = Row(max_tokens=40)
    counter = {"n": 0}

    def emit(piece: str) -> None:
        counter["n"] += 1
        if counter["n"] == 2:
            cancelled.cancel.set()

    cancelled.emit = emit
    short = Row(max_tokens=3, emit=pieces.append)
    long = Row(max_tokens=20)
    generate_rows(bb, bb.encode_chat(_convs(PROMPTS)), [cancelled, short, long], Sampling())
    assert short.finish_reason in ("stop", "length") and len(short.token_ids) <= 3
    assert "".join(pieces) == short.text
    assert cancelled.finish_reason == "cancelled" or len(cancelled.token_ids) < 3
    if cancelled.finish_reason == "cancelled":
        assert len(cancelled.token_ids) < 40
    assert len(long.token_ids) == 20 or long.finish_reason == "stop"


def test_stop_strings_are_cut_and_never_streamed(chat):
    bb = chat.backbone
    free = Row(max_tokens=16)
    generate_rows(bb, bb.encode_chat(_convs(["Hello"])), [free], Sampling())
    if len(free.text) < 4:
        pytest.skip("the tiny model's reply is too short")
    stop = free.text[2:4]
    pieces: list[str] = []
    cut = Row(max_tokens=16, stop=[stop], emit=pieces.append)
    generate_rows(bb, bb.encode_chat(_convs(["Hello"])), [cut], Sampling())
    assert cut.text == free.text[: free.text.index(stop)] and "".join(pieces) == cut.text
    assert cut.finish_reason == "stop"


def test_transformers_engine_gives_the_same_rows(tiny_chat, chat):
    import mm

    slow = mm.pipeline("chat", model=tiny_chat, dtype="float32", engine="transformers")
    assert slow.backbone is chat.backbone  # one cached model; the engine is chosen per call below
    bb = chat.backbone
    fast_rows = [Row(max_tokens=8) for _ in PROMPTS]
    generate_rows(bb, bb.encode_chat(_convs(PROMPTS)), fast_rows, Sampling())
    original = bb.engine
    bb.engine = "transformers"
    try:
        slow_rows = [Row(max_tokens=8) for _ in PROMPTS]
        generate_rows(bb, bb.encode_chat(_convs(PROMPTS)), slow_rows, Sampling())
    finally:
        bb.engine = original
    assert [r.token_ids for r in slow_rows] == [r.token_ids for r in fast_rows]


def test_queue_batches_waiting_requests_and_refuses_when_full(engine):
    queue = ChatQueue(engine, batch_size=8, queue_size=3)
    try:
        with engine.backbone._lock:  # hold the model: the first request blocks, the next ones wait together
            first = ChatJob(engine.prepare(_convs(["Hello"])[0], {}), Row(max_tokens=4))
            queue.submit(first)
            deadline = time.monotonic() + 30
            while queue.waiting and time.monotonic() < deadline:
                time.sleep(0.01)
            waiting = [ChatJob(engine.prepare(c, {}), Row(max_tokens=4)) for c in _convs(PROMPTS)]
            for job in waiting:
                queue.submit(job)
            with pytest.raises(QueueFull):
                queue.submit(ChatJob(engine.prepare(_convs(["x"])[0], {}), Row(max_tokens=4)))
            seeded = ChatJob(engine.prepare(_convs(["Hello"])[0], {}), Row(max_tokens=4), Sampling(1.0, None, 5))
        assert all(job.wait(60) for job in [first, *waiting])
        queue.submit(seeded)
        assert seeded.wait(60)
        assert queue.batches[:3] == [1, 3, 1]  # the three waiting requests ran as one batch; a seeded one alone
        assert all(job.batch_size == 3 and job.prompt_tokens > 0 for job in waiting)
    finally:
        queue.close()


def test_cancelled_waiting_request_is_dropped(engine):
    queue = ChatQueue(engine, batch_size=8, queue_size=8)
    try:
        with engine.backbone._lock:
            blocker = ChatJob(engine.prepare(_convs(["Hello"])[0], {}), Row(max_tokens=2))
            queue.submit(blocker)
            gone = ChatJob(engine.prepare(_convs(["Hi"])[0], {}), Row(max_tokens=2))
            gone.row.cancel.set()
            queue.submit(gone)
        assert gone.wait(60) and gone.row.finish_reason == "cancelled" and gone.row.token_ids == []
        assert blocker.wait(60) and queue.stats()["cancelled"] == 1
    finally:
        queue.close()


def test_worker_survives_a_failing_batch(engine):
    queue = ChatQueue(engine, batch_size=8, queue_size=8)
    try:
        bad = ChatJob([{"role": "user", "content": ""}] * 0, Row(max_tokens=2))  # an empty conversation
        queue.submit(bad)
        assert bad.wait(60) and bad.error is not None
        good = ChatJob(engine.prepare(_convs(["Hello"])[0], {}), Row(max_tokens=2))
        queue.submit(good)
        assert good.wait(60) and good.error is None
    finally:
        queue.close()


def test_threads_are_not_left_behind(engine):
    before = {t.name for t in threading.enumerate()}
    ChatQueue(engine).close()
    assert {t.name for t in threading.enumerate()} - before == set()
