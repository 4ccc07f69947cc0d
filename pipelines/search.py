"""``mm.pipeline("search", index=DIR)``: queries in any language against an mm index.

The pipeline reloads the encoder that built the index (recorded in the index), encodes the
queries (a batch is encoded together) and searches. A hit carries the document id, the score,
the text of the best-matching passage and the document's metadata; chunks of a long document
are merged back into one hit per document.

>>> import tempfile, pathlib, mm
>>> from mm.index import build_job
>>> src = pathlib.Path(tempfile.mkdtemp()) / "c.jsonl"
>>> _ = src.write_text('{"_id": "fr", "text": "La tour Eiffel est à Paris.", "lang": "fr"}\\n'
...                    '{"_id": "de", "text": "Der Kölner Dom steht in Köln.", "lang": "de"}\\n')
>>> path = pathlib.Path(tempfile.mkdtemp()) / "idx"
>>> _ = build_job(src, path, encoder="minilm", progress=False)
>>> search = mm.pipeline("search", index=path)
>>> hits = search("Eiffel Tower", k=1)
>>> hits[0].id, sorted(hits.timings)
('fr', ['encode_s', 'search_s'])
>>> [h.id for h in search("cathedral", k=2, filters={"lang": "de"})]
['de']
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from mm import options as opts
from mm.base import Pipeline
from mm.errors import InvalidInputError, UnsupportedOptionError
from mm.results import SearchResults

log = logging.getLogger(__name__)


@dataclass
class SearchHit:
    """One result: a document, its score and the passage that matched."""

    id: str
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    chunk: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "score": self.score, "text": self.text, "metadata": self.metadata}
        if self.chunk is not None:
            out["chunk"] = self.chunk
        return out


class SearchPipeline(Pipeline):
    """Search an mm index with the encoder that built it.

    Init options: ``index`` (the index folder, required), ``threads``, ``batch_size`` (queries
    encoded together). ``model`` overrides the encoder recorded in the index (same kind and
    dimension required), e.g. when the checkpoint moved.

    Call options: ``k`` (hits per query), ``filters`` (metadata filter, see
    :mod:`mm.index.filters`), ``exact`` (exhaustive scoring), ``hybrid`` (fuse BM25 on the query
    text), ``alpha`` and ``fusion`` (hybrid weighting), ``nprobe`` and ``ncandidates``
    (multi-vector candidate generation).
    """

    task = "search"
    init_options = {"index": None, "threads": None, "batch_size": 32}
    call_options = (
        opts.Option("k", 10, "forward", opts.positive_int, "hits per query"),
        opts.Option("filters", None, "forward", None, "metadata filter (see mm.index.filters)"),
        opts.Option("exact", False, "forward", opts.boolean, "exhaustive scoring instead of candidates"),
        opts.Option("hybrid", False, "forward", opts.boolean, "fuse BM25 on the query text"),
        opts.Option("alpha", 0.5, "forward", opts.fraction, "hybrid weight of the dense score"),
        opts.Option("fusion", "rrf", "forward", None, "hybrid fusion method"),
        opts.Option("nprobe", None, "forward", opts.optional(opts.positive_int), "multi-vector: centroids probed"),
        opts.Option("ncandidates", None, "forward", opts.optional(opts.positive_int),
                    "multi-vector: candidates scored exactly"),
    )

    def setup(self, index=None, threads=None, batch_size=32) -> None:
        from mm.encoders.loader import load_encoder, load_encoder_for_index
        from mm.index import open_index
        from mm.index.writer import check_encoder_matches

        if index is None:
            raise InvalidInputError("the search pipeline needs an index: mm.pipeline('search', index='path/to/index')"
                                    "; build one with `mm index build CORPUS --index DIR`")
        if self.dtype not in ("auto", "float32"):
            raise UnsupportedOptionError(f"the search pipeline runs its encoder in float32; dtype={self.dtype!r} "
                                         f"is not supported")
        if self.device not in ("auto", "cpu"):
            raise UnsupportedOptionError(f"the search pipeline runs on the CPU; device={self.device!r} is not "
                                         f"supported")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self.index = open_index(index)
        info = self.index.encoder_info
        if self.model_id is not None:
            kind = "multivector" if info.get("family") == "sentence-transformers-tokens" else "auto"
            self.encoder = load_encoder(self.model_id, kind=kind, threads=threads)
        else:
            self.encoder = load_encoder_for_index(info, threads=threads)
        check_encoder_matches(self.index, self.encoder)

    def is_batch(self, inputs: Any) -> bool:
        return isinstance(inputs, list | tuple)

    def preprocess(self, item: Any, **options: Any) -> str:
        if not isinstance(item, str):
            raise InvalidInputError(f"a query must be a string, got {type(item).__name__}")
        if not item.strip():
            raise InvalidInputError("the query is empty; pass some text to search for")
        return item

    def resolve_call_options(self, options: dict[str, Any]) -> dict[str, Any]:
        resolved = super().resolve_call_options(options)
        extra = {name: resolved[name] for name in ("nprobe", "ncandidates") if resolved[name] is not None}
        if extra and self.index.kind != "multivector":
            raise UnsupportedOptionError(f"{', '.join(extra)} only apply to multi-vector indexes; this index is "
                                         f"{self.index.kind}")
        if not resolved["hybrid"] and (options.get("alpha") is not None or options.get("fusion") is not None):
            raise UnsupportedOptionError("alpha and fusion only apply with hybrid=True")
        return resolved

    def _forward(self, batch: list[str], k=10, filters=None, exact=False, hybrid=False, alpha=0.5, fusion="rrf",
                 nprobe=None, ncandidates=None) -> list[SearchResults]:
        import time

        t0 = time.perf_counter()
        self._warn_truncation(batch)
        vectors = self.encoder.encode_queries(batch)
        queries = list(vectors)
        t1 = time.perf_counter()
        extra = {name: value for name, value in (("nprobe", nprobe), ("ncandidates", ncandidates))
                 if value is not None}
        total = max(len(self.index), 1)
        depth = min(total, max(3 * k, k + 10))
        results: list[list[SearchHit] | None] = [None] * len(batch)
        todo = list(range(len(batch)))
        while todo:  # several chunks of one document can fill the top: dig deeper for those queries
            hybrid_options = {"hybrid_texts": [batch[i] for i in todo], "alpha": alpha, "fusion": fusion} \
                if hybrid else {}
            raw = self.index.search_batch([queries[i] for i in todo], k=depth, filters=filters, exact=exact,
                                          **hybrid_options, **extra)
            again = []
            for i, hits in zip(todo, raw, strict=True):
                results[i] = _merge_chunks(hits, k)
                if len(results[i]) < k and len(hits) >= depth and depth < total:
                    again.append(i)
            todo, depth = again, min(total, depth * 4)
        timings = {"encode_s": t1 - t0, "search_s": time.perf_counter() - t1}
        return [SearchResults(hits or [], timings) for hits in results]

    def _warn_truncation(self, batch: list[str]) -> None:
        limit = getattr(getattr(self.encoder, "settings", None), "query_length", None)
        if limit is None:
            limit = int(getattr(self.encoder.model, "max_seq_length", 0)) or None
        if limit is None:
            return
        for text, n in zip(batch, self.encoder.token_lengths(batch), strict=True):
            if n + 2 > limit:
                log.warning("query %r has %d tokens; the encoder reads only the first %d", text[:40], n, limit - 2)

    def __repr__(self) -> str:
        return f"SearchPipeline(index={str(self.index.path)!r}, encoder={self.encoder.describe()['model']!r})"


def _merge_chunks(hits, k: int) -> list[SearchHit]:
    """One hit per document (its best chunk), best first, at most ``k``."""
    from mm.encoders.chunking import CHUNK_KEY, DOC_KEY, SOURCE_KEY

    merged: list[SearchHit] = []
    seen: set[str] = set()
    for hit in hits:
        meta = dict(hit.metadata)
        doc_id = meta.pop(DOC_KEY, hit.id)
        chunk = meta.pop(CHUNK_KEY, None)
        meta.pop(SOURCE_KEY, None)
        if doc_id in seen:
            continue
        seen.add(doc_id)
        merged.append(SearchHit(doc_id, float(hit.score), hit.text, meta, chunk))
        if len(merged) == k:
            break
    return merged
