"""Stage 4 of a job: prune documents that left the source, warn about truncation, fill the report's totals."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mm.index.jobs.options import JobReport

log = logging.getLogger(__name__)


def prune(writer: Any, seen: set[str], report: JobReport, batch: int = 10_000) -> None:
    """Delete every indexed document the source did not yield in this run (one commit per ``batch``)."""
    gone = writer.documents_not_in(seen)
    for start in range(0, len(gone), batch):
        deleted, _ = writer.delete_documents(gone[start:start + batch])
        report.docs_deleted += deleted


def warn_truncated(report: JobReport, window: int) -> None:
    if report.docs_truncated:
        log.warning("%d of %d documents are longer than the encoder's %d-token window and were truncated "
                    "(long_docs='truncate'; use 'chunk' to index every window)", report.docs_truncated,
                    report.docs_encoded, window)


def fill_totals(report: JobReport, writer: Any, index_path: Path) -> None:
    """Documents, entries and bytes of the index after the job."""
    if writer is not None:
        report.index_docs, report.index_chunks = writer.totals()
    report.index_bytes = folder_bytes(index_path)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0
