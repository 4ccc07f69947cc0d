"""``mm index build``: the batch indexing job on the command line (local processes or Ray).

The command group ``mm index`` belongs to the search CLI; :func:`register_build` adds the
``build`` command to it, so both features share one ``mm index`` namespace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register_build(group: typer.Typer) -> None:
    """Add the ``build`` command to the ``mm index`` group."""
    group.command("build")(index_build)


def index_build(
    corpus: Annotated[Path, typer.Argument(help="corpus: BEIR corpus.jsonl, .jsonl/.csv/.parquet with id+text, "
                                                "or a folder of .txt/.md files")],
    index: Annotated[Path, typer.Argument(help="index folder (created if missing, updated incrementally)")],
    model: Annotated[str, typer.Option("--model", "-m", help="encoder: 'minilm' (offline default) or a "
                                                             "model folder")] = "minilm",
    engine: Annotated[str, typer.Option(help="local (processes on this machine) or ray")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="'auto' or HOST:PORT of a running Ray cluster; "
                                                         "default: a private Ray on 127.0.0.1")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="encoder processes / Ray actors (default: cores)")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads per worker "
                                                            "(default: cores / workers)")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="chunks per encoder call")] = 32,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="chunk size in tokens (default: the encoder's "
                                                               "limit)")] = None,
    overlap: Annotated[int, typer.Option(min=0, help="tokens shared by consecutive chunks")] = 32,
    segment_docs: Annotated[int, typer.Option(min=1, help="documents per index commit / checkpoint")] = 1024,
    prune: Annotated[bool, typer.Option(help="delete indexed documents that are no longer in the corpus")] = False,
    resume: Annotated[bool, typer.Option("--resume/--fresh", help="continue from the checkpoint, or delete the "
                                                                  "index and start over")] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report what would be done; write nothing")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="live progress bar")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Index a corpus: streaming, chunked, length-sorted batches; resumable and incremental."""
    import json

    from mm.index.jobs import build_job

    report = build_job(corpus, index, encoder=model, engine=engine, workers=workers, threads=threads,
                       ray_address=ray_address, batch_size=batch_size, max_tokens=max_tokens, overlap=overlap,
                       segment_docs=segment_docs, prune=prune, resume=resume, dry_run=dry_run, progress=progress)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    print_summary(report)


def print_summary(report) -> None:
    """The end-of-job table: documents, chunks, tokens, time, throughput, index size."""
    from rich.console import Console
    from rich.table import Table

    title = "dry run: what the job would do" if report.dry_run else "indexing job summary"
    table = Table(title=title, show_header=False)
    rows = [
        ("engine", f"{report.engine} ({report.workers} workers x {report.extra.get('threads_per_worker', '?')} "
                   f"threads)" if not report.dry_run else report.engine),
        ("documents in source", f"{report.docs_seen:,}"),
        ("new / changed / unchanged", f"{report.docs_new:,} / {report.docs_changed:,} / {report.docs_unchanged:,}"),
        ("deleted (pruned)", f"{report.docs_deleted:,}"),
        ("chunks" + (" to encode" if report.dry_run else " encoded"), f"{report.chunks:,}"),
        ("tokens" + (" to encode" if report.dry_run else " encoded"), f"{report.tokens:,}"),
        ("time", f"{report.seconds:.1f} s"),
    ]
    if not report.dry_run:
        rows += [("throughput", f"{report.docs_per_s:,.1f} docs/s, {report.tokens_per_s:,.0f} tokens/s"),
                 ("index", f"{report.index_docs:,} documents, {report.index_chunks:,} chunks, "
                           f"{report.index_bytes / 2**20:,.1f} MiB")]
    for key, value in rows:
        table.add_row(key, value)
    Console().print(table)
