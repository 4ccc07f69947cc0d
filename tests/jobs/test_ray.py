"""The Ray engine on a private loopback-only Ray instance started inside the test run."""

from __future__ import annotations

import ipaddress
import os
import signal
import threading
import time

import psutil
import pytest
from mm.index.jobs import build_job

from tests.jobs.conftest import QUERIES, encoder, index_ids, index_target, top_hits, write_corpus
from tests.jobs.test_kill import check_exactly_once, committed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    from mm.index.jobs.engines import start_local_ray

    start_local_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def test_ray_listens_on_loopback_only(ray_cluster):
    procs = [psutil.Process(), *psutil.Process().children(recursive=True)]
    pids = {p.pid for p in procs}
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert listening, "found no Ray listeners to check"
    for conn in listening:
        ip = ipaddress.ip_address(conn.laddr.ip)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        assert ip.is_loopback, f"Ray process {conn.pid} listens on {conn.laddr}"


def test_ray_and_local_engines_build_identical_indexes(ray_cluster, corpus_3k, tmp_path):
    local = build_job(corpus_3k, index_target(tmp_path / "local"), encoder=encoder(), workers=2, progress=False, resume=True)
    ray = build_job(corpus_3k, index_target(tmp_path / "ray"), encoder=encoder(), engine="ray", workers=2,
                    docs_per_unit=128, progress=False, resume=True)
    assert ray.docs_new == local.docs_new == 3000
    assert (ray.chunks, ray.tokens) == (local.chunks, local.tokens)
    assert index_ids(tmp_path / "ray") == index_ids(tmp_path / "local")
    hits_local, hits_ray = top_hits(tmp_path / "local", QUERIES), top_hits(tmp_path / "ray", QUERIES)
    assert hits_ray == hits_local and all(len(h) == 10 for h in hits_ray)

    # unchanged documents are skipped inside the actors; a changed one is re-encoded and replaced
    write_corpus(corpus_3k, 3000, changed={"d7": "completely new words here"})
    try:
        again = build_job(corpus_3k, index_target(tmp_path / "ray"), encoder=encoder(), engine="ray", workers=2,
                          docs_per_unit=128, progress=False, resume=True)
    finally:
        write_corpus(corpus_3k, 3000)
    assert (again.docs_changed, again.docs_new, again.docs_unchanged) == (1, 0, 2999)


def test_killed_ray_worker_is_restarted_and_the_job_completes(ray_cluster, tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", 600, seed=3)
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    index = tmp_path / "idx"
    killed: list[int] = []

    def kill_one_worker() -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            # the driver loads the encoder too (for its settings): only actor processes are candidates
            pids = sorted(int(p.read_text()) for p in pid_dir.glob("*.pid") if int(p.stem) != os.getpid())
            if pids and committed(index) >= 64:  # mid-job: some segments are already in
                pid = pids[0]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    report = build_job(corpus, index_target(index), encoder=encoder(delay_s=0.01, pid_dir=str(pid_dir)),
                       engine="ray", workers=2, docs_per_unit=16, segment_docs=32, progress=False, resume=True)
    killer.join(timeout=5)
    assert killed, "the job finished before a worker could be killed"
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == psutil.STATUS_ZOMBIE
    assert len(list(pid_dir.glob("*.pid"))) >= 4  # the driver, two actors and the replacement Ray started
    assert report.docs_new == 600
    check_exactly_once(corpus, index)


def test_malformed_records_under_ray_stop_or_are_skipped(ray_cluster, tmp_path):
    from mm.errors import MMError

    corpus = write_corpus(tmp_path / "c.jsonl", 40)
    lines = corpus.read_text().splitlines()
    corpus.write_text("\n".join([*lines[:10], "{not json", *lines[10:]]) + "\n")
    with pytest.raises(MMError, match="invalid JSON"):  # the actor's error, not Ray's wrapper
        build_job(corpus, index_target(tmp_path / "a"), encoder=encoder(), engine="ray", workers=2,
                  progress=False)
    assert not (tmp_path / "a").exists()  # a new build that committed nothing leaves nothing
    report = build_job(corpus, index_target(tmp_path / "b"), encoder=encoder(), engine="ray", workers=2,
                       skip_bad=True, progress=False)
    assert report.docs_new == 40 and report.skipped == 1 and "invalid JSON" in report.skipped_where[0]


def test_two_shards_built_on_ray_merge_to_the_whole_corpus_top_k(ray_cluster, corpus_3k, tmp_path):
    """Scale-out by documents (docs/search-index.md, "Beyond one machine"): each half of the corpus is built
    into its own compressed shard by the Ray engine; both share one codec trained on a sample of the corpus
    (``codec_from``), so per-shard top 10 merged by score equals the top 10 of one index with that codec."""
    from mm.index import open_index
    from mm.index.shards import search_shards

    lines = corpus_3k.read_text().splitlines(keepends=True)
    halves = [tmp_path / "half0.jsonl", tmp_path / "half1.jsonl"]
    halves[0].write_text("".join(lines[:1500]))
    halves[1].write_text("".join(lines[1500:]))
    sample = tmp_path / "sample.jsonl"  # the shared codec: trained once on a sample of the corpus
    sample.write_text("".join(lines[::6]))
    build_job(sample, index_target(tmp_path / "codec"), encoder=encoder(), workers=1, progress=False)
    open_index(tmp_path / "codec").retrain()
    for i, half in enumerate(halves):
        report = build_job(half, index_target(tmp_path / f"shard{i}"), encoder=encoder(), engine="ray", workers=2,
                           docs_per_unit=256, progress=False, codec_from=tmp_path / "codec")
        assert report.docs_new == 1500
    build_job(corpus_3k, index_target(tmp_path / "whole"), encoder=encoder(), workers=2, progress=False,
              codec_from=tmp_path / "codec")
    shards = [open_index(tmp_path / f"shard{i}") for i in range(2)]
    whole = open_index(tmp_path / "whole")
    assert all(ix.info()["trained"] for ix in (*shards, whole))  # compressed everywhere, one codec
    assert sorted(shards[0].ids() + shards[1].ids()) == sorted(whole.ids())
    queries = encoder().load().encode_queries(QUERIES)
    from_shard = [set(), set()]
    every = {"ncandidates": 3000, "nrerank": 3000}  # no shortlist cut: scores are compared, not shortlists
    for q in queries:
        merged = search_shards(shards, q, k=10, **every)
        want = whole.search(q, k=10, **every)
        assert [h.id for h in merged] == [h.id for h in want]
        assert [h.score for h in merged] == pytest.approx([h.score for h in want], rel=1e-5)
        for i, shard in enumerate(shards):
            from_shard[i] |= {h.id for h in merged} & set(shard.ids())
    assert from_shard[0] and from_shard[1]  # the merge really interleaves both shards
