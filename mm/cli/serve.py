"""``mm serve``: start the Gradio demo apps, or with ``--api`` an OpenAI-compatible HTTP API, on local models."""

from __future__ import annotations

import ipaddress
import logging
import socket
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from mm.cli import app
from mm.errors import InvalidInputError, ModelNotFoundError

log = logging.getLogger(__name__)


class ServeTask(StrEnum):
    vqa = "vqa"
    speech = "speech"
    search = "search"
    all = "all"


_NEEDS = {"vqa": "--vqa-model", "speech": "--speech-model", "search": "--search-index"}


def _check_dir(value: Path | None, flag: str) -> Path | None:
    if value is None:
        return None
    path = value.expanduser()
    if not path.is_dir():
        raise ModelNotFoundError(f"{flag} {str(value)!r} is not a directory; pass a local checkpoint or index folder")
    return path.resolve()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise InvalidInputError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port "
                                    "or stop the program that uses it") from exc


def build_app(task: str, *, vqa_model: Any = None, speech_model: Any = None, search_index: Any = None,
              **options: Any):
    """The Gradio Blocks for ``task`` (vqa, speech, search or all)."""
    if task == "vqa":
        from mm.apps.vqa import build_vqa_app

        options.pop("stream_audio", None)
        return build_vqa_app(vqa_model, **options)
    if task == "speech":
        from mm.apps.speech import build_speech_app

        return build_speech_app(speech_model, **options)
    if task == "search":
        from mm.apps.search import build_search_app

        options.pop("stream_audio", None)
        return build_search_app(search_index, **options)
    from mm.apps.combined import build_combined_app

    return build_combined_app(vqa_model, speech_model, search_index, **options)


@app.command()
def serve(
    task: Annotated[ServeTask, typer.Option(help="Which app: one pipeline, or all of them in tabs")] = ServeTask.all,
    host: Annotated[str, typer.Option(help="Address to bind; the default serves this machine only")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(min=1, max=65535,
                                             help="Port to listen on (default 7860, with --api 8000)")] = None,
    vqa_model: Annotated[Path | None, typer.Option(help="LFM2-VL checkpoint directory")] = None,
    speech_model: Annotated[Path | None, typer.Option(help="LFM2-Audio checkpoint directory")] = None,
    search_index: Annotated[Path | None, typer.Option(help="mm index directory (see `mm index build`)")] = None,
    max_file_size: Annotated[str, typer.Option(help="Largest upload accepted, e.g. 25mb")] = "25mb",
    concurrency: Annotated[int, typer.Option(min=1, max=16,
                                             help="Requests one model serves at once (one shared copy)")] = 1,
    queue_size: Annotated[int, typer.Option(min=1, help="Waiting requests before new ones are refused")] = 64,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Upper bound of the apps' token sliders "
                                                            "(--api: of a request's max_tokens)")] = 512,
    device: Annotated[str, typer.Option(help="auto or cpu")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float32 or bfloat16")] = "auto",
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads (default: all cores)")] = None,
    stream_audio: Annotated[bool, typer.Option(
        "--stream-audio/--no-stream-audio",
        help="Play speech replies while they are generated (needs ffmpeg); otherwise the player is refreshed")] = False,
    api: Annotated[bool, typer.Option("--api", help="Serve the OpenAI-compatible HTTP API instead of the "
                                                    "Gradio apps (see docs/server.md)")] = False,
    chat_model: Annotated[Path | None, typer.Option(help="--api: LFM2 text checkpoint directory")] = None,
    embedding_model: Annotated[str | None, typer.Option(
        help="--api: sentence-transformers checkpoint directory, or 'minilm' for the bundled MiniLM")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="MM_API_KEY", show_envvar=True,
                                                help="--api: key clients must send as 'Authorization: Bearer "
                                                     "KEY'")] = None,
    allow_local_files: Annotated[bool, typer.Option(
        "--allow-local-files", help="--api: let image_url name files on this machine (off: data: URLs only)")] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=64,
                                            help="--api: chat requests to one model generated together")] = 8,
) -> None:
    """Start the demo app(s) on local checkpoints and an index, on 127.0.0.1 unless --host says otherwise.

    Example: mm serve --task all --vqa-model ./LFM2-VL-450M --speech-model ./LFM2-Audio-1.5B --search-index ./idx

    API example: mm serve --api --chat-model ./LFM2-350M --vqa-model ./LFM2-VL-450M --embedding-model minilm
    """
    if api:
        _serve_api(task=task, host=host, port=port or 8000, vqa_model=vqa_model, speech_model=speech_model,
                   search_index=search_index, max_file_size=max_file_size, concurrency=concurrency,
                   queue_size=queue_size, max_new_tokens=max_new_tokens, device=device, dtype=dtype,
                   threads=threads, stream_audio=stream_audio, chat_model=chat_model,
                   embedding_model=embedding_model, api_key=api_key, allow_local_files=allow_local_files,
                   batch_size=batch_size)
        return
    api_only = {"--chat-model": chat_model is not None, "--embedding-model": embedding_model is not None,
                "--api-key": api_key is not None, "--allow-local-files": allow_local_files,
                "--batch-size": batch_size != 8}
    given_api_only = [flag for flag, given in api_only.items() if given]
    if given_api_only:
        raise InvalidInputError(f"{', '.join(given_api_only)} only apply with --api (the HTTP API); add --api "
                                "or drop them")
    port = port or 7860
    given = {"vqa": _check_dir(vqa_model, "--vqa-model"), "speech": _check_dir(speech_model, "--speech-model"),
             "search": _check_dir(search_index, "--search-index")}
    name = task.value
    if name != "all" and given[name] is None:
        raise InvalidInputError(f"--task {name} needs {_NEEDS[name]} DIR")
    if name == "all" and not any(given.values()):
        raise InvalidInputError("--task all needs at least one of --vqa-model, --speech-model, --search-index")
    for key, value in given.items():
        if name == "all" and value is None:
            log.warning("no %s given: the %s tab will say so", _NEEDS[key], key)
    if not _is_loopback(host):
        log.warning("serving on %s: the apps are reachable from other machines", host)
    _check_port(host, port)
    if stream_audio and name in {"speech", "all"}:
        from mm.apps.speech import check_stream_audio

        check_stream_audio(True)
    from mm import runtime
    from mm.apps.common import AppLimits, launch, parse_size

    parse_size(max_file_size)
    runtime.configure_torch(threads)
    limits = AppLimits(max_file_size=max_file_size, queue_size=queue_size, max_new_tokens=max_new_tokens)
    typer.echo(f"loading models for --task {name} …")
    blocks = build_app(name, vqa_model=given["vqa"], speech_model=given["speech"], search_index=given["search"],
                       limits=limits, concurrency_limit=concurrency, device=device, dtype=dtype,
                       stream_audio=stream_audio)
    typer.echo(f"serving on http://{'[' + host + ']' if ':' in host else host}:{port} (Ctrl-C stops)")
    launch(blocks, host=host, port=port, limits=limits, block=True)


