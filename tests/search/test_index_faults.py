"""Faults on a committed index: kill -9 at seeded points of every write, a full disk, a read-only folder,
two writers with readers. After each: ``open_index`` works, holds exactly the last committed state, and
retrying the operation finishes it.

How a kill point is chosen: a child process runs one operation (add, update, delete, compact, retrain)
with ``os.fsync``, ``os.replace`` and ``os.unlink`` wrapped; at the N-th such call it SIGKILLs itself
(``torn`` mode first truncates the file being fsynced to a random length: a write cut mid-way). A
counting run of the same operation lists the calls, so the test knows whether N came before or after
the ``os.replace`` of ``manifest.json`` (the commit point) and which state the folder must hold.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from mm.index import create_index, open_index

DIM = 8
OPS = ("add", "update", "delete", "compact", "retrain")

# One operation on the index at argv[1], with fault injection; prints the call log as JSON when it finishes.
CHILD = textwrap.dedent("""
    import json, os, random, resource, signal, stat, sys
    import numpy as np
    path, op, kill_at, mode, seed, fsize = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], \\
        int(sys.argv[5]), int(sys.argv[6])
    rng = random.Random(seed)
    calls = []
    real = {"fsync": os.fsync, "replace": os.replace, "unlink": os.unlink}

    def hook(name, fd_or_path=None, dst=None):
        calls.append([name, os.path.basename(str(dst)) if dst is not None else ""])
        if len(calls) == kill_at:
            if mode == "torn" and name == "fsync" and stat.S_ISREG(os.fstat(fd_or_path).st_mode):
                size = os.fstat(fd_or_path).st_size
                os.ftruncate(fd_or_path, rng.randrange(size + 1) if size else 0)
            os.kill(os.getpid(), signal.SIGKILL)

    os.fsync = lambda fd: (hook("fsync", fd), real["fsync"](fd))[1]
    os.replace = lambda src, dst, **kw: (hook("replace", src, dst), real["replace"](src, dst, **kw))[1]
    os.unlink = lambda p, **kw: (hook("unlink", p), real["unlink"](p, **kw))[1]
    if fsize:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    sys.path.insert(0, os.path.dirname(sys.argv[7]))
    from fault_ops import run_op
    if os.environ.get("MM_FAULT_USER"):  # drop root (which ignores permissions) once everything is imported
        import faiss, filelock, uuid, zlib  # noqa: F401
        from mm.index import open_index
        warm = open_index(path)
        warm.search(np.ones(warm.dim, np.float32) if warm.kind == "dense" else np.ones((2, warm.dim), np.float32))
        os.setuid(int(os.environ["MM_FAULT_USER"]))
    try:
        run_op(path, op)
    except BaseException as exc:
        import traceback
        where = traceback.format_exc()[-600:] if not isinstance(exc, Exception) or type(exc).__name__ in (
            "ImportError", "ModuleNotFoundError") else ""
        print(json.dumps({"calls": calls, "error": type(exc).__name__, "message": str(exc)[:300] + where}))
        sys.exit(3)
    print(json.dumps({"calls": calls}))
""")

OPS_MODULE = textwrap.dedent(f"""
    import numpy as np
    from mm.index import open_index

    def run_op(path, op):
        '''The operation under test: fixed content, so every run of it writes the same state.'''
        rng = np.random.default_rng(7)
        index = open_index(path, lock_timeout=30)
        kind = index.kind
        if op == "add":
            ids = [f"new{{i}}" for i in range(4)] + ["d2"]  # four new documents and one replaced
            vecs = rng.standard_normal((5, {DIM})).astype(np.float32) if kind == "dense" else \\
                [rng.standard_normal((4, {DIM})).astype(np.float32) for _ in ids]
            index.add(ids, vecs, texts=[f"added {{i}}" for i in ids], metadata=[{{"op": "add"}}] * 5)
        elif op == "update":
            index.update(["d0", "d4"], texts=["updated 0", "updated 4"], metadata=[{{"op": "update"}}] * 2)
        elif op == "delete":
            index.delete(["d1", "d5", "d6"])
        elif op == "compact":
            index.compact()
        elif op == "retrain":
            index.retrain()
