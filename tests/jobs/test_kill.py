"""A job SIGKILLed at random points and restarted indexes every document exactly once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.jobs.conftest import index_ids, index_meta, write_corpus
from tests.jobs.test_local import expected_ids

REPO = Path(__file__).resolve().parents[2]


def start(corpus: Path, index: Path, delay: float, workers: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "tests.jobs.run_job", str(corpus), str(index), str(delay),
                             str(workers)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def committed(index: Path) -> int:
    """Documents the index holds now (the index is the job's checkpoint)."""
    from mm.index import open_index
    from mm.index.writer import IndexWriter

    if not (index / "manifest.json").exists():
        return 0
    return IndexWriter.for_index(open_index(index)).totals()[0]


def wait_for_progress(proc: subprocess.Popen, index: Path, done: int, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while proc.poll() is None and committed(index) <= done:
        assert time.monotonic() < end, "the job made no progress"
        time.sleep(0.05)


def check_exactly_once(corpus: Path, index: Path) -> None:
    from mm.index import open_index
    from mm.index.jobs.source import FileSource
    from mm.index.writer import IndexWriter

    assert index_ids(index) == expected_ids(corpus)  # every chunk of every doc, nothing stale or extra
    meta = index_meta(index)
    owner = {cid: m.get("_doc", cid) for cid, m in meta.items()}
    writer = IndexWriter.for_index(open_index(index))
    hashes = {d.id: writer.hash(d) for d in FileSource(corpus)}
    assert set(owner.values()) == set(hashes)
    # the index holds each document once, with its current content hash on every chunk
    assert writer.known(sorted(hashes)) == {d: (h, sum(1 for o in owner.values() if o == d)) for d, h in hashes.items()}
    assert writer.totals()[0] == len(hashes)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_at_random_points_then_resume(tmp_path, workers):
    rng = random.Random(workers)
    corpus = write_corpus(tmp_path / "c.jsonl", 300, seed=workers)
    index = tmp_path / "idx"
    kills, progress = 0, []
    for round_ in range(4):
        proc = start(corpus, index, delay=0.015, workers=workers)
        if round_ == 0:  # anywhere, even before the first checkpoint
            time.sleep(rng.uniform(0.2, 2.0))
        else:  # after some more progress, at a random moment of a segment
            wait_for_progress(proc, index, progress[-1])
            time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is not None:
            break
        children = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        progress.append(committed(index))
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, "encoder worker processes outlived the killed job"
    # the changed corpus must also be picked up by the run that finishes the job
    write_corpus(corpus, 300, seed=workers, changed={"d1": "a brand new text", "d2": "w1 " * 200})
    proc = start(corpus, index, delay=0.0, workers=workers)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert kills >= 3, "the job finished before it could be killed; make it slower"
    assert progress == sorted(progress) and progress[-1] > 0  # checkpoints only move forward
    assert report["docs_encoded"] + report["docs_unchanged"] == 300
    assert report["docs_encoded"] < 300  # work before the kills was kept
    check_exactly_once(corpus, index)
    again = start(corpus, index, delay=0.0, workers=workers)
    out, _ = again.communicate(timeout=240)
    assert json.loads(out.strip().splitlines()[-1])["docs_encoded"] == 0
