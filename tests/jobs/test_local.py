"""The local engine: single process vs worker processes, idempotence, updates, dry runs."""

from __future__ import annotations

import json

import pytest
from mm.encoders.chunking import ChunkPolicy, chunk_ids
from mm.index.jobs import STATE_DIR, build_job

from mm.corpus import Document
from mm.errors import IndexLockedError, InvalidInputError
from tests.jobs.conftest import QUERIES, encoder, index_ids, index_meta, index_target, top_hits, write_corpus


def expected_ids(corpus, max_tokens=48):
    from mm.index.jobs.source import FileSource

    from mm.testing.hash_encoder import HashEncoder

    enc = HashEncoder(dim=16, max_tokens=max_tokens)
    policy = ChunkPolicy().resolve(enc)  # build_job's default window and overlap
    return sorted(cid for d in FileSource(corpus) for cid in chunk_ids(d.id, len(policy.split(d.text, enc))))


def test_single_process_and_worker_processes_build_the_same_index(tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", 400)
    one = build_job(corpus, index_target(tmp_path / "one"), encoder=encoder(), workers=1, progress=False,
                    segment_docs=100)
    two = build_job(corpus, index_target(tmp_path / "two"), encoder=encoder(), workers=2, progress=False,
                    docs_per_unit=16)
    assert one.docs_new == two.docs_new == 400
    assert one.chunks == two.chunks > 400  # some documents are split
    assert one.tokens == two.tokens > 0
    assert one.segments == 4
    assert index_ids(tmp_path / "one") == index_ids(tmp_path / "two") == expected_ids(corpus)
    assert top_hits(tmp_path / "one", QUERIES) == top_hits(tmp_path / "two", QUERIES)
    assert one.index_docs == 400 and one.index_chunks == one.chunks and one.index_bytes > 0


def test_rerun_is_a_no_op_and_changes_are_replaced(tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", 120)
    first = build_job(corpus, index_target(tmp_path / "i"), encoder=encoder(), workers=1, progress=False, resume=True)
    before = index_meta(tmp_path / "i")
    stamp = sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "i").rglob("*"))
    with pytest.raises(InvalidInputError, match=r"not empty .*; pass resume=True"):  # a new build never touches it
        build_job(corpus, index_target(tmp_path / "i"), encoder=encoder(), workers=1, progress=False)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "i").rglob("*")) == stamp
    again = build_job(corpus, index_target(tmp_path / "i"), encoder=encoder(), workers=1, progress=False, resume=True)
    assert (again.docs_encoded, again.docs_unchanged, again.chunks, again.segments) == (0, 120, 0, 0)
    assert index_meta(tmp_path / "i") == before

    long_id = next(k.split("#")[0] for k in sorted(before) if k.endswith("#2") and k != "d0#2")  # >= 3 chunks
    write_corpus(corpus, 120, changed={long_id: "now a short text", "d0": "d0 has new words"})
    third = build_job(corpus, index_target(tmp_path / "i"), encoder=encoder(), workers=1, progress=False, resume=True)
    assert (third.docs_changed, third.docs_new, third.docs_unchanged) == (2, 0, 118)
    meta = index_meta(tmp_path / "i")
    assert long_id in meta and not any(k.startswith(f"{long_id}#") for k in meta)  # stale chunks removed
    assert index_ids(tmp_path / "i") == expected_ids(corpus)
    assert first.index_docs == third.index_docs == 120


