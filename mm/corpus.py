"""Read a document collection: BEIR ``corpus.jsonl``, any jsonl/csv/parquet with id and text columns, or a
folder of ``.txt``/``.md`` files.

Documents stream out one at a time as :class:`Document` (id, text, metadata). A BEIR ``title``
is put before the text (``"title text"``, as BEIR's own encoders do) and also kept in the
metadata; every other column becomes metadata. A malformed record (invalid JSON, missing id or
text, a duplicate id, invalid UTF-8) stops the reading with a :class:`CorpusError` naming the
file and line, unless ``skip_bad=True``: then it is logged, counted in ``reader.skipped`` and
skipped.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "corpus.jsonl"
>>> _ = path.write_text('{"_id": "d1", "title": "Paris", "text": "Capital of France."}\\n{"_id": "d2"}\\n')
>>> [d.text for d in CorpusReader(path, skip_bad=True)]
['Paris Capital of France.']
>>> list(CorpusReader(path))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
mm.corpus.CorpusError: ...corpus.jsonl:2: record has no text (expected a 'text' or ...
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm.errors import InvalidInputError
from mm.validation import MAX_JSON_DEPTH, find_surrogate, json_depth_ok

log = logging.getLogger(__name__)

ID_FIELDS = ("_id", "id", "doc_id", "docid", "document_id")
TEXT_FIELDS = ("text", "contents", "content", "body", "document")
TITLE_FIELDS = ("title",)
TEXT_SUFFIXES = (".txt", ".md")
TABLE_SUFFIXES = (".jsonl", ".json", ".ndjson", ".csv", ".tsv", ".parquet")


class CorpusError(InvalidInputError):
    """A corpus file (or one of its records) is malformed."""


@dataclass(frozen=True)
class Document:
    """One document of a corpus."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Skipped:
    """A record skipped under ``skip_bad``: where it was and why."""

    where: str
    reason: str


