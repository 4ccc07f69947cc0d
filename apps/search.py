"""The search app: index info, a query box (any language), k and metadata filters, ranked hits
with their scores and the matching passage highlighted, and adding documents from a file.

>>> app = build_search_app(None)         # no index: the page explains how to start it with one
>>> type(app).__name__
'Blocks'
>>> parse_filters("lang=en; year=2020")
{'lang': 'en', 'year': 2020}
>>> highlight("Der Hund schläft.", "hund")
'Der <mark>Hund</mark> schläft.'

Start it from the command line with ``mm serve --task search --search-index DIR``.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import time
import unicodedata
from pathlib import Path
from typing import Any

import gradio as gr
from mm.apps.common import (
    AppLimits,
    ModelSlot,
    check_text,
    check_upload,
    fmt_seconds,
    prepare,
    status_html,
    user_errors,
)

from mm.errors import InvalidInputError

log = logging.getLogger(__name__)

MAX_K = 50
#: corpus files `mm index build` reads (see mm.corpus): one document per record, or per .txt / .md file
DOCUMENT_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".txt", ".md")
#: index facts shown on the page, in this order
INFO_FIELDS = ("documents", "kind", "dim", "tokens", "segments", "bytes", "generation")
PASSAGE_WORDS = 60
_WORD = re.compile(r"\w+", re.UNICODE)


class SearchService:
    """The search pipeline of one index; adds documents with the pipeline's own (already loaded) encoder."""

    def __init__(self, index: Any, *, device: str = "auto", dtype: str = "auto") -> None:
        import mm

        self.index_dir = Path(os.fspath(index))
        self.model_id = str(self.index_dir)
        self.pipeline = mm.pipeline("search", index=str(self.index_dir), device=device, dtype=dtype)

    def search(self, query: str, k: int, filters: dict[str, Any] | None) -> list[Any]:
        return list(self.pipeline(query, k=k, filters=filters or None))

    def info(self) -> dict[str, Any]:
        return dict(self.pipeline.index.info())

    def add(self, path: Path) -> tuple[int, int]:
        """Add (or replace) the documents of a corpus file; returns ``(documents, chunks)``."""
        from mm.index import build_job

        report = build_job(path, self.index_dir, encoder=self.pipeline.encoder, resume=True, progress=False)
        return report.docs_seen, report.chunks


def search_slot(index: Any, *, concurrency_limit: int = 1, device: str = "auto", dtype: str = "auto") -> ModelSlot:
    """A slot for an index directory (or a ready :class:`SearchService`-like object), or None."""
    return ModelSlot.of("search", index, lambda path: SearchService(path, device=device, dtype=dtype),
                        concurrency_limit=concurrency_limit,
                        missing_hint="Start the app with --search-index DIR (build one with `mm index build`).")


# -- filters, documents, highlighting ------------------------------------------------------------

def _value(text: str) -> Any:
    text = text.strip()
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | float | bool | str) else text


def parse_filters(text: str | None) -> dict[str, Any]:
    """Metadata filters from ``key=value`` pairs (separated by ``;``, ``,`` or newlines) or a JSON object.

    Values that read as JSON numbers or booleans become those types; everything else is a string.

    >>> parse_filters('{"lang": ["en", "de"]}')
    {'lang': ['en', 'de']}
    >>> parse_filters("")
    {}
    """
    text = (text or "").strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise InvalidInputError(f"the filters are not valid JSON ({exc}); write key=value pairs or a "
                                    'JSON object such as {"lang": "en"}') from exc
        if not isinstance(value, dict) or not all(isinstance(k, str) and k for k in value):
            raise InvalidInputError('the filters must be a JSON object with field names as keys, e.g. {"lang": "en"}')
        return value
    filters: dict[str, Any] = {}
    for part in re.split(r"[;,\n]", text):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InvalidInputError(f"filter {part.strip()!r} is not of the form field=value "
                                    "(e.g. lang=en; year=2020)")
        filters[key.strip()] = _value(value)
    return filters


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def _terms(query: str) -> set[str]:
    return {_fold(t) for t in _WORD.findall(query) if len(t) > 1 or not t.isascii()}


