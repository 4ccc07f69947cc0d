"""The one write path of mm indexes: every way of writing documents goes through :class:`IndexWriter`.

``mm index build/add/sync/delete``, ``mm demo``, the search app's upload, :func:`mm.index.build_job`
and the Ray engine all write through this module, so document/chunk keys, long-document policy
and content hashes are the same whoever writes.

**The index is its own checkpoint.** Every stored entry carries, in its metadata under ``_src``,
the content hash of the source document it came from (text + metadata + encoder + chunk policy,
see :func:`content_hash`). That hash lives in the same segment files as the vectors, so it is
committed atomically with them by the index's manifest commit: what the index holds *now* is the
only truth about what is indexed. A document deleted from the index has no entries, hence no hash,
and is encoded again by the next ``build --resume``/``add``; a changed document's hash differs and
it is re-encoded, its old chunks replaced in the same commit.

**Interface with the index classes** (kept narrow so the storage can change under it):

* ``Index.add(ids, vectors, texts=, metadata=, delete=)``: one transaction that adds (or replaces)
  entries and removes the ids in ``delete`` (a re-encoded document's stale chunks);
* ``Index.delete(ids)``: one transaction removing entries;
* ``Index.document_state(doc_id)``: ``(content hash, entries)`` of one document, looked up by id;
* ``Index.documents_not_in(ids)``, ``Index.document_count()``: pruning and totals without per-entry objects;
* ``Index.records()``: ``(id, metadata)`` of every live entry, read-only (only the Ray engine's table);
* ``kind``, ``dim``, ``encoder_info``, ``path``, ``refresh()``, ``info()``, ``len()``.

>>> import tempfile, pathlib
>>> from mm.corpus import Document
>>> from mm.testing.hash_encoder import HashEncoder
>>> from mm.encoders.chunking import ChunkPolicy
>>> enc = HashEncoder(dim=8, max_tokens=12)
>>> writer = IndexWriter.open_or_create(pathlib.Path(tempfile.mkdtemp()) / "idx", enc, ChunkPolicy())
>>> doc = Document("a", "one two three four five six")
>>> policy = writer.policy
>>> chunks = policy.split(doc.text, enc)
>>> writer.commit([EncodedDoc(doc.id, writer.hash(doc), chunks, enc.encode_documents(chunks), 6, {})])
>>> writer.known(["a", "b"]) == {"a": (writer.hash(doc), 2)}
True
>>> writer.delete_documents(["a"]), len(writer.index)
((1, 2), 0)
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mm.encoders.chunking import SOURCE_KEY, ChunkPolicy, chunk_ids, chunk_metadata, document_of

from mm.corpus import Document
from mm.errors import InvalidInputError, MMError

log = logging.getLogger(__name__)

#: encoder_info keys left out when comparing encoders: the checkpoint path moves between installs and the
#: name is how it was asked for (both are compared by :func:`check_same_encoder` when the paths exist)
_IDENTITY_SKIP = ("model", "model_name", "recipe")


@dataclass
class EncodedDoc:
    """A document after chunking and encoding, ready to be committed."""

    doc_id: str
    content_hash: str
    chunk_texts: list[str]
    vectors: list[np.ndarray]
    n_tokens: int
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def n_chunks(self) -> int:
        return len(self.chunk_texts)


def fingerprint(encoder_info: dict[str, Any], policy: ChunkPolicy) -> dict[str, Any]:
    """What, besides a document's content, decides its vectors: the encoder identity and the chunk policy."""
    identity = {k: v for k, v in encoder_info.items() if k not in _IDENTITY_SKIP and k != "chunking"}
    return {"encoder": identity, "chunking": policy.describe()}


