"""mm.index under concurrency and crashes: the writer lock, concurrent writers, SIGKILL at random moments."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from mm.index import create_index, open_index
from mm.index.storage import MANIFEST, referenced_files

from mm.errors import IndexLockedError

DIM = 16

# A writer that keeps adding (sometimes re-adding, deleting, compacting) and logs each
# operation before it starts ("begin") and after it returned ("done"), one JSON line each.
WRITER = textwrap.dedent("""
    import json, os, sys, numpy as np
    from mm.index import open_index
    path, log_path, prefix, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    rng = np.random.default_rng(seed)
    index = open_index(path, lock_timeout=60)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    def log(**rec):
        os.write(fd, (json.dumps(rec) + "\\n").encode())
    log(op="ready")
    for step in range(10_000):
        roll = rng.random()
        if roll < 0.1 and len(index) > 10:
            ids = sorted(rng.choice(index.ids(), 3, replace=False).tolist())
            log(op="delete", state="begin", ids=ids)
            index.delete(ids)
            log(op="delete", state="done", ids=ids)
        elif roll < 0.15:
            log(op="compact", state="begin")
            index.compact()
            log(op="compact", state="done")
        else:
            n = int(rng.integers(1, 12))
            ids = [f"{prefix}-{step}-{j}" for j in range(n)]
            if roll < 0.3 and len(index):  # replace an existing document too
                ids[0] = str(rng.choice(index.ids()))
            vecs = [rng.normal(size=(int(rng.integers(3, 20)), @DIM@)).astype(np.float32) for _ in ids]
            log(op="add", state="begin", ids=ids)
            index.add(ids, vecs, texts=[f"text {i} {step}" for i in ids], metadata=[{"step": step}] * n)
            log(op="add", state="done", ids=ids, step=step)