def test_prune_deletes_documents_gone_from_the_source(tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", 50)
    build_job(corpus, index_target(tmp_path / "i"), encoder=encoder(), workers=1, progress=False, resume=True)
    lines = corpus.read_text().splitlines()
    corpus.write_text("\n".join(lines[:40]) + "\n")
    kept = build_job(corpus, index_target(tmp_path / "i"), encoder=encoder(), workers=1, progress=False, resume=True)
    assert kept.docs_deleted == 0 and kept.index_docs == 50  # without prune nothing is deleted
    dry = build_job(corpus, tmp_path / "i", encoder=encoder(), prune=True, dry_run=True, progress=False)
    assert dry.docs_deleted == 10 and dry.docs_unchanged == 40
    pruned = build_job(corpus, index_target(tmp_path / "i"), encoder=encoder(), prune=True, workers=1,
                       progress=False, resume=True)
    assert pruned.docs_deleted == 10 and pruned.index_docs == 40
    assert index_ids(tmp_path / "i") == expected_ids(corpus)


def test_dry_run_reports_without_writing(tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", 60)
    dry = build_job(corpus, tmp_path / "i", encoder=encoder(), dry_run=True, progress=False)
    assert dry.dry_run and (dry.docs_new, dry.docs_changed, dry.docs_unchanged) == (60, 0, 0)
    assert dry.chunks == len(expected_ids(corpus))
    assert not (tmp_path / "i").exists()
    real = build_job(corpus, index_target(tmp_path / "i"), encoder=encoder(), workers=1, progress=False, resume=True)
    assert (real.chunks, real.tokens) == (dry.chunks, dry.tokens)
    write_corpus(corpus, 61, changed={"d3": "different"})
    dry2 = build_job(corpus, tmp_path / "i", encoder=encoder(), dry_run=True, progress=False)
    assert (dry2.docs_new, dry2.docs_changed, dry2.docs_unchanged) == (1, 1, 59)


def test_python_iterables_are_sources(tmp_path):
    docs = [Document(f"x{i}", f"text number {i}", metadata={"lang": "en"}) for i in range(10)]
    report = build_job(docs, index_target(tmp_path / "i"), encoder=encoder(), workers=1, progress=False, resume=True)
    assert report.docs_new == 10
    meta = index_meta(tmp_path / "i")["x3"]
    assert meta["lang"] == "en" and set(meta) == {"lang", "_src"}


def test_duplicate_ids_and_other_encoders_are_rejected(tmp_path):
    docs = [Document("a", "one"), Document("b", "two"), Document("a", "three")]
    with pytest.raises(InvalidInputError, match="'a' occurs more than once"):
        build_job(docs, index_target(tmp_path / "i"), encoder=encoder(), workers=1, progress=False, resume=True)
    corpus = write_corpus(tmp_path / "c.jsonl", 5)
    build_job(corpus, index_target(tmp_path / "j"), encoder=encoder(), workers=1, progress=False, resume=True)
    with pytest.raises(InvalidInputError, match="different encoder/chunking"):
        build_job(corpus, index_target(tmp_path / "j"), encoder=encoder(), max_tokens=20, workers=1,
                  progress=False, resume=True)


def test_a_second_job_on_the_same_index_is_refused(tmp_path):
    from filelock import FileLock

    corpus = write_corpus(tmp_path / "c.jsonl", 5)
    build_job(corpus, index_target(tmp_path / "i"), encoder=encoder(), workers=1, progress=False, resume=True)
    with FileLock(str(tmp_path / "i" / STATE_DIR / "job.lock")), pytest.raises(IndexLockedError):
        build_job(corpus, index_target(tmp_path / "i"), encoder=encoder(), workers=1, progress=False, resume=True)


def test_report_is_json_serialisable(tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", 5)
    report = build_job(corpus, index_target(tmp_path / "i"), encoder=encoder(), workers=1, progress=False, resume=True)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["docs_encoded"] == 5 and data["docs_per_s"] > 0 and data["engine"] == "local"


def test_long_docs_truncate_gives_one_entry_per_document(tmp_path, caplog):
    corpus = write_corpus(tmp_path / "c.jsonl", 30)
    report = build_job(corpus, index_target(tmp_path / "i"), encoder=encoder(), workers=1, progress=False,
                       long_docs="truncate")
    assert report.chunks == 30 and index_ids(tmp_path / "i") == sorted(f"d{i}" for i in range(30))
    assert report.docs_truncated > 0 and f"{report.docs_truncated} of 30 documents are longer" in caplog.text
    with pytest.raises(InvalidInputError, match="long_docs"):
        build_job(corpus, tmp_path / "j", encoder=encoder(), long_docs="drop", progress=False)


def test_codec_from_shares_a_trained_codec_and_refuses_what_it_fixes(tmp_path):
    from mm.index import open_index

    corpus = write_corpus(tmp_path / "c.jsonl", 60)
    build_job(corpus, index_target(tmp_path / "a"), encoder=encoder(), workers=1, progress=False)
    with pytest.raises(InvalidInputError, match="no trained codec yet"):
        build_job(corpus, index_target(tmp_path / "b"), encoder=encoder(), workers=1, progress=False,
                  codec_from=tmp_path / "a")
    open_index(tmp_path / "a").retrain()
    build_job(corpus, index_target(tmp_path / "b"), encoder=encoder(), workers=1, progress=False,
              codec_from=tmp_path / "a")
    shard = open_index(tmp_path / "b")
    assert shard.info()["trained"] and shard.config["codec_from"] == str((tmp_path / "a").resolve())
    with pytest.raises(InvalidInputError, match="only apply when a new index is created"):
        build_job(corpus, index_target(tmp_path / "b"), encoder=encoder(), workers=1, progress=False, resume=True,
                  nbits=4)
    with pytest.raises(InvalidInputError, match="different encoder/chunking settings"):
        build_job(corpus, index_target(tmp_path / "c"), encoder=encoder(max_tokens=32), workers=1, progress=False,
                  codec_from=tmp_path / "a")
    with pytest.raises(InvalidInputError, match="only apply to multi-vector"):
        build_job(corpus, index_target(tmp_path / "d"), encoder=encoder(kind="dense"), workers=1, progress=False,
                  codec_from=tmp_path / "a")
