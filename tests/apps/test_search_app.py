"""The search app over a small index built with `mm index build`: ranked results, filters, adding documents."""

from __future__ import annotations

import re
import shutil

import pytest

from tests.apps import ui
from tests.apps.conftest import DOCS


@pytest.fixture(scope="module")
def index_copy(tiny_index, tmp_path_factory):
    """A private copy: this module adds documents, other tests need the original."""
    target = tmp_path_factory.mktemp("index_copy") / "idx"
    shutil.copytree(tiny_index, target)
    return target


@pytest.fixture(scope="module")
def search_server(serve_in_process, index_copy):
    from mm.apps.search import build_search_app

    return serve_in_process(build_search_app(index_copy))


def results(page):
    hits = page.locator("#search-results .mm-hit")
    ids = hits.locator(".mm-hit-id").all_inner_texts()
    scores = [float(re.search(r"[-\d.]+", s).group()) for s in hits.locator(".mm-hit-score").all_inner_texts()]
    return ids, scores


@pytest.mark.browser
def test_query_shows_ranked_results(search_server, index_copy, page, artifacts_dir):
    import mm

    expected = mm.pipeline("search", index=str(index_copy))("the fox jumps over the dog", k=3)
    ui.open_app(page, search_server.url, "#search-query")
    assert f"documents\t{len(DOCS)}" in page.locator("#search-info").inner_text()
    ui.fill(page, "search-query", "the fox jumps over the dog")
    ui.set_number(page, "search-k", 3)
    page.locator("#search-run").click()
    ui.wait_status(page, "search-stats", "ok")
    ids, scores = results(page)
    assert ids == [h.id for h in expected] and len(ids) == 3
    assert scores == sorted(scores, reverse=True)
    assert page.locator("#search-results mark").count() > 0
    ui.screenshot(page, artifacts_dir, "search-results")


@pytest.mark.browser
def test_filters_and_bad_filters(search_server, page):
    ui.open_app(page, search_server.url, "#search-query")
    ui.fill(page, "search-query", "capital city")
    ui.fill(page, "search-filters", "lang=en")
    page.locator("#search-run").click()
    ui.wait_status(page, "search-stats", "ok")
    ids, _ = results(page)
    assert ids and set(ids) <= {d["id"] for d in DOCS if d["lang"] == "en"}
    ui.fill(page, "search-filters", "lang")
    page.locator("#search-run").click()
    assert any("field=value" in t for t in ui.toast_texts(page))


@pytest.mark.browser
def test_add_documents_from_an_uploaded_file(search_server, page, tmp_path):
    upload = tmp_path / "more.jsonl"
    upload.write_text('{"id": "new-doc", "text": "Zebras graze on the savanna grasslands.", "lang": "en"}\n')
    ui.open_app(page, search_server.url, "#search-query")
    page.get_by_role("button", name=re.compile("Add documents")).click()
    ui.upload(page, "search-doc-file", upload)
    page.locator("#search-doc-file").get_by_text("more.jsonl").wait_for()
    page.locator("#search-add").click()
    assert "added 1 document" in ui.wait_status(page, "search-add-status", "ok")
    assert f"documents\t{len(DOCS) + 1}" in page.locator("#search-info").inner_text()
    ui.fill(page, "search-query", "zebras on the savanna")
    page.locator("#search-run").click()
    ui.wait_status(page, "search-stats", "ok")
    ids, _ = results(page)
    assert "new-doc" in ids
