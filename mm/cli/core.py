"""Core commands: ``mm tasks``, ``mm info``, ``mm chat``."""

from __future__ import annotations

from typing import Annotated

import typer

from mm.cli import app


@app.command()
def tasks(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
) -> None:
    """List the registered tasks, their aliases and default checkpoints."""
    import json

    from rich.console import Console
    from rich.table import Table

    import mm

    if as_json:
        rows = [{"task": s.name, "aliases": list(s.aliases), "default_model": s.default_model, "extra": s.extra,
                 "description": s.description} for s in mm.tasks()]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table()
    table.add_column("task", no_wrap=True)
    for column in ("aliases", "default model", "extra", "description"):
        table.add_column(column, overflow="fold")
    for spec in mm.tasks():
        table.add_row(spec.name, ", ".join(spec.aliases), spec.default_model or "-", spec.extra or "-",
                      spec.description)
    Console().print(table)


@app.command()
def info() -> None:
    """Show versions, device, dtype choice, threads and the model cache directory."""
    import platform

    import torch
    import transformers
    from rich.console import Console
    from rich.table import Table

    import mm
    from mm import hub, runtime

    runtime.configure_torch()
    device = runtime.resolve_device("auto")
    table = Table("item", "value", show_header=False)
    rows = {
        "mm": mm.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device,
        "cpu capability": torch.backends.cpu.get_cpu_capability(),
        "native bf16": str(runtime.cpu_has_fast_bf16()),
        "dtype (auto)": str(runtime.resolve_dtype("auto", device)).replace("torch.", ""),
        "threads": str(torch.get_num_threads()),
        "hf cache": str(hub.cache_dir()),
        "offline": str(hub.is_offline()),
    }
    for key, value in rows.items():
        table.add_row(key, value)
    Console().print(table)


@app.command()
def chat(
    prompt: Annotated[str | None, typer.Argument(help="One message; omit for an interactive session")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Checkpoint directory or hub id")] = "LiquidAI/LFM2-350M",
    system: Annotated[str | None, typer.Option(help="System prompt")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 256,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy")] = 0.0,
    dtype: Annotated[str, typer.Option(help="auto, float32 or bfloat16")] = "auto",
    quantize: Annotated[str | None, typer.Option(
        help="int8: dynamic int8 linear layers (float32); int4: 4-bit group-wise weights")] = None,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Print tokens as they come")] = True,
) -> None:
    """Chat with an LFM2 model (one prompt, or interactive when PROMPT is omitted)."""
    import mm
    from mm.runtime import configure_torch

    configure_torch()  # the CLI owns the process: MM_NUM_THREADS or all cores
    pipe = mm.pipeline("chat", model=model, dtype=dtype, quantize=quantize)
    options = {"max_new_tokens": max_new_tokens, "do_sample": temperature > 0}
    if temperature > 0:
        options["temperature"] = temperature
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []

    def answer(text: str) -> None:
        history.append({"role": "user", "content": text})
        if stream:
            pieces = []
            for piece in pipe.stream(list(history), **options):
                pieces.append(piece)
                typer.echo(piece, nl=False)
            typer.echo()
            reply = "".join(pieces)
        else:
            reply = pipe(list(history), **options).text
            typer.echo(reply)
        history.append({"role": "assistant", "content": reply})

    if prompt is not None:
        answer(prompt)
        return
    typer.echo("Interactive chat; an empty line or Ctrl-D ends it.")
    while True:
        try:
            text = input("> ").strip()
        except EOFError:
            break
        if not text:
            break
        answer(text)


@app.command()
def demo(
    query: Annotated[list[str] | None, typer.Argument(help="Queries to run (default: three in en/es/de)")] = None,
    k: Annotated[int, typer.Option("-k", min=1, help="Hits per query")] = 3,
) -> None:
    """Run mm's main job offline: index the bundled multilingual sample corpus with MiniLM and search it."""
    import tempfile
    import time
    from pathlib import Path

    import mm
    from mm.index import build_job
    from mm.runtime import quiet_transformers_loading

    quiet_transformers_loading()
    t0 = time.perf_counter()
    corpus = Path(mm.__file__).resolve().parent / "data" / "sample_corpus.jsonl"
    with tempfile.TemporaryDirectory(prefix="mm-demo-") as tmp:
        from mm.runtime import configure_torch

        configure_torch()  # the CLI owns the process: MM_NUM_THREADS or all cores
        report = build_job(corpus, Path(tmp) / "index", encoder="minilm", workers=1)
        typer.echo(f"indexed {report.docs_encoded} XQuAD passages in 12 languages (CC BY-SA 4.0) with the "
                   f"offline MiniLM model in {report.seconds:.1f} s")
        search = mm.pipeline("search", index=str(Path(tmp) / "index"))
        queries = query or DEMO_QUERIES
        for text, hits in zip(queries, search(list(queries), k=k), strict=True):
            typer.echo(f"\nquery: {text}")
            for rank, hit in enumerate(hits, start=1):
                snippet = " ".join(hit.text.split())[:110]
                typer.echo(f"  {rank}. {hit.score:.3f} [{hit.metadata.get('lang')}] {hit.id}: {snippet}...")
    typer.echo(f"\ndone in {time.perf_counter() - t0:.1f} s")


#: questions from the sample corpus's own query set (answers in xquad-000-en, -001-es, -002-de)
DEMO_QUERIES = [
    "How many points did the Panthers defense surrender?",
    "¿Quién ganó la Super Bowl XLIX?",
    "Wie alt war Peyton Manning, als er im Super Bowl 50 spielte?",
]
