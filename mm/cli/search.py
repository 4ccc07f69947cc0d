"""Search commands: ``mm index build/add/sync/delete/info/compact/upgrade`` and ``mm search``.

Heavy imports (torch, sentence-transformers, faiss) stay inside the command functions.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from mm.cli import app
from mm.errors import InvalidInputError
from mm.runtime import quiet_transformers_loading

index_app = typer.Typer(help="Build and maintain search indexes (LFM2-ColBERT multi-vector or dense).",
                        no_args_is_help=True)
app.add_typer(index_app, name="index")

IndexOpt = Annotated[Path, typer.Option("--index", "-i", help="Index folder")]
ModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", help="Hub id or local checkpoint folder (ColBERT or sentence-transformers); 'minilm' = the "
                          "bundled offline MiniLM. Default: LFM2-ColBERT-350M if available, else MiniLM")]


SkipBadOpt = Annotated[bool, typer.Option("--skip-bad", help="Log and skip malformed records")]
BatchDocsOpt = Annotated[int, typer.Option(min=1, help="Documents encoded and committed per batch (the commit "
                                                       "interval)")]
ThreadsOpt = Annotated[int | None, typer.Option(min=1, help="torch threads (per worker)")]
WorkersOpt = Annotated[int | None, typer.Option(min=1, help="encoder processes / Ray actors (default: one per "
                                                            "core; one in-process worker for small corpora)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as JSON")]


def _echo_json(data) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


@index_app.command("build")
def build(
    source: Annotated[Path, typer.Argument(help="corpus.jsonl (BEIR), a jsonl/csv/parquet file with id and text "
                                                "columns, or a folder of .txt/.md files")],
    index: IndexOpt,
    model: ModelOpt = None,
    kind: Annotated[str, typer.Option(help="auto, dense or multivector (per-token vectors of a dense "
                                           "model)")] = "auto",
    nbits: Annotated[int | None, typer.Option(help="multi-vector residual bits per dimension: 2 (default) "
                                                   "or 4")] = None,
    codec: Annotated[str | None, typer.Option(help="multi-vector residual codes: scalar (default; fast to train) "
                                                   "or pq (best recall per byte)")] = None,
    codec_from: Annotated[Path | None, typer.Option(
        "--codec-from", help="share the trained codec of this multi-vector index (same encoder): build a "
                             "corpus shard by shard, so their merged top k is one index's")] = None,
    skip_bad: SkipBadOpt = False,
    long_docs: Annotated[str, typer.Option(
        "--long-docs", help="Documents longer than the encoder's window: 'chunk' (overlapping windows, mapped "
                            "back to the document) or 'truncate' (the model's own truncation, logged)")] = "chunk",
    batch_docs: BatchDocsOpt = 1024,
    threads: ThreadsOpt = None,
    engine: Annotated[str, typer.Option(help="local (worker processes on this machine) or ray")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="'auto' or HOST:PORT of a running Ray cluster; "
                                                         "default: a private Ray on 127.0.0.1")] = None,
    workers: WorkersOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue a stopped build, or update the index: "
                                                          "encode what the index lacks or holds in another "
                                                          "version")] = False,
    prune: Annotated[bool, typer.Option("--prune", help="With --resume: delete documents no longer in the "
                                                        "corpus (= mm index sync)")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be done; write nothing")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build an index from a corpus (a resumable job: local processes or a Ray cluster)."""
    from mm.cli.jobs import run_job
    from mm.index.jobs import IndexOptions

    quiet_transformers_loading()
    options = IndexOptions(encoder=model, kind=kind, nbits=nbits, codec=codec, codec_from=codec_from,
                           skip_bad=skip_bad,
                           long_docs=long_docs, segment_docs=batch_docs, threads=threads, engine=engine,
                           ray_address=ray_address, workers=workers, resume=resume, prune=prune, dry_run=dry_run,
                           progress=not as_json)
    run_job("build", source, index, options, as_json)


@index_app.command("add")
def add(
    source: Annotated[Path, typer.Argument(help="Corpus to add (same formats as `mm index build`)")],
    index: IndexOpt,
    skip_bad: SkipBadOpt = False,
    batch_docs: BatchDocsOpt = 1024,
    threads: ThreadsOpt = None,
    workers: WorkersOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add documents to an index: new ones encoded, changed ones replaced, unchanged ones skipped."""
    _update("add", source, index, skip_bad, batch_docs, threads, workers, as_json)


@index_app.command("sync")
def sync(
    source: Annotated[Path, typer.Argument(help="The corpus the index must equal (same formats as build)")],
    index: IndexOpt,
    skip_bad: SkipBadOpt = False,
    batch_docs: BatchDocsOpt = 1024,
    threads: ThreadsOpt = None,
    workers: WorkersOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make an index equal to a corpus: add new, re-encode changed, delete what left it (build --resume --prune)."""
    _update("sync", source, index, skip_bad, batch_docs, threads, workers, as_json)


def _update(kind: str, source: Path, index: Path, skip_bad: bool, batch_docs: int, threads: int | None,
            workers: int | None, as_json: bool) -> None:
    """``add`` or ``sync`` an existing index with its own encoder and chunk policy (``sync`` also prunes)."""
    from mm.cli.jobs import run_job
    from mm.index.jobs import IndexOptions

    quiet_transformers_loading()
    options = IndexOptions(skip_bad=skip_bad, segment_docs=batch_docs, threads=threads, workers=workers,
                           resume=True, prune=kind == "sync", progress=not as_json)
    run_job(kind, source, index, options, as_json)


@index_app.command("delete")
def delete(
    ids: Annotated[list[str], typer.Argument(help="Document ids to delete (with all their chunks)")],
    index: IndexOpt,
) -> None:
    """Delete documents by id."""
    from mm.index import open_index
    from mm.index.writer import IndexWriter

    writer = IndexWriter.for_index(open_index(index))
    known = writer.known(ids)
    deleted, entries = writer.delete_documents(ids)
    typer.echo(f"deleted {deleted} document(s) ({entries} stored entries) from {index}")
    missing = [i for i in dict.fromkeys(ids) if i not in known]
    if missing:
        typer.echo(f"not in the index: {', '.join(missing[:20])}", err=True)


@index_app.command("info")
def info(
    index: IndexOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON")] = False,
) -> None:
    """Show an index's size, encoder and layout."""
    from mm.index import open_index

    data = open_index(index).info()
    if as_json:
        _echo_json(data)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("item", "value", show_header=False)
    for key, value in data.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.3f}"
        table.add_row(key, str(value))
    Console().print(table)


