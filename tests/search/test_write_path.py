"""The one write path and the index as its own checkpoint: the data-loss scenarios of issue 12, through the CLI.

Each scenario used to lose or resurrect data when ``build`` and ``add``/``delete`` had separate
bookkeeping; now every writer goes through :mod:`mm.index.writer` and the index's own content
hashes decide what is encoded.
"""

from __future__ import annotations

import json

import pytest
from mm.index import open_index

from tests.search.test_cli import run_cli

DOCS = {"a": "Paris is the capital of France.", "b": "Berlin is the capital of Germany.",
        "c": "Madrid is the capital of Spain."}


def write(path, docs):
    path.write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in docs.items()))
    return path


def cli(capsys, *args):
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    return out


def job(capsys, *args):
    return json.loads(cli(capsys, "index", *args, "--json"))


def texts(index):
    idx = open_index(index)
    return {i: idx.get(i).text for i in idx.ids()}


@pytest.fixture()
def built(tmp_path, capsys):
    corpus = write(tmp_path / "corpus.jsonl", DOCS)
    index = tmp_path / "idx"
    report = job(capsys, "build", corpus, "-i", index, "--model", "minilm")
    assert report["docs_new"] == 3
    return corpus, index


def test_build_delete_resume_gives_the_document_back(built, capsys):
    corpus, index = built
    assert "deleted 1 document(s)" in cli(capsys, "index", "delete", "a", "-i", index)
    assert "a" not in texts(index)
    report = job(capsys, "build", corpus, "-i", index, "--model", "minilm", "--resume")
    assert (report["docs_new"], report["docs_unchanged"]) == (1, 2)
    assert texts(index) == DOCS


def test_add_of_an_edited_document_reencodes_exactly_that_one(built, tmp_path, capsys):
    corpus, index = built
    edited = write(tmp_path / "edited.jsonl", {**DOCS, "b": "Berlin has the Brandenburg Gate."})
    report = job(capsys, "add", edited, "-i", index)
    assert (report["docs_new"], report["docs_changed"], report["docs_unchanged"], report["chunks"]) == (0, 1, 2, 1)
    hits = json.loads(cli(capsys, "search", "Brandenburg Gate", "-i", index, "-k", "3", "--json"))["hits"]
    assert [h["id"] for h in hits].count("b") == 1 and hits[0]["id"] == "b"
    assert hits[0]["text"] == "Berlin has the Brandenburg Gate." and "_src" not in hits[0]["metadata"]
    # the reverse: build --resume on the original source restores the original text (no stale checkpoint)
    report = job(capsys, "build", corpus, "-i", index, "--model", "minilm", "--resume")
    assert (report["docs_changed"], report["docs_unchanged"]) == (1, 2)
    assert texts(index) == DOCS


def test_sync_makes_the_index_equal_the_source(built, tmp_path, capsys):
    _corpus, index = built
    smaller = write(tmp_path / "smaller.jsonl", {"a": DOCS["a"], "c": "Madrid lies on the Manzanares.",
                                                 "d": "Rome is the capital of Italy."})
    out = cli(capsys, "index", "sync", smaller, "-i", index)
    assert "synced: 1 new, 1 changed (2 chunks encoded), 1 unchanged, 1 deleted" in out
    assert texts(index) == {"a": DOCS["a"], "c": "Madrid lies on the Manzanares.",
                            "d": "Rome is the capital of Italy."}
    report = job(capsys, "sync", smaller, "-i", index)
    assert (report["docs_encoded"], report["docs_deleted"], report["docs_unchanged"]) == (0, 0, 3)


def test_app_upload_and_cli_write_the_same_kind_of_index(built, tmp_path, capsys):
    pytest.importorskip("gradio")
    from mm.apps.search import SearchService

    _corpus, index = built
    service = SearchService(index)
    upload = write(tmp_path / "upload.jsonl", {"e": "Lisbon is the capital of Portugal.", "a": DOCS["a"]})
    assert service.add(upload) == (2, 1)  # two documents read, one encoded (a is unchanged)
    assert texts(index) == {**DOCS, "e": "Lisbon is the capital of Portugal."}
    assert service.search("capital of Portugal", 1, None)[0].id == "e"
    # the CLI sees the app's writes as its own: nothing left to do
    report = job(capsys, "add", upload, "-i", index)
    assert (report["docs_encoded"], report["docs_unchanged"]) == (0, 2)
    assert open_index(index).info()["documents"] == 4


def test_add_needs_an_existing_index(tmp_path, capsys):
    corpus = write(tmp_path / "c.jsonl", DOCS)
    code, _, err = run_cli(capsys, "index", "add", corpus, "-i", tmp_path / "missing")
    assert code == 2 and "missing" in err
    assert not (tmp_path / "missing").exists()