def passage(text: str, query: str, words: int = PASSAGE_WORDS) -> str:
    """The window of about ``words`` words of ``text`` that holds the most query terms.

    >>> passage("a b c d e f target g h", "target", words=3)
    '… f target g …'
    """
    tokens = text.split()
    if len(tokens) <= words:
        return text
    terms = _terms(query)
    hits = [any(t in _fold(tok) for t in terms) for tok in tokens]
    best, best_start, current = -1, 0, 0
    for start in range(len(tokens) - words + 1):
        if start == 0:
            current = sum(hits[:words])
        else:
            current += hits[start + words - 1] - hits[start - 1]
        if current > best:
            best, best_start = current, start
    if best > 0:  # centre the first match of the best window
        first = next(i for i in range(best_start, best_start + words) if hits[i])
        best_start = max(0, min(first - words // 3, len(tokens) - words))
    window = " ".join(tokens[best_start:best_start + words])
    return ("… " if best_start > 0 else "") + window + (" …" if best_start + words < len(tokens) else "")


def highlight(text: str, query: str) -> str:
    """HTML-escaped ``text`` with every query term (case- and width-insensitive) in ``<mark>``."""
    terms = sorted(_terms(query), key=len, reverse=True)
    if not terms:
        return html.escape(text)
    folded = _fold(text)
    if len(folded) != len(text):  # folding changed lengths (e.g. ß -> ss): match on the raw text instead
        folded = text.lower()
    marks = [False] * len(text)
    for term in terms:
        for match in re.finditer(re.escape(term), folded):
            for i in range(match.start(), min(match.end(), len(text))):
                marks[i] = True
    out, i = [], 0
    while i < len(text):
        j = i
        while j < len(text) and marks[j] == marks[i]:
            j += 1
        chunk = html.escape(text[i:j])
        out.append(f"<mark>{chunk}</mark>" if marks[i] else chunk)
        i = j
    return "".join(out)


def _meta_html(metadata: Any) -> str:
    if not metadata:
        return ""
    items = metadata.items() if isinstance(metadata, dict) else [("metadata", metadata)]
    return " · ".join(f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in items)


def results_html(hits: list[Any], query: str) -> str:
    """Ranked hits as HTML cards: rank, score, id, passage with the query terms highlighted, metadata."""
    if not hits:
        return status_html("No documents matched. Try other words, a larger k or fewer filters.", "info")
    cards = []
    for rank, hit in enumerate(hits, 1):
        text = str(getattr(hit, "text", "") or "")
        head = [f'<span class="mm-hit-rank">#{rank}</span>',
                f'<span class="mm-hit-score">score {float(hit.score):.4f}</span>',
                f'<span class="mm-hit-id">{html.escape(str(hit.id))}</span>']
        if getattr(hit, "chunk", None) is not None:
            head.append(f'<span class="mm-hit-chunk">passage {int(hit.chunk) + 1}</span>')
        parts = [f'<div class="mm-hit-head">{"".join(head)}</div>',
                 f'<div class="mm-hit-text">{highlight(passage(text, query), query)}</div>']
        meta = _meta_html(getattr(hit, "metadata", None))
        if meta:
            parts.append(f'<div class="mm-hit-meta">{meta}</div>')
        cards.append(f'<div class="mm-hit" data-rank="{rank}">{"".join(parts)}</div>')
    return f'<div class="mm-results">{"".join(cards)}</div>'


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def info_markdown(slot: ModelSlot) -> str:
    """The index facts as a Markdown table (or nothing when there is no index)."""
    if not slot.load():
        return ""
    try:
        info = slot.pipeline.info()
    except Exception as exc:
        log.exception("reading the index info failed")
        return f"Index info unavailable: {html.escape(str(exc))}"
    rows = ["| index | |", "|---|---|"]
    encoder = info.get("encoder_info") or {}
    if isinstance(encoder, dict) and encoder.get("model"):
        model = Path(str(encoder["model"]))
        shown = f"{model.parent.name}/{model.name}" if model.is_absolute() else str(model)  # no server paths
        rows.append(f"| encoder | {html.escape(shown)} |")
    for key in INFO_FIELDS:
        if key in info:
            value = _human_bytes(float(info[key])) if key == "bytes" else info[key]
            rows.append(f"| {key} | {html.escape(str(value))} |")
    return "\n".join(rows)


def run_search(slot: ModelSlot, limits: AppLimits, query: str, k: Any, filters_text: str) -> tuple[str, str]:
    """``(results html, stats html)`` for one query."""
    query = check_text(query, "query", limits)
    try:
        k = int(k)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"k must be a whole number, got {k!r}") from exc
    if not 1 <= k <= MAX_K:
        raise InvalidInputError(f"k must be between 1 and {MAX_K}, got {k}")
    filters = parse_filters(filters_text)
    service = slot.get()
    t0 = time.perf_counter()
    hits = service.search(query, k, filters)
    elapsed = time.perf_counter() - t0
    shown = f" with filters {json.dumps(filters, ensure_ascii=False)}" if filters else ""
    return results_html(hits, query), status_html(f"{len(hits)} result(s) in {fmt_seconds(elapsed)}{shown}", "ok")


def add_documents(slot: ModelSlot, limits: AppLimits, file: Any) -> tuple[str, str]:
    """Add the documents of an uploaded corpus file; returns ``(status html, refreshed info markdown)``."""
    path = check_upload(file, "document file", DOCUMENT_SUFFIXES, limits)
    service = slot.get()
    t0 = time.perf_counter()
    documents, chunks = service.add(path)
    elapsed = time.perf_counter() - t0
    return status_html(f"added {documents} document(s) ({chunks} passage(s)) from {path.name} in "
                       f"{fmt_seconds(elapsed)}", "ok"), info_markdown(slot)


def render_search(slot: ModelSlot, limits: AppLimits) -> dict[str, Any]:
    """Lay out the search tab inside the current Blocks context; returns its components by name."""
    gr.HTML(slot.status(), elem_id="search-model-status")
    with gr.Accordion("Index", open=True):
        info = gr.Markdown(info_markdown(slot), elem_id="search-info")
    with gr.Row():
        query = gr.Textbox(label="Query (any language)", placeholder="Ask in any language…", scale=4,
                           max_length=limits.max_text_chars, elem_id="search-query")
        go = gr.Button("Search", variant="primary", scale=1, elem_id="search-run")
    with gr.Row():
        k = gr.Slider(1, MAX_K, value=10, step=1, label="Results (k)", elem_id="search-k")
        filters = gr.Textbox(label="Metadata filters", placeholder="lang=en; year=2020   or   {\"lang\": \"en\"}",
                             elem_id="search-filters")
    stats = gr.HTML("", elem_id="search-stats")
    results = gr.HTML("", elem_id="search-results")
    with gr.Accordion("Add documents", open=False):
        gr.Markdown("Upload a corpus file as `mm index build` reads it: `.jsonl`/`.json`/`.csv`/`.tsv`/`.parquet` "
                    "records with an id (`_id` or `id`), a `text` field and any metadata fields, or a `.txt`/`.md` "
                    "file (one document). A document whose id is already in the index is replaced.")
        doc_file = gr.File(label="Documents", file_types=list(DOCUMENT_SUFFIXES), elem_id="search-doc-file")
        add = gr.Button("Add to index", elem_id="search-add")
        add_status = gr.HTML("", elem_id="search-add-status")

    run = user_errors(lambda q, kk, f: run_search(slot, limits, q, kk, f))
    go.click(run, [query, k, filters], [results, stats], api_name="search", **slot.event_options)
    query.submit(run, [query, k, filters], [results, stats], api_visibility="private", **slot.event_options)
    add.click(user_errors(lambda f: add_documents(slot, limits, f)), doc_file, [add_status, info],
              api_name="add_documents", **slot.event_options)
    return {"query": query, "k": k, "filters": filters, "results": results, "stats": stats, "info": info,
            "doc_file": doc_file, "add": add, "add_status": add_status}


def build_search_app(index: Any = None, *, limits: AppLimits | None = None, concurrency_limit: int = 1,
                     device: str = "auto", dtype: str = "auto") -> gr.Blocks:
    """The search app over ``index`` (an mm index directory, a ready service object, or None).

    >>> build_search_app(None).title
    'mm · search'
    """
    limits = limits or AppLimits()
    slot = index if isinstance(index, ModelSlot) else search_slot(index, concurrency_limit=concurrency_limit,
                                                                   device=device, dtype=dtype)
    with gr.Blocks(title="mm · search", analytics_enabled=False) as app:
        gr.Markdown("## Multilingual search (LFM2-ColBERT)\nSearch an mm index in any language, narrow it "
                    "with metadata filters, and add documents.")
        render_search(slot, limits)
    return prepare(app, limits)
