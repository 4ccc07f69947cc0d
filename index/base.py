"""The :class:`Index` base: documents, ids, metadata, persistence and the write protocol.

Kinds (:mod:`mm.index.multivector`, :mod:`mm.index.dense`) add how vectors are
stored and searched. Every write (``add``, ``delete``, ``update``, ``compact``,
``retrain``) runs under the writer lock, first re-reads the committed manifest
(so a handle opened long ago never overwrites a newer commit), writes new
immutable files, then commits a new manifest atomically (see
:mod:`mm.index.storage`).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from mm.encoders.chunking import CHUNK_SEP, SOURCE_KEY
from mm.index.entries import IdMap, hash_all
from mm.index.filters import fields_of, matches, validate_filters
from mm.index.segments import Segment, open_segment, with_tombstones, write_segment
from mm.index.storage import (
    FORMAT_VERSION,
    collect_garbage,
    manifest_stamp,
    read_manifest,
    write_errors,
    write_manifest,
    writer_lock,
)

from mm.errors import IndexFormatError, InvalidInputError, check_options
from mm.validation import check_text

log = logging.getLogger(__name__)

#: largest number of documents one ``add`` call accepts (bounded memory; call add repeatedly)
MAX_ADD_DOCS = 1_000_000


@dataclass
class Hit:
    """One search result."""

    id: str
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "text": self.text, "metadata": self.metadata}


@dataclass
class StoredDocument:
    """A stored entry as returned by :meth:`Index.get`."""

    id: str
    text: str
    metadata: dict[str, Any]
    n_tokens: int


@dataclass
class DocRef:
    """A document to write into a new segment: new vectors, or a row copied from a committed segment."""

    id: str
    text: str
    metadata: dict[str, Any]
    vectors: np.ndarray | None = None
    segment: Segment | None = None
    row: int = -1


class Index:
    """Base class; use :func:`mm.index.create_index` / :func:`mm.index.open_index`."""

    kind: ClassVar[str] = ""
    #: search options besides k / filters / exact / hybrid ones, with defaults
    search_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, path: Path, *, lock_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.lock_timeout = float(lock_timeout)
        self._stamp: tuple[int, int, int] | None = None
        self._manifest: dict[str, Any] = {}
        self._segments: list[Segment] = []
        self._id_map = IdMap([], [], [], [])
        self._filter_cache: dict[str, list[np.ndarray]] = {}
        self._bm25: Any = None
        self._load()

    # ------------------------------------------------------------------ loading
    def _load(self) -> None:
        """(Re)open the committed state; retries if a concurrent writer removes files mid-way."""
        for attempt in range(20):
            stamp = manifest_stamp(self.path)
            manifest = read_manifest(self.path)
            if manifest.get("kind") != self.kind:
                raise IndexFormatError(f"{self.path} holds a {manifest.get('kind')!r} index, not {self.kind!r}")
            opened = {seg.name: seg for seg in self._segments}  # unchanged segments are not read again
            try:
                segments = [open_segment(self.path, entry, opened.get(entry["name"]))
                            for entry in manifest["segments"]]
                self._load_kind(manifest)
            except FileNotFoundError:
                log.debug("index changed while opening (attempt %d); retrying", attempt + 1)
                time.sleep(0.05)
                continue
            break
        else:
            raise IndexFormatError(f"{self.path}: files named by the manifest are missing; the index is damaged")
        id_map = IdMap([seg.ids for seg in segments], [seg.keys for seg in segments],
                       [(lambda seg=seg: seg.live) for seg in segments], [seg.n_live for seg in segments])
        self._manifest, self._segments, self._id_map, self._stamp = manifest, segments, id_map, stamp
        self._filter_cache = {}
        self._bm25 = None

    def _load_kind(self, manifest: dict[str, Any]) -> None:
        """Open kind-specific shared files (codec ...)."""

    def refresh(self) -> bool:
        """Pick up commits made by other writers since this handle loaded; True if it changed."""
        if manifest_stamp(self.path) != self._stamp:
            self._load()
            return True
        return False

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return int(self._manifest["dim"])

    @property
    def encoder_info(self) -> dict[str, Any]:
        """What the creator stored about the encoder (model id, kind, prefixes ...)."""
        return copy.deepcopy(self._manifest.get("encoder_info", {}))

    @property
    def config(self) -> dict[str, Any]:
        return copy.deepcopy(self._manifest.get("config", {}))

    @property
    def generation(self) -> int:
        """Number of commits so far."""
        return int(self._manifest.get("generation", 0))

    def __len__(self) -> int:
        return len(self._id_map)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._id_map

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, documents={len(self)})"

    def ids(self) -> list[str]:
        """Ids of all live documents (segment order)."""
        return list(self._id_map)

    def get(self, doc_id: str) -> StoredDocument | None:
        """The stored document ``doc_id`` or ``None``."""
        loc = self._id_map.get(doc_id)
        if loc is None:
            return None
        seg = self._segments[loc[0]]
        return StoredDocument(doc_id, seg.text(loc[1]), copy.deepcopy(seg.metadata[loc[1]]),
                        self._doc_tokens(seg, loc[1]))

    def records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(id, metadata)`` of every live entry (metadata rebuilt from the compact columns per row)."""
        for seg in self._segments:
            for row in np.flatnonzero(seg.live):
                yield seg.ids[row], seg.metadata[row]

    def document_state(self, doc_id: str) -> tuple[str, int] | None:
        """``(content hash, entries)`` of document ``doc_id``: its own entry, or its chunks ``id#0``, ``id#1`` ...

        ``None`` when the index holds none; the hash is ``""`` when the entries disagree (or have none).
        Looks up only that document's entries (:mod:`mm.index.writer` uses it; read-only).
        """
        loc = self._id_map.get(doc_id)
        if loc is not None and self._segments[loc[0]].metadata.document(loc[1]) == doc_id:
            return self._segments[loc[0]].metadata.source(loc[1]), 1
        sources: list[str] = []
        while (loc := self._id_map.get(f"{doc_id}{CHUNK_SEP}{len(sources)}")) is not None:
            meta = self._segments[loc[0]].metadata
            if meta.document(loc[1]) != doc_id:
                break
            sources.append(meta.source(loc[1]))
        if not sources:
            return None
        return (sources[0] if len(set(sources)) == 1 else ""), len(sources)

    def document_count(self) -> int:
        """Number of documents (distinct ``_doc`` of chunks, plus unchunked entries) among the live entries."""
        hashes = [np.asarray(seg.metadata.doc_hashes)[seg.live] for seg in self._segments]
        return len(np.unique(np.concatenate(hashes))) if hashes else 0

    def documents_not_in(self, keep: set[str]) -> list[str]:
        """Documents of live entries that are not in ``keep``, in index order (compared by hash first)."""
        keep_hashes = np.sort(hash_all(list(keep)))
        out: dict[str, None] = {}
        for seg in self._segments:
            rows = np.flatnonzero(seg.live)
            for row in rows[~np.isin(np.asarray(seg.metadata.doc_hashes)[rows], keep_hashes)]:
                out[seg.metadata.document(row)] = None
        return list(out)

    def _doc_tokens(self, seg: Segment, row: int) -> int:
        return 1

    def _hit(self, s: int, row: int, score: float) -> Hit:
        seg = self._segments[s]
        return Hit(seg.ids[row], float(score), seg.text(row), copy.deepcopy(seg.metadata[row]))

    # ------------------------------------------------------------------ validation
    def _check_docs(self, ids: Any, vectors: Any, texts: Any, metadata: Any) -> list[DocRef]:
        if isinstance(ids, str) or not isinstance(ids, (list, tuple)):
            raise InvalidInputError(f"ids must be a list of strings, got {type(ids).__name__}")
        n = len(ids)
        if n == 0:
            raise InvalidInputError("add() needs at least one document")
        if n > MAX_ADD_DOCS:
            raise InvalidInputError(f"add() takes at most {MAX_ADD_DOCS} documents per call, got {n}; add in batches")
        for i in ids:
            if not isinstance(i, str) or not i.strip():
                raise InvalidInputError(f"document ids must be non-empty strings, got {i!r}")
            check_text(i, f"document id {i!r}")
        if len(set(ids)) != n:
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))
            raise InvalidInputError(f"duplicate id {dup!r} in one add() call; each id may appear once"
                                    f"{_chunk_clash_hint(dup)}")
        texts = [""] * n if texts is None else list(texts)
        metadata = [{} for _ in range(n)] if metadata is None else list(metadata)
        vecs = self._check_vectors(vectors, n)
        if len(texts) != n or len(metadata) != n:
            raise InvalidInputError(f"got {n} ids, {len(texts)} texts and {len(metadata)} metadata entries; "
                                    "they must have the same length")
        docs = []
        for i, t, m, v in zip(ids, texts, metadata, vecs, strict=True):
            if not isinstance(t, str):
                raise InvalidInputError(f"text of {i!r} must be a string, got {type(t).__name__}")
            check_text(t, f"text of {i!r}", allow_empty=True)
            docs.append(DocRef(i, t, self._check_metadata(i, m), vectors=v))
        return docs

    @staticmethod
    def _check_metadata(doc_id: str, meta: Any) -> dict[str, Any]:
        if meta is None:
            return {}
        if not isinstance(meta, dict):
            raise InvalidInputError(f"metadata of {doc_id!r} must be a dict, got {type(meta).__name__}")
        try:
            text = json.dumps(meta, allow_nan=False, ensure_ascii=False)
            text.encode("utf-8")  # lone surrogates in keys or values
            return json.loads(text)
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidInputError(f"metadata of {doc_id!r} is not JSON-serialisable valid Unicode: "
                                    f"{str(exc)[:200]}") from exc

    def _check_vectors(self, vectors: Any, n: int) -> list[np.ndarray]:
        raise NotImplementedError

    def _check_query(self, query: Any) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def _check_k(k: Any) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        return int(k)

    # ------------------------------------------------------------------ write protocol
    def _write(self, op) -> Any:
        """Run ``op(manifest) -> (new_manifest | None, result)`` under the lock and commit its manifest."""
        with writer_lock(self.path, self.lock_timeout), write_errors(self.path):
            try:
                self.refresh()
                manifest = copy.deepcopy(self._manifest)
                new, result = op(manifest)
                if new is not None:
                    new["generation"] = int(manifest.get("generation", 0)) + 1
                    new["updated"] = time.time()
                    write_manifest(self.path, new)
                    self._load()
            finally:
                # whatever happened, files not named by the manifest on disk are garbage (we hold the lock)
                collect_garbage(self.path, read_manifest(self.path))
        return result

    def _tombstone(self, manifest: dict[str, Any], rows_by_segment: dict[int, list[int]]) -> None:
        """Mark rows deleted in ``manifest`` (new tombstone files); segments left empty are dropped."""
        entries = []
        for s, seg in enumerate(self._segments):
            rows = rows_by_segment.get(s)
            entry = manifest["segments"][s]
            if rows:
                deleted = seg.deleted.copy()
                deleted[rows] = True
                entry = with_tombstones(self.path, entry, deleted)
            if entry is not None:
                entries.append(entry)
        manifest["segments"] = entries

    def _new_segment(self, manifest: dict[str, Any], docs: list[DocRef], arrays: dict[str, np.ndarray],
                     extra: dict[str, Any]) -> dict[str, Any]:
        return write_segment(self.path, [d.id for d in docs], [d.text for d in docs],
                             [d.metadata for d in docs], arrays, extra)

    def _append(self, manifest: dict[str, Any], docs: list[DocRef]) -> None:
        """Write segment(s) holding ``docs`` into ``manifest`` (kind-specific)."""
        raise NotImplementedError

    def _live_refs(self) -> list[DocRef]:
        return [DocRef(seg.ids[r], seg.text(r), seg.metadata[r], segment=seg, row=int(r))
                for seg in self._segments for r in np.flatnonzero(seg.live)]

    def add(self, ids: list[str], vectors: Any, texts: list[str] | None = None,
            metadata: list[dict[str, Any]] | None = None, *, delete: list[str] | None = None) -> int:
        """Add documents; an id already in the index is replaced. Returns the number added.

        ``delete``: other ids to remove in the same commit (unknown ones are ignored). The call is
        one transaction: after it returns every change is committed; if the process dies before,
        none is (re-running it is safe).
        """
        docs = self._check_docs(ids, vectors, texts, metadata)
        if isinstance(delete, str):
            raise InvalidInputError("delete must be a list of ids, not one string")
        adding = set(ids)
        gone = [i for i in (delete or ()) if i not in adding]

        def op(manifest):
            replaced: dict[int, list[int]] = {}
            for d in docs:
                if d.id in self._id_map:
                    s, row = self._id_map[d.id]
                    old_doc = self._segments[s].metadata[row].get("_doc")
                    if old_doc != d.metadata.get("_doc"):  # a chunk would replace a document, or back
                        raise InvalidInputError(f"id {d.id!r} is already stored for another document"
                                                f"{_chunk_clash_hint(d.id)}")
            for i in [d.id for d in docs] + gone:
                if i in self._id_map:
                    s, row = self._id_map[i]
                    replaced.setdefault(s, []).append(row)
            self._tombstone(manifest, replaced)
            self._append(manifest, docs)
            n_rep = sum(len(v) for v in replaced.values())
            if n_rep:
                log.info("replaced %d existing document(s)", n_rep)
            return manifest, len(docs)

        return self._write(op)

    def delete(self, ids: list[str], *, missing_ok: bool = True) -> int:
        """Delete documents by id; returns how many were deleted (unknown ids are skipped unless missing_ok=False)."""
        if isinstance(ids, str):
            ids = [ids]

        def op(manifest):
            rows: dict[int, list[int]] = {}
            missing = [i for i in ids if i not in self._id_map]
            if missing and not missing_ok:
                raise InvalidInputError(f"{len(missing)} id(s) not in the index, e.g. {missing[0]!r}")
            for i in set(ids) - set(missing):
                s, row = self._id_map[i]
                rows.setdefault(s, []).append(row)
            if not rows:
                return None, 0
            self._tombstone(manifest, rows)
            return manifest, sum(len(v) for v in rows.values())

        return self._write(op)

    def update(self, ids: list[str], vectors: Any = None, texts: list[str] | None = None,
               metadata: list[dict[str, Any]] | None = None) -> int:
        """Change existing documents: new vectors and/or text and/or metadata (``None`` keeps what is stored).

        Every id must exist (:class:`InvalidInputError` otherwise). Returns the number updated.
        """
        if isinstance(ids, str) or not isinstance(ids, (list, tuple)) or not ids:
            raise InvalidInputError("update() needs a non-empty list of ids")
        if vectors is None and texts is None and metadata is None:
            raise InvalidInputError("update() needs new vectors, texts or metadata")
        if len(set(ids)) != len(ids):
            raise InvalidInputError("update() got the same id twice")
        n = len(ids)
        for name, value in (("texts", texts), ("metadata", metadata)):
            if value is not None and len(value) != n:
                raise InvalidInputError(f"update(): {name} has {len(value)} entries for {n} ids")
        new_vectors = self._check_vectors(vectors, n) if vectors is not None else [None] * n
        new_texts = list(texts) if texts is not None else [None] * n
        new_meta = [self._check_metadata(i, m) for i, m in zip(ids, metadata, strict=True)] \
            if metadata is not None else [None] * n

        def op(manifest):
            missing = [i for i in ids if i not in self._id_map]
            if missing:
                raise InvalidInputError(f"update(): {len(missing)} id(s) not in the index, e.g. {missing[0]!r}; "
                                        "use add() for new documents")
            docs, rows = [], {}
            for i, v, t, m in zip(ids, new_vectors, new_texts, new_meta, strict=True):
                s, row = self._id_map[i]
                seg = self._segments[s]
                if t is not None and not isinstance(t, str):
                    raise InvalidInputError(f"text of {i!r} must be a string")
                if m is None:  # new text or vectors: the entry no longer matches its source's content hash
                    m = {k: v for k, v in seg.metadata[row].items() if k != SOURCE_KEY}
                docs.append(DocRef(i, seg.text(row) if t is None else t, m,
                                   vectors=v, segment=None if v is not None else seg, row=row))
                rows.setdefault(s, []).append(row)
            self._tombstone(manifest, rows)
            self._append(manifest, docs)
            return manifest, len(docs)

        return self._write(op)

    def compact(self) -> dict[str, int]:
        """Drop deleted rows and merge all segments into one. Returns before/after counts."""

        def op(manifest):
            before = {"segments": len(self._segments),
                      "deleted_rows": sum(s.n_docs - s.n_live for s in self._segments)}
            if len(self._segments) <= 1 and before["deleted_rows"] == 0:
                return None, {**before, "segments_after": before["segments"]}
            refs = self._live_refs()
            manifest["segments"] = []
            if refs:
                self._rewrite(manifest, refs)
            return manifest, {**before, "segments_after": len(manifest["segments"])}

        return self._write(op)

    def _rewrite(self, manifest: dict[str, Any], refs: list[DocRef]) -> None:
        """Write ``refs`` (copies of live rows) as new segment(s); used by compact()."""
        self._append(manifest, refs)

    # ------------------------------------------------------------------ search
    def _allowed(self, filters: dict[str, Any] | None) -> list[np.ndarray]:
        """Per segment: bool mask of live rows matching ``filters`` (cached per filter)."""
        if not filters:
            return [seg.live for seg in self._segments]
        key = json.dumps(filters, sort_keys=True)
        masks = self._filter_cache.get(key)
        if masks is None:
            masks, fields = [], fields_of(filters)
            for seg in self._segments:  # once per distinct stored metadata JSON of a segment (mm.index.entries)
                mask = np.zeros(seg.n_docs, dtype=bool)
                rows = np.flatnonzero(seg.live)
                mask[rows] = seg.metadata.filter_mask(rows, lambda meta: matches(meta, filters), fields)
                masks.append(mask)
            if len(self._filter_cache) > 64:
                self._filter_cache.clear()
            self._filter_cache[key] = masks
        return masks

    def search(self, query: Any, k: int = 10, filters: dict[str, Any] | None = None, exact: bool = False,
               hybrid_text: str | None = None, alpha: float = 0.5, fusion: str = "rrf", **options: Any) -> list[Hit]:
        """The ``k`` best documents for one query, best first.

        ``filters`` restricts to documents whose metadata match (see :mod:`mm.index.filters`);
        ``exact=True`` scores every document exhaustively; ``hybrid_text`` fuses BM25 scores of
        that text with the neural scores (``alpha`` = weight of the neural side, ``fusion`` =
        ``"rrf"`` or ``"linear"``).
        """
        return self.search_batch([query], k=k, filters=filters, exact=exact,
                                 hybrid_texts=None if hybrid_text is None else [hybrid_text],
                                 alpha=alpha, fusion=fusion, **options)[0]

    def search_batch(self, queries: Any, k: int = 10, filters: dict[str, Any] | None = None, exact: bool = False,
                     hybrid_texts: list[str] | None = None, alpha: float = 0.5, fusion: str = "rrf",
                     **options: Any) -> list[list[Hit]]:
        """:meth:`search` for several queries (a list of query arrays, or a 2-D array of dense queries)."""
        check_options(options, self.search_options, f"{type(self).__name__}.search()")
        settings = {**self.search_options, **options}
        k = self._check_k(k)
        filters = validate_filters(filters)
        if isinstance(queries, np.ndarray) and queries.ndim == 2 and self.kind == "dense":
            queries = list(queries)
        if not isinstance(queries, (list, tuple)) or not queries:
            raise InvalidInputError("search_batch() needs a non-empty list of queries")
        qs = [self._check_query(q) for q in queries]
        if hybrid_texts is not None:
            from mm.index.hybrid import check_fusion

            check_fusion(alpha, fusion)
            if len(hybrid_texts) != len(qs):
                raise InvalidInputError(f"got {len(hybrid_texts)} hybrid texts for {len(qs)} queries")
        self.refresh()
        allowed = self._allowed(filters)
        results = []
        depth = k if hybrid_texts is None else max(k, 100)
        for i, raw in enumerate(self._search_many(qs, depth, allowed, exact, settings)):
            scored = finite_unique(raw)
            if hybrid_texts is not None:
                from mm.index.hybrid import fuse

                scored = fuse(self, scored, hybrid_texts[i], allowed, depth, alpha, fusion)
            results.append([self._hit(s, r, sc) for s, r, sc in scored[:k]])
        return results

    def _search_one(self, query: np.ndarray, k: int, allowed: list[np.ndarray], exact: bool,
                    settings: dict[str, Any]) -> list[tuple[int, int, float]]:
        """Top ``k`` (segment, row, score) for one validated query."""
        raise NotImplementedError

    def _search_many(self, queries: list[np.ndarray], k: int, allowed: list[np.ndarray], exact: bool,
                     settings: dict[str, Any]) -> list[list[tuple[int, int, float]]]:
        """:meth:`_search_one` for a batch of validated queries (kinds may share work across the batch)."""
        return [self._search_one(q, k, allowed, exact, settings) for q in queries]

    # ------------------------------------------------------------------ info
    def info(self) -> dict[str, Any]:
        """Sizes, layout and health of the index."""
        self.refresh()
        sizes = {name: (self.path / name).stat().st_size for name in self._files()}
        total_bytes = sum(sizes.values())
        # bytes of the search structures alone: without stored texts, ids/metadata and the manifest
        vector_bytes = sum(size for name, size in sizes.items()
                           if name.endswith(".npy") and not name.endswith((".text.npy", ".text_off.npy")))
        n_tokens = self._live_tokens()
        return {
            "path": str(self.path),
            "kind": self.kind,
            "format_version": FORMAT_VERSION,
            "generation": self.generation,
            "dim": self.dim,
            "documents": len(self),
            "tokens": n_tokens,
            "segments": len(self._segments),
            "deleted_rows": sum(s.n_docs - s.n_live for s in self._segments),
            "bytes": total_bytes,
            "bytes_per_token": total_bytes / n_tokens if n_tokens else None,
            "vector_bytes": vector_bytes,
            "vector_bytes_per_token": vector_bytes / n_tokens if n_tokens else None,
            "encoder_info": self.encoder_info,
            "config": self.config,
        }

    def _files(self) -> list[str]:
        from mm.index.storage import MANIFEST, referenced_files

        return [MANIFEST, *sorted(referenced_files(self._manifest))]

    def _live_tokens(self) -> int:
        return len(self)