def content_hash(doc: Document, fingerprint_text: str) -> str:
    """Hash of everything that decides ``doc``'s entries: text, metadata, encoder and chunk policy."""
    payload = json.dumps([doc.text, doc.metadata], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.blake2b(f"{fingerprint_text}\x1f{payload}".encode(), digest_size=16).hexdigest()


class IndexWriter:
    """Writes source documents into one index; knows what the index holds per document."""

    def __init__(self, index: Any, encoder_info: dict[str, Any], policy: ChunkPolicy) -> None:
        self.index = index
        self.policy = policy
        self.encoder_info = encoder_info
        self._fingerprint = json.dumps(fingerprint(encoder_info, policy), sort_keys=True)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open_or_create(cls, path: str | Path, encoder: Any, policy: ChunkPolicy, *, nbits: int | None = None,
                       codec: str | None = None, codec_from: Any = None, create: bool = True,
                       recipe: dict | None = None, index: Any = None) -> IndexWriter:
        """The writer of the index at ``path`` for ``encoder`` (created when missing and ``create``).

        ``nbits``, ``codec``, ``codec_from``: settings of a new multi-vector index
        (:func:`mm.index.create_index`); a ``codec_from`` index must have the same encoder and chunk policy.
        An existing index must have been built with the same encoder and chunk policy. ``recipe``
        (``{"target": "module:callable", "kwargs": {...}}``) is recorded in a new index so that later
        jobs can load an encoder that is not an ``mm.encoders`` model. ``index``: the index at ``path``
        when the caller has it open already (it is not opened again).
        """
        from mm.index import create_index, open_index
        from mm.index.storage import MANIFEST

        path = Path(path)
        policy = policy.resolve(encoder)
        info = {**encoder.describe(), "long_docs": policy.long_docs, "chunking": policy.describe()}
        if recipe is not None:
            info["recipe"] = recipe
        given = [name for name, value in (("nbits", nbits), ("codec", codec), ("codec_from", codec_from))
                 if value is not None]
        if index is not None or (path / MANIFEST).exists():
            index = index if index is not None else open_index(path)
            check_same_encoder(index, info)
            if given:
                raise InvalidInputError(f"{', '.join(given)} only apply when a new index is created; {path} "
                                        f"exists (its codec: {index.config.get('codec', 'none')}, nbits "
                                        f"{index.config.get('nbits', '-')}): drop them")
            return cls(index, index.encoder_info, policy)
        if not create:
            raise InvalidInputError(f"{path} holds no index; build one first with `mm index build`")
        if encoder.kind != "multivector" and given:
            raise InvalidInputError(f"{'/'.join(given)} only apply to multi-vector indexes; the encoder is "
                                    f"{encoder.kind}: drop {' '.join('--' + g.replace('_', '-') for g in given)}")
        if codec_from is not None:
            source = codec_from if hasattr(codec_from, "encoder_info") else open_index(codec_from)
            check_same_encoder(source, info)
            codec_from = source
        options = {"nbits": nbits, "codec": codec, "codec_from": codec_from} if encoder.kind == "multivector" else {}
        index = create_index(path, kind=encoder.kind, dim=int(encoder.dim), encoder_info=info, **options)
        return cls(index, info, policy)

    @classmethod
    def for_index(cls, index: Any) -> IndexWriter:
        """A writer of an open index that only deletes or reads (no encoder needed)."""
        return cls(index, index.encoder_info, policy_of(index))

    # ------------------------------------------------------------------ what the index holds
    def hash(self, doc: Document) -> str:
        """The content hash ``doc`` has when written by this writer."""
        return content_hash(doc, self._fingerprint)

    def table(self) -> dict[str, tuple[str, int]]:
        """``doc_id -> (content hash, chunks)`` of every document in the index (a full pass; the Ray
        engine ships it to its actors). The local write path never builds it: see :meth:`known`."""
        self.index.refresh()
        table: dict[str, list] = {}
        for entry_id, meta in self.index.records():
            doc_id = document_of(entry_id, meta)
            row = table.setdefault(doc_id, [meta.get(SOURCE_KEY, ""), 0])
            row[1] += 1
            if row[0] != meta.get(SOURCE_KEY, ""):
                row[0] = ""  # entries of one document from different versions: not a known state
        return {d: (h, n) for d, (h, n) in table.items()}

    def known(self, doc_ids: Iterable[str]) -> dict[str, tuple[str, int]]:
        """``doc_id -> (content hash, chunks)`` for those of ``doc_ids`` the index holds.

        Looks up only these documents' entries (:meth:`mm.index.base.Index.document_state`), so
        comparing a corpus with the index costs memory per batch, not per indexed document.
        """
        self.index.refresh()
        out = {}
        for doc_id in doc_ids:
            state = self.index.document_state(doc_id)
            if state is not None:
                out[doc_id] = state
        return out

    def totals(self) -> tuple[int, int]:
        """``(documents, entries)`` in the index."""
        self.index.refresh()
        return self.index.document_count(), len(self.index)

    def documents_not_in(self, doc_ids: set[str]) -> list[str]:
        """Documents the index holds that are not in ``doc_ids`` (what a prune deletes)."""
        self.index.refresh()
        return self.index.documents_not_in(doc_ids)

    # ------------------------------------------------------------------ writing
    def commit(self, docs: list[EncodedDoc]) -> None:
        """Write ``docs`` (new, or replacing what the index holds for them) in one index commit."""
        if not docs:
            return
        known = self.known(d.doc_id for d in docs)
        ids, vectors, texts, metas, stale = [], [], [], [], []
        for doc in docs:
            new_ids = chunk_ids(doc.doc_id, doc.n_chunks)
            if doc.doc_id in known:
                stale.extend(set(chunk_ids(doc.doc_id, known[doc.doc_id][1])) - set(new_ids))
            ids.extend(new_ids)
            texts.extend(doc.chunk_texts)
            vectors.extend(self._checked(doc.vectors))
            base = {**doc.metadata, SOURCE_KEY: doc.content_hash}
            metas.extend(chunk_metadata(doc.doc_id, i, doc.n_chunks, base) for i in range(doc.n_chunks))
        payload = vectors if self.index.kind == "multivector" else np.stack(vectors)
        self.index.add(ids, payload, texts=texts, metadata=metas, delete=sorted(stale))

    def delete_documents(self, doc_ids: Iterable[str]) -> tuple[int, int]:
        """Delete documents with all their chunks; returns ``(documents, entries)`` deleted."""
        known = self.known(doc_ids)
        entries = [cid for d, (_, n) in known.items() for cid in chunk_ids(d, n)]
        removed = self.index.delete(entries) if entries else 0
        return len(known), removed

    def documents(self, batch: int = 10_000) -> Iterator[list[str]]:
        """Every document id in the index, in batches."""
        ids = sorted(self.documents_not_in(set()))
        for start in range(0, len(ids), batch):
            yield ids[start:start + batch]

    def _checked(self, vectors: list[np.ndarray]) -> list[np.ndarray]:
        ndim = 2 if self.index.kind == "multivector" else 1
        for vec in vectors:
            if vec.ndim != ndim or vec.shape[-1] != self.index.dim:
                raise MMError(f"encoder returned a vector of shape {vec.shape}; the index expects "
                              f"{'tokens x ' if ndim == 2 else ''}{self.index.dim}")
        return vectors


def check_same_encoder(index: Any, info: dict[str, Any]) -> None:
    """Refuse to write vectors of another encoder, kind, dimension or chunk policy into ``index``."""
    stored = index.encoder_info
    if index.kind != info.get("kind") or int(index.dim) != int(info.get("dim", -1)):
        raise InvalidInputError(f"index {index.path} is {index.kind} with dim {index.dim}; the encoder "
                                f"produces {info.get('kind')} vectors of dim {info.get('dim')}: use a new index path")
    if stored.get("long_docs", "chunk") != info.get("long_docs", "chunk"):
        raise InvalidInputError(f"index {index.path} was built with long_docs={stored.get('long_docs', 'chunk')!r}; "
                                f"use the same policy, or a new index path")
    now = {k: v for k, v in info.items() if k not in _IDENTITY_SKIP}
    then = {k: v for k, v in stored.items() if k not in _IDENTITY_SKIP}
    if "chunking" not in then:  # an index written before chunk policies were recorded
        now.pop("chunking", None)
    paths = [Path(str(d.get("model", ""))) for d in (stored, info)]
    if all(p.is_dir() for p in paths) and paths[0].resolve() != paths[1].resolve():
        now["model"], then["model"] = str(paths[1]), str(paths[0])
    if now != then:
        raise InvalidInputError(
            f"index {index.path} was built with different encoder/chunking settings:\n  index: "
            f"{json.dumps(then, sort_keys=True)}\n  now:   {json.dumps(now, sort_keys=True)}\n"
            f"use the same settings (`mm index add` and `sync` reuse the index's own), or a new index path")


def check_encoder_matches(index: Any, encoder: Any) -> None:
    """Raise if ``encoder`` cannot produce vectors for ``index`` (kind or dimension differ)."""
    if encoder.kind != index.kind or encoder.dim != index.dim:
        raise InvalidInputError(f"the encoder gives {encoder.kind} {encoder.dim}-d vectors but the index at "
                                f"{index.path} holds {index.kind} {index.dim}-d vectors")


def policy_of(index: Any) -> ChunkPolicy:
    """The chunk policy an index was built with (older indexes: their long-document policy)."""
    chunking = index.encoder_info.get("chunking")
    if isinstance(chunking, dict):
        return ChunkPolicy(**chunking)
    return ChunkPolicy(long_docs=index.encoder_info.get("long_docs", "chunk"))