""")


def state(path: Path) -> dict[str, tuple[str, dict]]:
    """What a reader sees: every id with its text and metadata (searches must work too)."""
    index = open_index(path)
    query = np.ones(DIM, np.float32) if index.kind == "dense" else np.ones((2, DIM), np.float32)
    hits = index.search(query, k=50, exact=True)
    assert len({h.id for h in hits}) == len(hits) == len(index)
    return {i: (index.get(i).text, index.get(i).metadata) for i in index.ids()}


def make_template(root: Path, kind: str) -> Path:
    path = root / f"template-{kind}"
    rng = np.random.default_rng(0)
    extra = {"train_tokens": 40, "keep_originals": True} if kind == "multivector" else {}
    index = create_index(path, kind=kind, dim=DIM, encoder_info={"test": "faults"}, **extra)
    ids = [f"d{i}" for i in range(12)]
    vecs = rng.standard_normal((12, DIM)).astype(np.float32) if kind == "dense" else \
        [rng.standard_normal((5, DIM)).astype(np.float32) for _ in ids]
    index.add(ids[:8], vecs[:8], texts=[f"text {i}" for i in ids[:8]], metadata=[{"n": i} for i in range(8)])
    index.add(ids[8:], vecs[8:], texts=[f"text {i}" for i in ids[8:]], metadata=[{"n": i} for i in range(8, 12)])
    index.delete(["d3"])  # a tombstone, so compact has work to do
    return path


def run_child(path: Path, op: str, support: Path, kill_at: int = 0, mode: str = "kill", seed: int = 0,
              fsize: int = 0, user: int | None = None) -> tuple[int, dict | None]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    if user is not None:
        env["MM_FAULT_USER"] = str(user)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), op, str(kill_at), mode, str(seed), str(fsize),
                           str(support / "fault_ops.py")], env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout.strip().splitlines()
    report = json.loads(out[-1]) if out and out[-1].startswith("{") else None
    if proc.returncode not in (0, 3, -signal.SIGKILL):
        raise AssertionError(f"child exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.returncode, report


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Templates, their states before and after each operation, and each operation's call log."""
    root = tmp_path_factory.mktemp("faults")
    support = root / "support"
    support.mkdir()
    (support / "fault_ops.py").write_text(OPS_MODULE)
    os.chmod(root, 0o755)
    os.chmod(support, 0o755)
    plans = {}
    for kind in ("dense", "multivector"):
        template = make_template(root, kind)
        before = state(template)
        for op in OPS:
            if kind == "dense" and op == "retrain":
                continue
            ref = root / f"ref-{kind}-{op}"
            shutil.copytree(template, ref)
            code, report = run_child(ref, op, support)
            assert code == 0, report
            calls = report["calls"]
            commit = next(i for i, (name, dst) in enumerate(calls, 1) if name == "replace" and dst == "manifest.json")
            plans[(kind, op)] = {"template": template, "before": before, "after": state(ref), "calls": calls,
                                 "commit": commit}
    return root, support, plans


def one_trial(root: Path, support: Path, plans: dict, seed: int) -> str:
    rng = np.random.default_rng(seed)
    kind, op = list(plans)[int(rng.integers(len(plans)))]
    plan = plans[(kind, op)]
    path = root / f"trial-{seed}"
    shutil.copytree(plan["template"], path)
    kill_at = int(rng.integers(1, len(plan["calls"]) + 1))
    mode = "torn" if rng.random() < 0.5 else "kill"
    code, _ = run_child(path, op, support, kill_at=kill_at, mode=mode, seed=seed)
    assert code == -signal.SIGKILL, f"the child should have been killed at call {kill_at}"
    seen = state(path)  # open_index works
    want = plan["after"] if kill_at > plan["commit"] else plan["before"]
    assert seen == want, f"{kind} {op}: killed at call {kill_at}/{len(plan['calls'])} ({mode}), commit at " \
                         f"{plan['commit']}: state differs from the last committed one"
    code, report = run_child(path, op, support)  # retrying finishes the operation
    assert code == 0, report
    assert state(path) == plan["after"]
    shutil.rmtree(path)
    if os.environ.get("MM_FAULT_LOG"):  # progress of long runs: one line per passed trial
        with open(os.environ["MM_FAULT_LOG"], "a") as fh:
            fh.write(f"{seed} {kind} {op} kill_at={kill_at}/{len(plan['calls'])} commit={plan['commit']} {mode}\n")
    return f"{kind}:{op}"


def test_kill_at_seeded_points_fast(setup):
    """A few seeded kill points per run of the default suite (the ``long`` test runs 200: ``pytest -m long``)."""
    root, support, plans = setup
    done = {one_trial(root, support, plans, seed) for seed in range(6)}
    assert len(done) >= 3


@pytest.mark.long
@pytest.mark.timeout(7200)
def test_kill_at_200_seeded_points(setup):
    root, support, plans = setup
    done = [one_trial(root, support, plans, seed) for seed in range(1000, 1200)]
    assert len(done) == 200 and len(set(done)) == len(plans)  # every (kind, operation) was hit