""".replace("@DIM@", str(DIM)))


def run_writer(path: Path, log_path: Path, prefix: str, seed: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(log_path), prefix, str(seed)], env=env,
                            stderr=subprocess.PIPE)


def wait_ready(log_path: Path, proc: subprocess.Popen, count: int, timeout: float = 60) -> None:
    """Wait until the log holds ``count`` "ready" lines (the writer of this round has opened the index)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if log_path.exists() and log_path.read_text().count('"ready"') >= count:
            return
        if proc.poll() is not None:
            raise AssertionError(f"writer died: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError("writer did not start")


def replay(log_path: Path) -> tuple[dict[str, int], dict | None]:
    """Committed documents (id -> step of the add that wrote it) and the operation in flight when killed."""
    docs: dict[str, int] = {}
    pending = None
    for line in log_path.read_text().splitlines():
        if not line.endswith("}"):
            continue  # a log line cut by the kill
        rec = json.loads(line)
        if rec.get("state") == "begin":
            pending = rec
        elif rec.get("state") == "aborted":
            pending = None
        elif rec.get("state") == "done":
            pending = None
            if rec["op"] == "add":
                docs.update(dict.fromkeys(rec["ids"], rec["step"]))
            elif rec["op"] == "delete":
                for i in rec["ids"]:
                    docs.pop(i, None)
    return docs, pending


@pytest.mark.slow
def test_sigkill_at_random_moments_keeps_committed_state(tmp_path):
    path = tmp_path / "ix"
    create_index(path, kind="multivector", dim=DIM, encoder_info={"test": "crash"}, nbits=2, train_tokens=150)
    log_path = tmp_path / "writer.log"
    rng = np.random.default_rng(123)
    committed: dict[str, int] = {}
    trained_seen = False
    killed_in_flight = 0
    for round_ in range(8):
        proc = run_writer(path, log_path, f"r{round_}", seed=round_)
        wait_ready(log_path, proc, round_ + 1)
        time.sleep(float(rng.uniform(0.2, 2.5)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        docs, pending = replay(log_path)
        killed_in_flight += pending is not None
        index = open_index(path)  # must always open
        present = set(index.ids())
        trained_seen |= index.info()["trained"]
        expected = set(docs)
        if pending is None or pending["op"] == "compact":
            assert present == expected
        elif pending["op"] == "add":  # all or nothing
            new = set(pending["ids"])
            assert present in (expected, expected | new), (present ^ expected)
        else:
            gone = set(pending["ids"])
            assert present in (expected, expected - gone), (present ^ expected)
        # every committed document is complete: text, metadata and searchable vectors
        in_flight = set(pending["ids"]) if pending and "ids" in pending else set()
        for doc_id in sorted((expected & present) - in_flight)[:30]:
            doc = index.get(doc_id)
            assert doc.metadata == {"step": docs[doc_id]} and doc.text == f"text {doc_id} {docs[doc_id]}"
        committed = docs
        # the writer log of the in-flight add decides; reconcile the log with what was committed
        if pending is not None and pending["op"] == "add" and set(pending["ids"]) <= present:
            with open(log_path, "a") as fh:
                step = index.get(pending["ids"][-1]).metadata["step"]
                fh.write(json.dumps({"op": "add", "state": "done", "ids": pending["ids"], "step": step}) + "\n")
        elif pending is not None and pending["op"] == "delete" and not set(pending["ids"]) & present:
            with open(log_path, "a") as fh:
                fh.write(json.dumps({"op": "delete", "state": "done", "ids": pending["ids"]}) + "\n")
        elif pending is not None:
            with open(log_path, "a") as fh:
                fh.write(json.dumps({"op": pending["op"], "state": "aborted"}) + "\n")
    assert len(committed) > 20, f"the writer should have committed something, got {len(committed)}"
    assert killed_in_flight >= 2, "some kills should have hit a write in progress"
    assert trained_seen
    # after a final write, the garbage of killed writes is gone
    index = open_index(path)
    index.compact()
    manifest = json.loads((path / MANIFEST).read_text())
    leftovers = set(os.listdir(path)) - referenced_files(manifest) - {MANIFEST, "index.lock"}
    assert not leftovers
    assert len(index.search(np.ones((3, DIM), np.float32), k=5)) == 5


def test_second_writer_gets_index_locked_error(tmp_path):
    path = tmp_path / "ix"
    index = create_index(path, kind="dense", dim=4, encoder_info={})
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import sys, time
            from mm.index.storage import writer_lock
            with writer_lock(__import__("pathlib").Path(sys.argv[1]), 5):
                print("locked", flush=True)
                time.sleep(30)
        """), str(path)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        slow = open_index(path, lock_timeout=0.3)
        t0 = time.time()
        with pytest.raises(IndexLockedError, match="another process"):
            slow.add(["a"], np.ones((1, 4), np.float32))
        assert time.time() - t0 < 5
        assert len(index) == 0 and index.search(np.ones(4, np.float32)) == []  # readers are not blocked
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    index.add(["a"], np.ones((1, 4), np.float32))  # the lock is free once its holder died
    assert len(open_index(path)) == 1


def test_two_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "ix"
    create_index(path, kind="multivector", dim=DIM, encoder_info={}, train_tokens=400)
    code = textwrap.dedent("""
        import sys, numpy as np
        from mm.index import open_index
        path, prefix = sys.argv[1], sys.argv[2]
        rng = np.random.default_rng(len(prefix))
        index = open_index(path, lock_timeout=60)
        for step in range(15):
            ids = [f"{prefix}{step}-{j}" for j in range(3)]
            index.add(ids, [rng.normal(size=(5, @DIM@)).astype(np.float32) for _ in ids])
    """.replace("@DIM@", str(DIM)))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), p]) for p in ("a", "bb")]
    for p in procs:
        assert p.wait(timeout=240) == 0
    index = open_index(path)
    assert len(index) == 2 * 15 * 3
    assert {i[0] for i in index.ids()} == {"a", "b"}
