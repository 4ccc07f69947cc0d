"""The job side of ``mm index build``: run :func:`mm.index.build_job` and print its summary.

``mm index build`` (in :mod:`mm.cli.search`) takes the corpus/model options shared with the other
``mm index`` commands and the job options (``--engine``, ``--ray-address``, ``--workers``,
``--resume``, ``--dry-run``, ``--prune``), and hands everything to :func:`run_build`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def run_build(source: Path, index: Path, *, as_json: bool = False, progress: bool = True, **options: Any) -> None:
    """Run the indexing job and print the summary (a table, or JSON with ``as_json``)."""
    from mm.index.jobs import build_job

    report = build_job(source, index, progress=progress and not as_json, **options)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
        return
    print_summary(report, index)


def print_summary(report: Any, index: Path) -> None:
    """The end-of-job summary: documents, chunks, tokens, time, throughput, index size."""
    from rich.console import Console
    from rich.table import Table

    skipped = f", {report.skipped} malformed record(s) skipped" if report.skipped else ""
    if report.dry_run:
        typer.echo(f"dry run: would encode {report.docs_encoded} documents ({report.chunks} chunks, "
                   f"{report.tokens} tokens); {report.docs_unchanged} unchanged{skipped} -> {index}")
    else:
        typer.echo(f"indexed {report.docs_encoded} documents ({report.chunks} chunks) in {report.seconds:.1f} s"
                   f"{skipped} -> {index}")
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
