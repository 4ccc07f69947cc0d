"""Entries layout (format 2): open maps ids and metadata without reading them whole; lookups, filters, upgrade."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
from mm.index import base as index_base
from mm.index import create_index, open_index, upgrade_index, validate
from mm.index import dense as index_dense
from mm.index.entries import MERGE_LOOKUP_ABOVE
from mm.index.storage import MANIFEST

from mm.errors import IndexDamagedError, IndexFormatError


def _meta(i: int) -> dict:
    if i % 5 == 0:  # a chunk of a long document, as the writer stores it
        return {"lang": "en", "_src": f"h{i // 5}", "_doc": f"doc{i // 5}", "_chunk": 0}
    return {"lang": ["en", "de", "fr"][i % 3], "tags": ["a", "b"] if i % 2 else ["c"]}


def _id(i: int) -> str:
    return f"doc{i // 5}#0" if i % 5 == 0 else f"e{i}"


def _dense(path, n: int, per_add: int | None = None):
    index = create_index(path, kind="dense", dim=4, encoder_info={})
    rng = np.random.default_rng(0)
    per_add = per_add or n
    for start in range(0, n, per_add):
        rows = range(start, min(n, start + per_add))
        index.add([_id(i) for i in rows], rng.standard_normal((len(rows), 4)).astype(np.float32),
                  texts=[f"text {i}" for i in rows], metadata=[_meta(i) for i in rows])
    return index


def _open_peak(path) -> int:
    tracemalloc.start()
    try:
        index = open_index(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(index) > 0
    return peak


def test_open_does_not_read_the_entries_whole(tmp_path, monkeypatch):
    """The tracemalloc peak of open_index is the same for 2,000 and 40,000 entries (format 1 parsed them all)."""
    monkeypatch.setattr(validate, "PIECE", 512)  # the checks at open read bounded pieces (2**20 by default)
    monkeypatch.setattr(validate, "PIECE_BYTES", 4096)
    peaks = {}
    for n in (2_000, 40_000):
        _dense(tmp_path / f"i{n}", n)
        _open_peak(tmp_path / f"i{n}")  # warm imports and caches
        peaks[n] = _open_peak(tmp_path / f"i{n}")
    per_entry = (peaks[40_000] - peaks[2_000]) / 38_000
    assert per_entry < 0.5, peaks  # format 1: ~550 bytes per entry at open (JSON), ~100 after parsing


def test_lookups_across_segments_and_replacements(tmp_path, monkeypatch):
    monkeypatch.setattr(index_dense, "MERGE_FANOUT", 1000)  # keep every add's segment
    index = _dense(tmp_path / "ix", 300, per_add=20)  # 15 segments: the merged lookup
    few = _dense(tmp_path / "few", 300, per_add=100)  # 3 segments: per-segment binary search
    assert len(index._segments) > MERGE_LOOKUP_ABOVE >= len(few._segments)
    for ix in (index, few):
        ix.add(["e7", "new"], np.ones((2, 4), np.float32), texts=["replaced", "fresh"], metadata=[{"v": 2}, {}])
        ix.delete(["e8"])
        again = open_index(ix.path)
        assert len(again) == 300 and "e8" not in again and "new" in again and "zzz" not in again
        assert again.get("e7").text == "replaced" and again.get("e7").metadata == {"v": 2}
        assert again.get("doc3#0").metadata == _meta(15)
        assert sorted(again.ids()) == sorted({_id(i) for i in range(300)} - {"e8"} | {"new"})
        assert again.document_state("doc3") == ("h3", 1) and again.document_state("e9") == ("", 1)
        assert again.documents_not_in({"doc0", "e1"})[:2] == ["e2", "e3"]


@pytest.mark.parametrize("filters", [{"lang": "de"}, {"tags": "a"}, {"lang": {"$ne": "en"}},
                                     {"_doc": "doc2"}, {"_chunk": {"$exists": False}}, {"lang": ["fr", "en"]}])
def test_filtered_search_matches_every_row_and_parses_each_distinct_value_once(tmp_path, monkeypatch, filters):
    index = _dense(tmp_path / "ix", 3_000, per_add=1_000)
    calls = []
    real = index_base.matches
    monkeypatch.setattr(index_base, "matches", lambda meta, f: calls.append(1) or real(meta, f))
    hits = index.search(np.ones(4, np.float32), k=3_000, filters=filters)
    expected = {_id(i) for i in range(3_000) if real({**_meta(i)}, filters)}
    assert {h.id for h in hits} == expected and expected
    reserved = any(k.startswith("_") for k in filters)
    # 7 distinct stored JSON values per segment (6 lang x tags, the chunks' {"lang": "en"}); reserved keys per row
    assert len(calls) == (3_000 if reserved else 3 * 7), len(calls)
    index.search(np.ones(4, np.float32), k=5, filters=filters)
    assert len(calls) == (3_000 if reserved else 3 * 7)  # cached per filter


def _to_format_2(path) -> None:
    """Rewrite an index as mm wrote it before (texts as plain UTF-8, format version 2)."""
    index = open_index(path)
    manifest = json.loads((path / MANIFEST).read_text())
    for entry, seg in zip(manifest["segments"], index._segments, strict=True):
        plain = [seg.text(r).encode("utf-8") for r in range(seg.n_docs)]
        np.save(path / entry["files"]["text"], np.frombuffer(b"".join(plain), dtype=np.uint8))
        np.save(path / entry["files"]["text_off"], np.cumsum([0] + [len(b) for b in plain]).astype(np.int64))
    manifest["format_version"] = 2
    (path / MANIFEST).write_text(json.dumps(manifest))


def _to_format_1(path) -> None:
    """Rewrite an index as mm wrote it before (ids and metadata in .docs.json, plain texts, format version 1)."""
    index = open_index(path)
    _to_format_2(path)
    manifest = json.loads((path / MANIFEST).read_text())
    for entry, seg in zip(manifest["segments"], index._segments, strict=True):
        docs = {"ids": list(seg.ids), "metadata": list(seg.metadata)}
        name = f"{entry['name']}.docs.json"
        (path / name).write_text(json.dumps(docs))
        (path / entry["files"].pop("entries")).unlink()
        entry["files"]["docs"] = name
    manifest["format_version"] = 1
    (path / MANIFEST).write_text(json.dumps(manifest))


def test_format_1_is_refused_then_upgraded_in_place(tmp_path, capsys, monkeypatch):
    from mm.cli import main

    monkeypatch.setattr(index_dense, "MERGE_FANOUT", 1000)  # four segments to convert

    path = tmp_path / "ix"
    before = _dense(path, 200, per_add=50)
    before.delete(["e1"])
    state = {i: (before.get(i).text, before.get(i).metadata) for i in before.ids()}
    hits = [h.id for h in before.search(np.ones(4, np.float32), k=10, filters={"lang": "de"})]
    _to_format_1(path)
    with pytest.raises(IndexFormatError, match="mm index upgrade"):
        open_index(path)
    try:
        main(["index", "upgrade", "--index", str(path)])
    except SystemExit as exc:
        assert not exc.code
    assert "format 1 -> 3: 4 segment(s) converted" in capsys.readouterr().out
    after = open_index(path)
    assert {i: (after.get(i).text, after.get(i).metadata) for i in after.ids()} == state
    assert [h.id for h in after.search(np.ones(4, np.float32), k=10, filters={"lang": "de"})] == hits
    assert not list(path.glob("*.docs.json")) and upgrade_index(path)["segments"] == 0


def test_format_2_texts_are_packed_by_the_upgrade(tmp_path):
    path = tmp_path / "ix"
    index = _dense(path, 120, per_add=40)
    index.add(["u1", "u2"], np.ones((2, 4), np.float32), texts=["", "héllo wörld " * 40], metadata=[{}, {}])
    state = {i: index.get(i).text for i in index.ids()}
    packed = sum(f.stat().st_size for f in path.glob("seg-*.text.npy"))
    _to_format_2(path)
    plain = sum(f.stat().st_size for f in path.glob("seg-*.text.npy"))
    with pytest.raises(IndexFormatError, match="mm index upgrade"):
        open_index(path)
    assert upgrade_index(path) == {"from": 2, "to": 3, "segments": len(index._manifest["segments"])}
    after = open_index(path)
    assert {i: after.get(i).text for i in after.ids()} == state
    now = sum(f.stat().st_size for f in path.glob("seg-*.text.npy"))  # the old files are gone
    assert now == packed < plain  # the repeated text deflates to a fraction


def test_damaged_packed_text_is_reported(tmp_path):
    path = tmp_path / "ix"
    _dense(path, 30)
    file = next(path.glob("seg-*.text.npy"))
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF  # the last document's deflate stream
    file.write_bytes(bytes(data))
    with pytest.raises(IndexDamagedError, match=r"text\.npy holds a damaged text at row 29"):
        validate.validate_index(path, deep_bytes=None)
    with pytest.raises(IndexDamagedError, match="damaged"):
        open_index(path).get(_id(29)).text  # noqa: B018  (reading it is the test)


@pytest.mark.parametrize("damage", ["magic", "truncate", "unsorted"])
def test_damaged_entries_file_is_refused(tmp_path, damage):
    path = tmp_path / "ix"
    _dense(path, 50)
    file = next(path.glob("*.entries.npy"))
    data = bytearray(file.read_bytes())
    start = len(data) - int(np.load(file, mmap_mode="r").shape[0])  # the .npy header's size
    if damage == "magic":
        data[start] ^= 0xFF
    elif damage == "truncate":
        data = data[:-3]
    else:  # swap the first two sorted id hashes
        a, b = start + 64, start + 72
        data[a:b], data[b:b + 8] = data[b:b + 8], data[a:b]
    file.write_bytes(bytes(data))
    with pytest.raises(IndexDamagedError, match=r"entries\.npy"):
        open_index(path)


def test_dense_segments_merge_by_tier_keeping_every_entry(tmp_path, monkeypatch):
    """Many small commits (the writer's batches) leave O(log n) segments: entries, texts, vectors, filters kept."""
    monkeypatch.setattr(index_dense, "MERGE_BASE", 16)
    index = _dense(tmp_path / "ix", 1_000, per_add=10)
    index.delete(["e1", "e2"])
    index.add(["e3"], np.zeros((1, 4), np.float32), texts=["again"], metadata=[{"lang": "xx"}])
    assert len(index._segments) <= 12, len(index._segments)  # 101 commits
    again = open_index(index.path)
    assert len(again) == 998 and sorted(again.ids()) == sorted({_id(i) for i in range(1_000)} - {"e1", "e2"})
    assert again.get("e3").text == "again" and again.get("e3").metadata == {"lang": "xx"}
    assert again.get("doc9#0").text == "text 45" and again.get("doc9#0").metadata == _meta(45)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((1_000, 4)).astype(np.float32)  # what _dense added, in order
    vectors[3] = 0  # e3 was replaced by a zero vector
    scores = vectors @ vectors[500]
    scores[[1, 2]] = -np.inf
    hits = again.search(vectors[500], k=5)
    assert [h.id for h in hits] == [_id(i) for i in np.argsort(-scores)[:5]]
    assert np.allclose([h.score for h in hits], np.sort(scores)[::-1][:5], atol=1e-4)
    de = {h.id for h in again.search(np.ones(4, np.float32), k=1_000, filters={"lang": "de"})}
    assert de == {_id(i) for i in range(1_000) if _meta(i)["lang"] == "de"} - {"e1", "e2"}
    assert again.document_count() == 998 and again.document_state("doc9") == ("h9", 1)