def _serve_api(*, task: ServeTask, host: str, port: int, vqa_model: Path | None, speech_model: Path | None,
               search_index: Path | None, max_file_size: str, concurrency: int, queue_size: int,
               max_new_tokens: int, device: str, dtype: str, threads: int | None, stream_audio: bool,
               chat_model: Path | None, embedding_model: str | None, api_key: str | None, allow_local_files: bool,
               batch_size: int) -> None:
    """``mm serve --api``: check the flags, then run the OpenAI-compatible server under uvicorn."""
    gradio_only = {"--task": task != ServeTask.all, "--concurrency": concurrency != 1,
                   "--stream-audio": stream_audio}
    given = [flag for flag, on in gradio_only.items() if on]
    if given:
        raise InvalidInputError(f"{', '.join(given)} only apply to the Gradio apps, not to --api; drop them")
    models = {"chat_model": _check_dir(chat_model, "--chat-model"), "vqa_model": _check_dir(vqa_model, "--vqa-model"),
              "speech_model": _check_dir(speech_model, "--speech-model"),
              "search_index": _check_dir(search_index, "--search-index"), "embedding_model": embedding_model}
    if embedding_model is not None and Path(embedding_model).expanduser().exists():
        models["embedding_model"] = str(_check_dir(Path(embedding_model), "--embedding-model"))
    if not any(models.values()):
        raise InvalidInputError("--api needs at least one of --chat-model, --vqa-model, --speech-model, "
                                "--embedding-model, --search-index")
    from mm import runtime
    from mm.errors import require
    from mm.server import ServerConfig

    require("fastapi", "server")
    require("uvicorn", "server")
    config = ServerConfig(**models, api_key=api_key, max_file_size=max_file_size,
                          allow_local_files=allow_local_files, queue_size=queue_size, batch_size=batch_size,
                          max_new_tokens=max_new_tokens, device=device, dtype=dtype)
    if not _is_loopback(host) and api_key is None:
        log.warning("serving the API on %s WITHOUT an API key: anyone who can reach this address can use it; "
                    "pass --api-key or set MM_API_KEY", host)
    _check_port(host, port)
    runtime.configure_torch(threads)
    from mm.server.app import run

    typer.echo(f"serving the OpenAI-compatible API on http://{'[' + host + ']' if ':' in host else host}:{port}/v1 "
               "(models load in the background; GET /health says when they are ready; Ctrl-C stops)")
    run(config, host=host, port=port)
