"""File sources for indexing jobs, read the same way locally (streaming) and by Ray Data.

Formats: ``jsonl`` (BEIR ``corpus.jsonl`` with ``_id``/``title``/``text``, or any rows with an
id and a text field), ``csv``, ``parquet``, and a folder of ``.txt``/``.md`` files (the id is
the path relative to the folder). Both readers turn a raw row into a
:class:`~mm.index.job_types.Document` with :meth:`FileSource.to_document`, so the local and
the Ray engine see exactly the same documents.

>>> import json, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "corpus.jsonl"
>>> _ = path.write_text(json.dumps({"_id": "1", "title": "T", "text": "hello"}) + "\\n")
>>> [d.id for d in FileSource(path)], FileSource(path).count()
(['1'], 1)
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mm.index.job_types import Document

from mm.errors import InvalidInputError

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "csv", "parquet", "folder")
_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
_TEXT_SUFFIXES = (".txt", ".md")
ID_FIELDS = ("_id", "id", "doc_id", "docid")
TEXT_FIELDS = ("text", "contents", "content", "body")
TITLE_FIELDS = ("title",)


class FileSource:
    """A corpus file (or folder) streamed document by document."""

    def __init__(self, path: str | Path, format: str | None = None, *, id_field: str | None = None,
                 text_field: str | None = None, title_field: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InvalidInputError(f"corpus {self.path} does not exist")
        self.format = format or self._detect()
        if self.format not in FORMATS:
            raise InvalidInputError(f"unknown corpus format {self.format!r}; use one of {', '.join(FORMATS)}")
        self.id_field, self.text_field, self.title_field = id_field, text_field, title_field

    def __repr__(self) -> str:
        return f"FileSource({str(self.path)!r}, format={self.format!r})"

    def describe(self) -> dict:
        return {"path": str(self.path.resolve()), "format": self.format}

    def _detect(self) -> str:
        if self.path.is_dir():
            return "folder"
        fmt = _SUFFIXES.get(self.path.suffix.lower())
        if fmt is None:
            raise InvalidInputError(f"cannot tell the format of {self.path} from its suffix; pass format= "
                                    f"(one of {', '.join(FORMATS)})")
        return fmt

    # -- one row -> one Document (shared by both engines) ---------------------------------------
    def to_document(self, row: dict[str, Any], where: str = "") -> Document:
        """Normalise a raw row (``id``/``_id``, ``text``, optional ``title`` and ``metadata``)."""
        doc_id = _pick(row, self.id_field, ID_FIELDS)
        text = _pick(row, self.text_field, TEXT_FIELDS)
        if doc_id is None or text is None:
            raise InvalidInputError(
                f"{self.path}{where}: a row needs an id field ({self.id_field or ' / '.join(ID_FIELDS)}) and "
                f"a text field ({self.text_field or ' / '.join(TEXT_FIELDS)}); got fields {sorted(row)}")
        title = _pick(row, self.title_field, TITLE_FIELDS) or ""
        meta = row.get("metadata") or {}
        if isinstance(meta, str):
            meta = json.loads(meta) if meta else {}
        if not isinstance(meta, dict):
            raise InvalidInputError(f"{self.path}{where}: 'metadata' must be an object, got {type(meta).__name__}")
        doc_id = str(doc_id)
        if not doc_id:
            raise InvalidInputError(f"{self.path}{where}: empty document id")
        return Document(doc_id, str(text), str(title), meta)

    # -- local streaming ------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Document]:
        if self.format == "jsonl":
            yield from self._iter_jsonl()
        elif self.format == "csv":
            with self.path.open(newline="", encoding="utf-8") as fh:
                for n, row in enumerate(csv.DictReader(fh), start=2):
                    yield self.to_document(row, f" line {n}")
        elif self.format == "parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(self.path).iter_batches(batch_size=1024):
                for row in batch.to_pylist():
                    yield self.to_document(row)
        else:
            for file in self._folder_files():
                yield Document(str(file.relative_to(self.path)), file.read_text(encoding="utf-8"))

    def _iter_jsonl(self) -> Iterator[Document]:
        with self.path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InvalidInputError(f"{self.path} line {n} is not valid JSON: {exc}") from None
                if not isinstance(row, dict):
                    raise InvalidInputError(f"{self.path} line {n}: expected a JSON object")
                yield self.to_document(row, f" line {n}")

    def _folder_files(self) -> list[Path]:
        files = sorted(p for p in self.path.rglob("*") if p.is_file() and p.suffix.lower() in _TEXT_SUFFIXES)
        if not files:
            raise InvalidInputError(f"folder {self.path} has no .txt or .md files")
        return files

    def count(self) -> int:
        """Number of documents (a fast pass without parsing, for progress bars)."""
        if self.format == "jsonl":
            with self.path.open("rb") as fh:
                return sum(1 for line in fh if line.strip())
        if self.format == "csv":
            with self.path.open(newline="", encoding="utf-8") as fh:
                return sum(1 for _ in csv.DictReader(fh))
        if self.format == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(self.path).metadata.num_rows
        return len(self._folder_files())

    def bytes_per_doc(self) -> int:
        """Average size of one document on disk (sizes Ray's read blocks)."""
        files = self._folder_files() if self.format == "folder" else [self.path]
        total = sum(f.stat().st_size for f in files)
        return max(1, total // max(1, self.count()))

    # -- Ray Data -----------------------------------------------------------------------------
    def ray_dataset(self, read_cpus: float = 0.0) -> Any:
        """A Ray Dataset of raw rows; workers read the files (they must see the same path)."""
        import ray.data

        args = {"num_cpus": read_cpus}
        path = str(self.path.resolve())
        if self.format == "jsonl":
            return ray.data.read_json(path, lines=True, **args)
        if self.format == "csv":
            import pyarrow.csv as pacsv

            # read every column as text, as the local csv reader does
            names = next(csv.reader(self.path.open(newline="", encoding="utf-8")))
            opts = pacsv.ConvertOptions(column_types=dict.fromkeys(names, "string"))
            return ray.data.read_csv(path, convert_options=opts, **args)
        if self.format == "parquet":
            return ray.data.read_parquet(path, **args)
        files = [str(p) for p in self._folder_files()]
        return ray.data.read_binary_files(files, include_paths=True, **args)

    def ray_row_to_document(self, row: dict[str, Any]) -> Document:
        """Turn a Ray Data row (from :meth:`ray_dataset`) into a Document."""
        if self.format == "folder":
            rel = str(Path(row["path"]).relative_to(self.path.resolve()))
            return Document(rel, bytes(row["bytes"]).decode("utf-8"))
        return self.to_document({k: _plain(v) for k, v in row.items()})


def _pick(row: dict[str, Any], explicit: str | None, candidates: tuple[str, ...]) -> Any:
    if explicit is not None:
        return row.get(explicit)
    for name in candidates:
        value = row.get(name)
        if value is not None:
            return value
    return None


def _plain(value: Any) -> Any:
    """numpy scalars/objects from a Ray batch -> plain Python values."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value