@pytest.mark.parametrize("fsize_fraction", [0.0, 0.3, 0.9])
def test_full_disk_leaves_the_committed_state(setup, fsize_fraction):
    """RLIMIT_FSIZE makes every write past the limit fail (EFBIG), as a full disk does (ENOSPC)."""
    root, support, plans = setup
    for (kind, op), plan in plans.items():
        if op in ("delete",):
            continue
        path = root / f"full-{kind}-{op}-{fsize_fraction}"
        shutil.copytree(plan["template"], path)
        biggest = max(p.stat().st_size for p in plan["template"].iterdir())
        code, report = run_child(path, op, support, fsize=max(1, int(biggest * fsize_fraction)))
        if code == 0:  # small enough to fit under the limit: then it must have committed
            assert state(path) == plan["after"]
        else:
            # a clear mm error naming the folder, never a bare OSError
            assert code == 3 and report["error"] == "IndexWriteError", report
            assert str(path) in report["message"] and "disk is full" in report["message"], report
            assert state(path) == plan["before"], f"{kind} {op}: a failed write changed the committed state"
        code, report = run_child(path, op, support)
        assert code == 0, report
        assert state(path) == plan["after"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the writer as 'nobody'")
def test_read_only_folder(setup):
    """A writer without write permission fails cleanly; readers still work; with permission, the retry works."""
    _, support, plans = setup
    plan = plans[("dense", "add")]
    path = Path(tempfile.mkdtemp(prefix="mm-readonly-")) / "index"  # a folder 'nobody' can reach
    shutil.copytree(plan["template"], path)
    os.chmod(path.parent, 0o755)
    os.chmod(path, 0o555)
    for child in path.iterdir():
        os.chmod(child, 0o444)
    try:
        code, report = run_child(path, "add", support, user=65534)
        assert code == 3 and report["error"] == "IndexReadOnlyError", report
        assert str(path) in report["message"], report
        assert state(path) == plan["before"]
    finally:
        os.chmod(path, 0o755)
    code, report = run_child(path, "add", support)
    assert code == 0, report
    assert state(path) == plan["after"]


READER = textwrap.dedent("""
    import sys, time, numpy as np
    from mm.index import open_index
    path, seconds = sys.argv[1], float(sys.argv[2])
    end, reads, sizes = time.time() + seconds, 0, []
    while time.time() < end:
        index = open_index(path)
        hits = index.search(np.ones((2, 8), np.float32), k=1000, exact=True)
        ids = [h.id for h in hits]
        assert len(ids) == len(set(ids)) == len(index), "a reader saw a repeated or missing document"
        for h in hits[:5]:
            assert index.get(h.id) is not None
        sizes.append(len(index))
        reads += 1
    print(reads, min(sizes), max(sizes))
""")

WRITER = textwrap.dedent("""
    import sys, numpy as np
    from mm.index import open_index
    path, prefix = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(len(prefix))
    index = open_index(path, lock_timeout=60)
    for step in range(12):
        ids = [f"{prefix}{step}-{j}" for j in range(3)]
        index.add(ids, [rng.normal(size=(5, 8)).astype(np.float32) for _ in ids])
        if step % 4 == 3:
            index.delete([ids[0]])
        if step == 6:
            index.compact()
""")


def test_two_writers_and_three_readers(tmp_path):
    path = tmp_path / "ix"
    create_index(path, kind="multivector", dim=DIM, encoder_info={}, train_tokens=100)
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(path), "20"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(3)]
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), p], stderr=subprocess.PIPE, text=True)
               for p in ("a", "bb")]
    for w in writers:
        assert w.wait(timeout=300) == 0, w.stderr.read()[-2000:]
        w.stderr.close()
    for r in readers:
        out, err = r.communicate(timeout=300)
        assert r.returncode == 0, err[-2000:]
        assert int(out.split()[0]) > 0
    index = open_index(path)
    assert len(index) == 2 * (12 * 3 - 3)
    assert {i[0] for i in index.ids()} == {"a", "b"}


def _fsize_limit(limit: int):
    """preexec_fn: a file-size limit (EFBIG on writes past it, as a full disk gives ENOSPC), SIGXFSZ ignored."""
    import resource

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_cli_full_disk_prints_one_line_and_the_retry_finishes(tmp_path):
    """``mm index add`` on a full disk: one error line naming the folder (no traceback), the index still
    opens with its committed documents, and the same command run again (space freed) adds them."""
    docs = tmp_path / "docs.jsonl"
    more = tmp_path / "more.jsonl"
    docs.write_text("".join(json.dumps({"_id": f"a{i}", "text": f"river number {i}"}) + "\n" for i in range(4)))
    more.write_text("".join(json.dumps({"_id": f"b{i}", "text": f"mountain number {i}"}) + "\n" for i in range(4)))
    index = tmp_path / "idx"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1", "MM_NUM_THREADS": "1"}
    mm_cmd = [sys.executable, "-m", "mm", "index"]
    build = subprocess.run([*mm_cmd, "build", str(docs), "--index", str(index), "--model", "minilm"],
                           capture_output=True, text=True, timeout=600, env=env)
    assert build.returncode == 0, build.stderr[-2000:]
    before = sorted(open_index(index).ids())
    full = subprocess.run([*mm_cmd, "add", str(more), "--index", str(index)], capture_output=True, text=True,
                          timeout=600, env=env, preexec_fn=_fsize_limit(1))
    lines = [line for line in full.stderr.splitlines() if line.strip() and "warn" not in line.lower()]
    assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr[-2000:]
    assert any(str(index) in line and "disk is full" in line for line in lines), full.stderr[-2000:]
    assert sorted(open_index(index).ids()) == before  # the committed state, nothing partial
    retry = subprocess.run([*mm_cmd, "add", str(more), "--index", str(index)], capture_output=True, text=True,
                           timeout=600, env=env)
    assert retry.returncode == 0, retry.stderr[-2000:]
    assert sorted(open_index(index).ids()) == sorted(before + [f"b{i}" for i in range(4)])