def finite_unique(scored: list[tuple[int, int, float]]) -> list[tuple[int, int, float]]:
    """Drop rows with a non-finite score (NaN vectors in a damaged segment match nothing) and repeats.

    >>> finite_unique([(0, 1, 0.9), (0, 2, float("nan")), (0, 1, 0.9), (1, 0, 0.5)])
    [(0, 1, 0.9), (1, 0, 0.5)]
    """
    seen: set[tuple[int, int]] = set()
    out = []
    for s, r, score in scored:
        if math.isfinite(score) and (s, r) not in seen:
            seen.add((s, r))
            out.append((s, r, score))
    return out


def _chunk_clash_hint(stored_id: str) -> str:
    """Explain a clash between a document id and a chunk id (``doc#N``), or nothing.

    >>> _chunk_clash_hint("a#0")
    "; 'a#0' is also the id of chunk 0 of the long document 'a' (ids ending in '#<number>' name chunks): rename the document 'a#0'"
    >>> _chunk_clash_hint("plain")
    ''
    """
    base, sep, tail = stored_id.rpartition("#")
    if not (sep and base and tail.isdigit()):
        return ""
    return (f"; {stored_id!r} is also the id of chunk {tail} of the long document {base!r} (ids ending in "
            f"'#<number>' name chunks): rename the document {stored_id!r}")