@index_app.command("compact")
def compact(index: IndexOpt) -> None:
    """Drop deleted rows and merge segments."""
    from mm.index import open_index

    result = open_index(index).compact()
    typer.echo(", ".join(f"{k}={v}" for k, v in result.items()))


@index_app.command("upgrade")
def upgrade(index: IndexOpt) -> None:
    """Convert an index written by an older mm to the current format in place (no re-encoding)."""
    from mm.index import upgrade_index

    result = upgrade_index(index)
    typer.echo(f"format {result['from']} -> {result['to']}: {result['segments']} segment(s) converted"
               if result["segments"] or result["from"] != result["to"] else f"already format {result['to']}")


def _parse_filters(items: list[str] | None) -> dict | None:
    """``["lang=en", "year=2020"]`` -> ``{"lang": "en", "year": 2020}`` (a JSON value, else a string)."""
    if not items:
        return None
    filters: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"--filter takes KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        filters[key.strip()] = value
    return filters


@app.command()
def search(
    query: Annotated[str | None, typer.Argument(help="The query text (or use --queries)")] = None,
    index: IndexOpt = Path("index"),
    k: Annotated[int, typer.Option("-k", "--k", help="Hits per query")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print hits as JSON")] = False,
    filters: Annotated[list[str] | None, typer.Option("--filter", "-f", help="Metadata filter KEY=VALUE "
                                                                             "(repeatable)")] = None,
    exact: Annotated[bool, typer.Option("--exact", help="Exhaustive scoring")] = False,
    hybrid: Annotated[bool, typer.Option("--hybrid", help="Fuse BM25 scores of the query text")] = False,
    queries: Annotated[Path | None, typer.Option("--queries", help="queries.jsonl (_id/text) to run in batch")] = None,
    run: Annotated[Path | None, typer.Option("--run", help="TREC run file to write (with --queries)")] = None,
    tag: Annotated[str, typer.Option(help="Run tag (last column of the TREC run)")] = "mm",
    model: ModelOpt = None,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads")] = None,
) -> None:
    """Search an index: one query, or a queries file written as a TREC run (qid Q0 docid rank score tag)."""
    import mm
    from mm.validation import check_output_file

    if (query is None) == (queries is None):
        raise InvalidInputError("give either a QUERY or --queries FILE (not both)")
    if run is not None and queries is None:
        raise InvalidInputError("--run needs --queries")
    if run is not None:
        run = check_output_file(run, "--run")
    if k <= 0:
        raise InvalidInputError(f"-k must be a positive integer, got {k}")
    quiet_transformers_loading()
    options = {"k": k, "filters": _parse_filters(filters), "exact": exact, "hybrid": hybrid}
    from mm.runtime import configure_torch

    configure_torch()  # the CLI owns the process: MM_NUM_THREADS or all cores
    pipe = mm.pipeline("search", model=model, index=str(index), threads=threads)
    if query is not None:
        hits = pipe(query, **options)
        if as_json:
            _echo_json({"query": query, "hits": [h.to_dict() for h in hits]})
            return
        if not hits:
            typer.echo("no hits")
        for rank, hit in enumerate(hits, start=1):
            snippet = " ".join(hit.text.split())
            snippet = snippet[:160] + ("…" if len(snippet) > 160 else "")
            typer.echo(f"{rank:>3}. {hit.score:8.4f}  {hit.id}  {snippet}")
        return
    _run_queries(pipe, queries, run, tag, options, as_json)


def _run_queries(pipe, queries_path: Path, run: Path | None, tag: str, options: dict, as_json: bool) -> None:
    from tqdm.auto import tqdm

    from mm.corpus import read_queries

    if any(c.isspace() for c in tag) or not tag:
        raise InvalidInputError(f"--tag must be one word without spaces, got {tag!r}")
    pairs = read_queries(queries_path)
    lines: list[str] = []
    results = {}
    step = 32
    with tqdm(total=len(pairs), desc="searching", unit="query", disable=as_json and run is None) as bar:
        for start in range(0, len(pairs), step):
            chunk = pairs[start:start + step]
            for (qid, _), hits in zip(chunk, pipe([text for _, text in chunk], **options), strict=True):
                results[qid] = [h.to_dict() for h in hits]
                lines.extend(f"{qid} Q0 {h.id} {rank} {h.score:.6f} {tag}" for rank, h in enumerate(hits, 1))
            bar.update(len(chunk))
    if run is not None:
        run.parent.mkdir(parents=True, exist_ok=True)
        tmp = run.with_name(run.name + ".tmp")
        tmp.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
        tmp.replace(run)
        typer.echo(f"wrote {len(lines)} lines for {len(pairs)} queries to {run}", err=True)
    if as_json:
        _echo_json(results)
    elif run is None:
        sys.stdout.write("\n".join(lines) + "\n")
