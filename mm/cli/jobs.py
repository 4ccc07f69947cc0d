"""The job side of ``mm index build/add/sync``: run the indexing job and print its summary.

``mm index build``, ``add`` and ``sync`` (in :mod:`mm.cli.search`) turn their options into one
:class:`mm.index.IndexOptions` and hand it to :func:`run_job`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def run_job(verb: str, source: Path, index: Path, options: Any, as_json: bool) -> None:
    """Run :func:`mm.index.build_job` and print the summary (a table, or JSON with ``as_json``)."""
    from mm.index.jobs import build_job

    report = build_job(source, index, options)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
        return
    print_summary(report, index, verb)


def headline(report: Any, index: Path, verb: str) -> str:
    """The first line of the summary."""
    skipped = f", {report.skipped} malformed record(s) skipped" if report.skipped else ""
    if report.dry_run:
        return (f"dry run: would encode {report.docs_encoded} documents ({report.chunks} chunks, "
                f"{report.tokens} tokens); {report.docs_unchanged} unchanged, {report.docs_deleted} to delete"
                f"{skipped} -> {index}")
    if verb == "build":
        return f"indexed {report.docs_encoded} documents ({report.chunks} chunks) in {report.seconds:.1f} s{skipped} -> {index}"
    deleted = f", {report.docs_deleted} deleted" if verb == "sync" else ""
    return (f"{'added' if verb == 'add' else 'synced'}: {report.docs_new} new, {report.docs_changed} changed "
            f"({report.chunks} chunks encoded), {report.docs_unchanged} unchanged{deleted} in "
            f"{report.seconds:.1f} s{skipped} -> {index}")


def print_summary(report: Any, index: Path, verb: str = "build") -> None:
    """The end-of-job summary: documents, chunks, tokens, time, throughput, index size."""
    from rich.console import Console
    from rich.table import Table

    typer.echo(headline(report, index, verb))
    for where in report.skipped_where[:20]:
        typer.echo(f"  skipped {where}", err=True)
    if len(report.skipped_where) > 20:
        typer.echo(f"  ... and {len(report.skipped_where) - 20} more", err=True)
    table = Table(show_header=False, box=None)
    threads = report.extra.get("threads_per_worker")
    rows = [("engine", report.engine + (f" ({report.workers} workers x {threads} threads)" if threads else "")),
            ("documents", f"{report.docs_seen:,} in the corpus: {report.docs_new:,} new, {report.docs_changed:,} "
                          f"changed, {report.docs_unchanged:,} unchanged, {report.docs_deleted:,} deleted"),
            ("chunks / tokens", f"{report.chunks:,} / {report.tokens:,}"),
            ("time", f"{report.seconds:.1f} s")]
    if not report.dry_run:
        rows += [("throughput", f"{report.docs_per_s:,.1f} docs/s, {report.tokens_per_s:,.0f} tokens/s"),
                 ("index", f"{report.index_docs:,} documents, {report.index_chunks:,} chunks, "
                           f"{report.index_bytes / 2**20:,.1f} MiB")]
    for key, value in rows:
        table.add_row(key, value)
    Console().print(table)