class CorpusReader:
    """Iterate the documents of ``source`` (a file or a folder).

    ``text_field``/``id_field`` name the columns when they are not among the usual names.
    """

    def __init__(self, source: str | Path, *, skip_bad: bool = False, id_field: str | None = None,
                 text_field: str | None = None) -> None:
        self.source = Path(source).expanduser()
        if not self.source.exists():
            raise CorpusError(f"corpus {str(self.source)!r} does not exist; pass a corpus.jsonl, a jsonl/csv/"
                              f"parquet file with id and text columns, or a folder of .txt/.md files")
        if self.source.is_file() and self.source.suffix.lower() not in TABLE_SUFFIXES:
            raise CorpusError(f"unsupported corpus file type {self.source.suffix!r} ({self.source}); expected one "
                              f"of {', '.join(TABLE_SUFFIXES)} or a folder of .txt/.md files")
        self.skip_bad = skip_bad
        self.id_fields = (id_field,) if id_field else ID_FIELDS
        self.text_fields = (text_field,) if text_field else TEXT_FIELDS
        self.skipped: list[Skipped] = []
        self._seen: set[str] = set()

    def __iter__(self) -> Iterator[Document]:
        self.skipped = []
        self._seen = set()
        if self.source.is_dir():
            yield from self._folder()
            return
        suffix = self.source.suffix.lower()
        if suffix in (".jsonl", ".ndjson", ".json"):
            yield from self._jsonl()
        elif suffix in (".csv", ".tsv"):
            yield from self._csv(delimiter="\t" if suffix == ".tsv" else ",")
        else:
            yield from self._parquet()

    def read_all(self) -> list[Document]:
        """All documents as a list (after which ``skipped`` is complete)."""
        return list(self)

    # -- record handling ------------------------------------------------------------------------
    def _bad(self, where: str, reason: str) -> None:
        if not self.skip_bad:
            raise CorpusError(f"{where}: {reason}. Fix the record, or pass --skip-bad (skip_bad=True) to skip "
                              f"malformed records")
        log.warning("skipping %s: %s", where, reason)
        self.skipped.append(Skipped(where, reason))

    def _record(self, record: Any, where: str) -> Document | None:
        if not isinstance(record, dict):
            self._bad(where, f"record is a {type(record).__name__}, expected an object with id and text fields")
            return None
        doc_id = next((record[k] for k in self.id_fields if record.get(k) not in (None, "")), None)
        if doc_id is None:
            self._bad(where, f"record has no id (expected a {' or '.join(map(repr, self.id_fields))} field)")
            return None
        if not isinstance(doc_id, str | int) or isinstance(doc_id, bool):
            self._bad(where, f"id {doc_id!r} must be a string or an integer")
            return None
        doc_id = str(doc_id)
        if find_surrogate(doc_id) >= 0:
            self._bad(where, f"id {doc_id!r} is not valid Unicode (it holds a lone surrogate)")
            return None
        text_key = next((k for k in self.text_fields if k in record and record[k] is not None), None)
        if text_key is None:
            self._bad(where, f"record has no text (expected a {' or '.join(map(repr, self.text_fields))} field)")
            return None
        body = record[text_key]
        title = next((record[k] for k in TITLE_FIELDS if isinstance(record.get(k), str)), "")
        if not isinstance(body, str):
            self._bad(where, f"text of {doc_id!r} is a {type(body).__name__}, expected a string")
            return None
        text = f"{title} {body}".strip() if title else body.strip()
        if find_surrogate(text) >= 0:
            self._bad(where, f"text of {doc_id!r} is not valid Unicode (it holds a lone surrogate at character "
                             f"{find_surrogate(text)})")
            return None
        if not text:
            self._bad(where, f"document {doc_id!r} has empty text")
            return None
        if doc_id in self._seen:
            self._bad(where, f"duplicate id {doc_id!r}")
            return None
        self._seen.add(doc_id)
        used = {text_key, *self.id_fields}
        metadata = {k: v for k, v in record.items() if k not in used and v is not None}
        nested = metadata.pop("metadata", None)
        if isinstance(nested, dict):
            metadata = {**nested, **metadata}
        metadata = _jsonable(metadata)
        problem = _metadata_problem(metadata)
        if problem:
            self._bad(where, f"metadata of {doc_id!r} {problem}")
            return None
        return Document(doc_id, text, metadata)

    # -- formats --------------------------------------------------------------------------------
    def _lines(self) -> Iterator[tuple[int, str | None]]:
        """(line number, decoded line or None when it is not valid UTF-8)."""
        with self.source.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    yield number, raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    self._bad(f"{self.source}:{number}", f"invalid UTF-8 ({exc.reason} at byte {exc.start})")
                    yield number, None

    def _jsonl(self) -> Iterator[Document]:
        for number, line in self._lines():
            if line is None or not line.strip():
                continue
            where = f"{self.source}:{number}"
            try:
                record = parse_json_record(line)
            except CorpusError as exc:
                self._bad(where, str(exc))
                continue
            doc = self._record(record, where)
            if doc is not None:
                yield doc

    def _csv(self, delimiter: str) -> Iterator[Document]:
        numbers: list[int] = []

        def good_lines() -> Iterator[str]:
            for number, line in self._lines():
                if line is not None:
                    numbers.append(number)
                    yield line

        reader = csv.reader(good_lines(), delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise CorpusError(f"{self.source}:1: unreadable header ({exc})") from exc
        header = [h.strip().lstrip("\ufeff") for h in header]
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                self._bad(f"{self.source}:{numbers[-1] if numbers else '?'}", f"malformed CSV ({exc})")
                continue
            where = f"{self.source}:{numbers[-1]}"
            if not row:
                continue
            if len(row) != len(header):
                self._bad(where, f"row has {len(row)} fields, the header has {len(header)}")
                continue
            doc = self._record(dict(zip(header, row, strict=True)), where)
            if doc is not None:
                yield doc

    def _parquet(self) -> Iterator[Document]:
        from mm.errors import require

        pq = require("pyarrow.parquet", "search")
        try:
            table = pq.ParquetFile(str(self.source))
        except Exception as exc:
            raise CorpusError(f"{self.source} is not a readable parquet file ({exc})") from exc
        row_number = 0
        batches = table.iter_batches(batch_size=1024)
        while True:
            try:  # a damaged page fails here, mid-file (pyarrow raises ArrowInvalid, OSError, ...)
                batch = next(batches)
                records = batch.to_pylist()
            except StopIteration:
                break
            except Exception as exc:
                raise CorpusError(f"{self.source}: parquet data after row {row_number} cannot be read ({exc}); "
                                  f"the file is damaged: rewrite it from its source") from exc
            for record in records:
                row_number += 1
                doc = self._record(record, f"{self.source}:row {row_number}")
                if doc is not None:
                    yield doc

    def _folder(self) -> Iterator[Document]:
        files = sorted(p for p in self.source.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise CorpusError(f"folder {self.source} holds no .txt or .md files")
        for path in files:
            rel = path.relative_to(self.source).as_posix()
            try:
                text = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError as exc:
                line = path.read_bytes()[:exc.start].count(b"\n") + 1
                self._bad(f"{path}:{line}", f"invalid UTF-8 ({exc.reason} at byte {exc.start})")
                continue
            doc = self._record({"id": rel, "text": text, "path": rel}, str(path))
            if doc is not None:
                yield doc


def parse_json_record(line: str) -> Any:
    """Parse one JSON record; anything JSON cannot safely hold raises :class:`CorpusError`.

    Refused: invalid JSON, nesting deeper than :data:`mm.validation.MAX_JSON_DEPTH`, integers with more
    digits than Python converts (4300), and the non-standard NaN/Infinity constants.

    >>> parse_json_record('{"a": 1}')
    {'a': 1}
    >>> parse_json_record("[" * 100 + "]" * 100)
    Traceback (most recent call last):
    ...
    mm.corpus.CorpusError: JSON nested deeper than 64 levels
    >>> parse_json_record('{"n": NaN}')
    Traceback (most recent call last):
    ...
    mm.corpus.CorpusError: invalid JSON (NaN is not a JSON number)
    """
    if not json_depth_ok(line):
        raise CorpusError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")

    def constant(name: str) -> Any:
        raise CorpusError(f"invalid JSON ({name} is not a JSON number)")

    try:
        return json.loads(line, parse_constant=constant)
    except CorpusError:
        raise
    except json.JSONDecodeError as exc:
        raise CorpusError(f"invalid JSON ({exc.msg} at column {exc.colno})") from exc
    except (ValueError, RecursionError) as exc:  # e.g. an integer with more than 4300 digits
        raise CorpusError(f"invalid JSON ({str(exc)[:120]})") from exc


def _metadata_problem(metadata: dict[str, Any]) -> str:
    """Why ``metadata`` cannot be stored (lone surrogates, NaN/inf floats, too deep), or ''."""
    try:
        text = json.dumps(metadata, ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        return f"cannot be stored as JSON ({exc})"
    except RecursionError:
        return "is nested too deeply"
    if find_surrogate(text) >= 0:
        return "is not valid Unicode (it holds a lone surrogate)"
    if not json_depth_ok(text):
        return f"is nested deeper than {MAX_JSON_DEPTH} levels"
    return ""


def _jsonable(value: Any) -> Any:
    """Metadata as plain JSON values (other objects become strings)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def read_queries(path: str | Path) -> list[tuple[str, str]]:
    """(query id, text) pairs from a BEIR ``queries.jsonl`` (``_id``/``text``) or any corpus-like file.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "q.jsonl"
    >>> _ = p.write_text('{"_id": "q1", "text": "where is Paris?"}\\n')
    >>> read_queries(p)
    [('q1', 'where is Paris?')]
    """
    reader = CorpusReader(path)
    queries = [(doc.id, doc.text) for doc in reader]
    if not queries:
        raise CorpusError(f"{path} holds no queries")
    return queries


__all__ = ["CorpusError", "CorpusReader", "Document", "Skipped", "read_queries"]
