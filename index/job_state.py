"""The checkpoint of an indexing job: one SQLite file beside the index.

It stores, per source document, the content hash and chunk count that are in the
index, plus the job fingerprint (encoder + chunking) the index was built with.
The job commits a segment to the index first and to this state second, so a job
killed between the two only redoes that segment on restart (``add`` replaces ids):
no document is ever lost or duplicated.

>>> import tempfile, pathlib
>>> state = JobState(pathlib.Path(tempfile.mkdtemp()) / "state.sqlite")
>>> state.check_fingerprint({"encoder": "x"})
>>> state.commit_docs([("a", "h1", 1, 3)])
>>> state.lookup(["a", "b"])
{'a': ('h1', 1)}
>>> state.close()
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from mm.errors import IndexFormatError, InvalidInputError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docs (
    doc_id TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    n_chunks INTEGER NOT NULL,
    n_tokens INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS seen (doc_id TEXT PRIMARY KEY);
"""
_LOOKUP_BATCH = 500  # SQLite's default limit on bound variables is 999


class JobState:
    """Per-document hashes and the job fingerprint, committed atomically (SQLite WAL)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise IndexFormatError(f"job state {self.path} is not a readable SQLite file ({exc}); "
                                   "delete it to re-index from scratch") from exc

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    # -- fingerprint ---------------------------------------------------------------------------
    def check_fingerprint(self, fingerprint: dict) -> None:
        """Record the fingerprint on first use; refuse to continue an index built differently."""
        text = json.dumps(fingerprint, sort_keys=True)
        row = self._db.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('fingerprint', ?)", (text,))
            return
        if row[0] != text:
            raise InvalidInputError(
                f"this index was built with different encoder/chunking settings:\n  index: {row[0]}\n"
                f"  now:   {text}\nuse the same settings, or a new index path to re-index from scratch"
            )

    # -- documents ------------------------------------------------------------------------------
    def lookup(self, doc_ids: list[str]) -> dict[str, tuple[str, int]]:
        """``doc_id -> (content_hash, n_chunks)`` for the ids that are indexed."""
        found: dict[str, tuple[str, int]] = {}
        for start in range(0, len(doc_ids), _LOOKUP_BATCH):
            part = doc_ids[start:start + _LOOKUP_BATCH]
            marks = ",".join("?" * len(part))
            for doc_id, digest, n_chunks in self._db.execute(
                f"SELECT doc_id, content_hash, n_chunks FROM docs WHERE doc_id IN ({marks})", part
            ):
                found[doc_id] = (digest, n_chunks)
        return found

    def commit_docs(self, rows: Iterable[tuple[str, str, int, int]]) -> None:
        """Record ``(doc_id, content_hash, n_chunks, n_tokens)`` rows in one transaction."""
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO docs VALUES (?, ?, ?, ?)", list(rows))

    def forget_docs(self, doc_ids: list[str]) -> None:
        """Drop documents (after they were deleted from the index)."""
        with self._transaction():
            self._db.executemany("DELETE FROM docs WHERE doc_id = ?", [(d,) for d in doc_ids])

    def count(self) -> int:
        """Documents recorded as indexed."""
        return self._db.execute("SELECT COUNT(*) FROM docs").fetchone()[0]

    def totals(self) -> tuple[int, int, int]:
        """``(documents, chunks, tokens)`` recorded as indexed."""
        docs, chunks, tokens = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(n_chunks), 0), COALESCE(SUM(n_tokens), 0) FROM docs").fetchone()
        return docs, chunks, tokens

    def done_keys(self) -> np.ndarray:
        """Sorted 16-byte keys of every indexed ``(doc_id, content_hash)`` (shipped to Ray workers)."""
        keys = [doc_key(doc_id, digest) for doc_id, digest in
                self._db.execute("SELECT doc_id, content_hash FROM docs")]
        return np.sort(np.array(keys, dtype="S16")) if keys else np.zeros(0, dtype="S16")

    # -- per-run bookkeeping ----------------------------------------------------------------------
    def start_run(self) -> None:
        """Forget which documents the previous run saw."""
        with self._transaction():
            self._db.execute("DELETE FROM seen")

    def mark_seen(self, doc_ids: list[str]) -> None:
        """Record that the source yielded these ids in this run; a repeated id is an error."""
        try:
            with self._transaction():
                self._db.executemany("INSERT INTO seen VALUES (?)", [(d,) for d in doc_ids])
        except sqlite3.IntegrityError:
            dup = _first_duplicate(doc_ids, self._db)
            raise InvalidInputError(
                f"document id {dup!r} occurs more than once in the source; ids must be unique "
                "(each id is one document in the index)") from None

    def unseen(self, batch: int = 10_000) -> Iterator[list[str]]:
        """Indexed document ids the source did not yield this run, in batches."""
        cursor = self._db.execute(
            "SELECT doc_id FROM docs WHERE doc_id NOT IN (SELECT doc_id FROM seen) ORDER BY doc_id")
        while rows := cursor.fetchmany(batch):
            yield [r[0] for r in rows]

    def all_ids(self) -> Iterator[str]:
        """Every indexed document id."""
        for (doc_id,) in self._db.execute("SELECT doc_id FROM docs"):
            yield doc_id

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def doc_key(doc_id: str, digest: str) -> bytes:
    """16-byte key of one (document, content) pair."""
    import hashlib

    return hashlib.blake2b(f"{doc_id}\x1f{digest}".encode(), digest_size=16).digest()


def _first_duplicate(doc_ids: list[str], db: sqlite3.Connection) -> str:
    seen: set[str] = set()
    for doc_id in doc_ids:
        if doc_id in seen:
            return doc_id
        seen.add(doc_id)
    for doc_id in doc_ids:
        if db.execute("SELECT 1 FROM seen WHERE doc_id = ?", (doc_id,)).fetchone():
            return doc_id
    return doc_ids[0]
