"""Stage 0 of a job: the corpus source, read the same way locally (streaming) and by Ray Data.

Formats are those of :class:`mm.corpus.CorpusReader` (BEIR ``corpus.jsonl``; jsonl/csv/tsv/parquet
with id and text columns; a folder of ``.txt``/``.md`` files), and every raw record goes through
that reader's record rules (title before the text, other columns as metadata, malformed records
an error or, with ``skip_bad``, skipped), whether it was read here or by a Ray worker — so both
engines and ``mm index build`` see exactly the same documents.

>>> import json, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "corpus.jsonl"
>>> _ = path.write_text(json.dumps({"_id": "1", "title": "T", "text": "hello"}) + "\\n")
>>> [(d.id, d.text) for d in FileSource(path)], FileSource(path).count()
([('1', 'T hello')], 1)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mm.corpus import Document

log = logging.getLogger(__name__)


class FileSource:
    """A corpus file (or folder) streamed document by document."""

    def __init__(self, path: str | Path, *, skip_bad: bool = False, id_field: str | None = None,
                 text_field: str | None = None) -> None:
        from mm.corpus import CorpusReader

        self.path = Path(path).expanduser().resolve()
        self.skip_bad, self.id_field, self.text_field = skip_bad, id_field, text_field
        self._reader_check = CorpusReader(self.path)  # validates the path and the file type now
        self.skipped: list[Any] = []
        suffix = self.path.suffix.lower()
        self.format = "folder" if self.path.is_dir() else {".ndjson": "jsonl", ".json": "jsonl", ".tsv": "csv"}.get(
            suffix, suffix.lstrip("."))

    def __repr__(self) -> str:
        return f"FileSource({str(self.path)!r}, format={self.format!r})"

    def reader(self) -> Any:
        """A fresh :class:`mm.corpus.CorpusReader` with this source's settings."""
        from mm.corpus import CorpusReader

        return CorpusReader(self.path, skip_bad=self.skip_bad, id_field=self.id_field, text_field=self.text_field)

    # -- local streaming ------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Document]:
        reader = self.reader()
        self.skipped = reader.skipped  # malformed records skipped under skip_bad (where, reason)
        for doc in reader:
            self.skipped = reader.skipped
            yield doc
        self.skipped = reader.skipped

    def count(self) -> int:
        """Number of records (a fast pass without parsing, for the progress bar's ETA)."""
        if self.format == "folder":
            return sum(1 for p in self.path.rglob("*") if p.is_file() and p.suffix.lower() in (".txt", ".md"))
        if self.format == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(self.path).metadata.num_rows
        with self.path.open("rb") as fh:
            lines = sum(1 for line in fh if line.strip())
        return max(0, lines - 1) if self.format == "csv" else lines

    def bytes_per_doc(self) -> int:
        """Average size of one document on disk (sizes Ray's read blocks)."""
        if self.format == "folder":
            total = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        else:
            total = self.path.stat().st_size
        return max(1, total // max(1, self.count()))

    # -- Ray Data -----------------------------------------------------------------------------
    def ray_dataset(self, read_cpus: float = 0.0) -> Any:
        """A Ray Dataset of raw records; workers read the files (they must see the same path)."""
        import ray.data

        path = str(self.path)
        if self.format == "jsonl":  # raw lines: parsed by the same record rules as locally
            return ray.data.read_text(path, drop_empty_lines=True, num_cpus=read_cpus)
        if self.format == "csv":
            import csv

            import pyarrow.csv as pacsv

            delimiter = "\t" if self.path.suffix.lower() == ".tsv" else ","
            with self.path.open(newline="", encoding="utf-8") as fh:
                names = [h.strip().lstrip("\ufeff") for h in next(csv.reader(fh, delimiter=delimiter))]
            return ray.data.read_csv(path, num_cpus=read_cpus,
                                     parse_options=pacsv.ParseOptions(delimiter=delimiter),
                                     read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
                                     convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names,
                                                                                                      "string")))
        if self.format == "parquet":
            return ray.data.read_parquet(path, num_cpus=read_cpus)
        files = sorted(str(p) for p in self.path.rglob("*") if p.is_file() and p.suffix.lower() in (".txt", ".md"))
        return ray.data.read_binary_files(files, include_paths=True, num_cpus=read_cpus)

    def ray_documents(self, batch: dict[str, Any]) -> tuple[list[Document], list[str]]:
        """Documents of one Ray batch (from :meth:`ray_dataset`), through the corpus record rules.

        Also returns ``"where: reason"`` of the records skipped under ``skip_bad``.
        """
        reader = self.reader()
        names = list(batch)
        n = len(batch[names[0]]) if names else 0
        docs = []
        for i in range(n):
            row = {k: _plain(batch[k][i]) for k in names}
            doc = self._record(reader, row)
            if doc is not None:
                docs.append(doc)
        return docs, [f"{s.where}: {s.reason}" for s in reader.skipped]

    def _record(self, reader: Any, row: dict[str, Any]) -> Any:
        where = f"{self.path} (read by Ray)"
        if self.format == "jsonl":
            try:
                record = json.loads(row["text"])
            except json.JSONDecodeError as exc:
                reader._bad(where, f"invalid JSON ({exc.msg} at column {exc.colno})")
                return None
            return reader._record(record, where)
        if self.format == "folder":
            rel = Path(row["path"]).relative_to(self.path).as_posix()
            try:
                text = bytes(row["bytes"]).decode("utf-8")
            except UnicodeDecodeError as exc:
                reader._bad(f"{self.path / rel}", f"invalid UTF-8 ({exc.reason} at byte {exc.start})")
                return None
            return reader._record({"id": rel, "text": text, "path": rel}, str(self.path / rel))
        return reader._record(row, where)


def _plain(value: Any) -> Any:
    """numpy scalars/arrays from a Ray batch -> plain Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value
