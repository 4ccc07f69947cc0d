"""End-to-end CLI: mm index build/add/delete/info/compact and mm search (text, JSON, TREC run)."""

from __future__ import annotations

import json
import shutil

import pytest

from mm.cli import main


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "2000")  # rich wraps error lines at the terminal width


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``mm ARGS`` in-process; returns (exit code, stdout, stderr with line wraps undone)."""
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err.replace("\n", " ") if code == 2 else out.err


@pytest.fixture(scope="module")
def built(small_corpus, tmp_path_factory):
    """A MiniLM index built through `mm index build`, copied per test that writes to it."""
    path = tmp_path_factory.mktemp("cli") / "index"
    main(["index", "build", str(small_corpus), "--index", str(path), "--model", "minilm", "--json"])
    return path


@pytest.fixture()
def writable(built, tmp_path):
    target = tmp_path / "index"
    shutil.copytree(built, target)
    return target


def test_build_info_and_search(built, capsys):
    code, out, _ = run_cli(capsys, "index", "info", "--index", built, "--json")
    info = json.loads(out)
    assert code == 0 and info["kind"] == "dense" and info["encoder_info"]["model_name"] == "minilm"
    assert info["documents"] > 5  # the long document became several chunks
    code, out, _ = run_cli(capsys, "search", "--index", built, "Where is the Eiffel Tower?", "-k", "2", "--json")
    hits = json.loads(out)["hits"]
    assert code == 0 and len(hits) == 2 and hits[0]["id"] == "eiffel"
    assert hits[0]["metadata"]["lang"] == "en" and hits[0]["score"] >= hits[1]["score"]
    code, out, _ = run_cli(capsys, "search", "--index", built, "Eiffel Tower", "-k", "1")
    assert code == 0 and "eiffel" in out and "1889" in out


def test_long_document_is_chunked_and_mapped_back(built, capsys):
    code, out, _ = run_cli(capsys, "search", "--index", built, "zirconium keyword", "-k", "5", "--json")
    assert code == 0
    hits = json.loads(out)["hits"]
    ids = [h["id"] for h in hits]
    assert ids.count("long") == 1  # several chunks, one hit per document
    long_hit = next(h for h in hits if h["id"] == "long")
    assert long_hit["chunk"] >= 1 and "zirconium" in long_hit["text"]
    assert "_doc" not in long_hit["metadata"]


def test_filters_and_errors(built, capsys):
    code, out, _ = run_cli(capsys, "search", "--index", built, "food from Spain", "--filter", "lang=de", "--json")
    assert code == 0 and [h["id"] for h in json.loads(out)["hits"]] == ["rhein"]
    for args, message in [(("",), "empty"), (("hello", "-k", "0"), "positive"),
                          (("hello", "--filter", "novalue"), "KEY=VALUE"), ((), "either a QUERY")]:
        code, _, err = run_cli(capsys, "search", "--index", built, *args)
        assert code == 2 and message in err, (args, err)


def test_trec_run(built, tmp_path, capsys):
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"_id": "q1", "text": "Eiffel Tower"}\n{"_id": "q2", "text": "plants and light"}\n')
    run = tmp_path / "out" / "run.tsv"
    code, _, err = run_cli(capsys, "search", "--index", built, "--queries", queries, "--run", run, "-k", "3",
                           "--tag", "test")
    assert code == 0 and "wrote 6 lines" in err
    rows = [line.split() for line in run.read_text().splitlines()]
    assert len(rows) == 6 and all(len(r) == 6 and r[1] == "Q0" and r[5] == "test" for r in rows)
    assert [r[3] for r in rows[:3]] == ["1", "2", "3"]
    assert rows[0][:3] == ["q1", "Q0", "eiffel"] and rows[3][2] == "photo"
    assert float(rows[0][4]) >= float(rows[1][4]) >= float(rows[2][4])


def test_add_replace_delete_compact(writable, tmp_path, capsys):
    extra = tmp_path / "extra.jsonl"
    extra.write_text('{"_id": "sushi", "text": "Sushi is a Japanese dish of rice and fish.", "lang": "ja"}\n'
                     '{"_id": "eiffel", "text": "La tour Eiffel mesure 330 mètres.", "lang": "fr"}\n')
    code, out, _ = run_cli(capsys, "index", "add", extra, "--index", writable)
    assert code == 0 and "added: 1 new, 1 changed (2 chunks encoded), 0 unchanged" in out
    code, out, _ = run_cli(capsys, "search", "--index", writable, "Japanese rice and fish", "-k", "1", "--json")
    assert json.loads(out)["hits"][0]["id"] == "sushi"
    code, out, _ = run_cli(capsys, "search", "--index", writable, "tour Eiffel", "-k", "6", "--json")
    eiffel = [h for h in json.loads(out)["hits"] if h["id"] == "eiffel"]
    assert len(eiffel) == 1 and eiffel[0]["metadata"]["lang"] == "fr"  # replaced, not duplicated
    before = json.loads(run_cli(capsys, "index", "info", "--index", writable, "--json")[1])["documents"]
    code, out, err = run_cli(capsys, "index", "delete", "long", "sushi", "nothere", "--index", writable)
    assert code == 0 and "deleted 2 document(s)" in out and "nothere" in err
    after = json.loads(run_cli(capsys, "index", "info", "--index", writable, "--json")[1])["documents"]
    assert after < before - 2  # every chunk of "long" went too
    code, out, _ = run_cli(capsys, "search", "--index", writable, "volcano lava", "-k", "10", "--json")
    assert "long" not in [h["id"] for h in json.loads(out)["hits"]]
    code, out, _ = run_cli(capsys, "index", "compact", "--index", writable)
    assert code == 0 and "segments_after=1" in out


def test_bad_corpus_stops_build_and_skip_bad_counts(tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "a", "text": "Alpha"}\n{"_id": "a", "text": "dup"}\n{oops\n{"_id": "b", "text": "B"}\n')
    target = tmp_path / "index"
    code, _, err = run_cli(capsys, "index", "build", corpus, "--index", target, "--model", "minilm")
    assert code == 2 and "corpus.jsonl:2" in err and "duplicate id" in err
    assert not target.exists() and not list(tmp_path.glob(".index.building-*"))
    code, out, err = run_cli(capsys, "index", "build", corpus, "--index", target, "--model", "minilm", "--skip-bad")
    assert code == 0 and "indexed 2 documents" in out and "2 malformed record(s) skipped" in out
    assert "corpus.jsonl:2" in err and "corpus.jsonl:3" in err


def test_build_never_touches_an_existing_index(built, small_corpus, capsys):
    stamp = sorted((p.name, p.stat().st_mtime_ns) for p in built.iterdir())
    code, _, err = run_cli(capsys, "index", "build", small_corpus, "--index", built, "--model", "minilm")
    assert code == 2 and "not empty" in err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in built.iterdir()) == stamp


def test_not_an_index(tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    code, _, err = run_cli(capsys, "search", "--index", tmp_path / "folder", "hello")
    assert code == 2 and "error" in err
    code, _, err = run_cli(capsys, "index", "info", "--index", tmp_path / "missing")
    assert code == 2


def test_folder_source_with_colbert(tiny_colbert, tmp_path, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "rhine.txt").write_text("The Rhine flows through Basel and Cologne.")
    (docs / "notes.md").write_text("# Notes\nPhotosynthesis converts light into chemical energy.")
    target = tmp_path / "index"
    code, out, _ = run_cli(capsys, "index", "build", docs, "--index", target, "--model", tiny_colbert, "--nbits", "4")
    assert code == 0 and "indexed 2 documents" in out
    info = json.loads(run_cli(capsys, "index", "info", "--index", target, "--json")[1])
    assert info["kind"] == "multivector" and info["dim"] == 128 and info["encoder_info"]["family"] == "colbert"
    code, out, _ = run_cli(capsys, "search", "--index", target, "Rhine Basel", "-k", "2", "--json")
    hits = json.loads(out)["hits"]
    assert code == 0 and {h["id"] for h in hits} == {"rhine.txt", "notes.md"}


def test_ids_that_look_like_chunks_are_their_own_documents(tmp_path, capsys):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "abc", "text": "first"}\n{"_id": "abc#1", "text": "second"}\n')
    target = tmp_path / "index"
    assert run_cli(capsys, "index", "build", corpus, "--index", target, "--model", "minilm")[0] == 0
    code, out, _ = run_cli(capsys, "index", "delete", "abc", "--index", target)
    assert code == 0 and "deleted 1 document(s) (1 stored entries)" in out
    hits = json.loads(run_cli(capsys, "search", "--index", target, "second", "--json")[1])["hits"]
    assert [h["id"] for h in hits] == ["abc#1"]


def test_truncate_policy_is_explicit_logged_and_remembered(small_corpus, tmp_path, capsys, caplog):
    target = tmp_path / "index"
    code, out, _ = run_cli(capsys, "index", "build", small_corpus, "--index", target, "--model", "minilm",
                           "--long-docs", "truncate")
    assert code == 0 and "indexed 5 documents (5 chunks)" in out
    assert "1 of 5 documents are longer" in caplog.text
    info = json.loads(run_cli(capsys, "index", "info", "--index", target, "--json")[1])
    assert info["documents"] == 5 and info["encoder_info"]["long_docs"] == "truncate"
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"_id": "long2", "text": "lava " * 400}) + "\n")
    code, out, _ = run_cli(capsys, "index", "add", extra, "--index", target)
    assert code == 0 and "added: 1 new, 0 changed (1 chunks encoded)" in out
    code, _, err = run_cli(capsys, "index", "build", small_corpus, "--index", tmp_path / "x", "--long-docs", "drop")
    assert code == 2 and "long_docs must be one of" in err
