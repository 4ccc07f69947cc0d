"""``POST /v1/chat/completions``: text and image turns, streamed or not, batched per model.

Turns with an ``image_url`` part go to the VL model (``--vqa-model``), text-only turns to the text
model (``--chat-model``); ``model`` must name one of them. Greedy decoding unless ``temperature`` > 0.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from mm.errors import MMError
from mm.server.batching import ChatJob, QueueFull
from mm.server.chat_format import DONE, Completion, new_id, sse, usage
from mm.server.config import ServerConfig
from mm.server.errors import APIError, bad_request, from_mm_error
from mm.server.generation import Row, Sampling
from mm.server.media import image_source
from mm.server.schemas import ChatCompletionRequest, ImagePart
from mm.server.streaming import ClosingStream

router = APIRouter()

#: OpenAI's image ``detail`` -> mm's image-token budget preset
DETAIL_PRESETS = {"low": "fast", "auto": None, "high": "detailed"}


def max_tokens(body: ChatCompletionRequest, config: ServerConfig) -> int:
    """The request's token limit (``max_completion_tokens`` or ``max_tokens``), at most the server's."""
    given = {k: v for k, v in (("max_completion_tokens", body.max_completion_tokens),
                               ("max_tokens", body.max_tokens)) if v is not None}
    if len(set(given.values())) > 1:
        raise bad_request("max_tokens and max_completion_tokens disagree; pass one of them", param="max_tokens")
    value = next(iter(given.values()), config.max_new_tokens)
    if value > config.max_new_tokens:
        raise bad_request(f"{next(iter(given))}={value} is above this server's limit of {config.max_new_tokens} "
                          "(mm serve --max-new-tokens)", param=next(iter(given)))
    return value


def sampling(body: ChatCompletionRequest) -> Sampling:
    """Greedy for ``temperature`` None or 0, else sampling at that temperature (and ``top_p``)."""
    if not body.temperature:
        if body.top_p is not None and body.top_p != 1:
            raise bad_request("top_p only applies when sampling; set temperature > 0 or drop top_p", param="top_p")
        if body.seed is not None:
            return Sampling(seed=body.seed)
        return Sampling()
    return Sampling(temperature=body.temperature, top_p=body.top_p, seed=body.seed)


def check_request(body: ChatCompletionRequest) -> None:
    if body.n is not None and body.n != 1:
        raise bad_request(f"n={body.n} is not supported; this server returns one choice per request (n=1)",
                          param="n")
    if body.stream_options is not None and not body.stream:
        raise bad_request("stream_options only applies with stream: true", param="stream_options")
    if any(not s for s in body.stop_list()):
        raise bad_request("stop strings must be non-empty", param="stop")


def conversation(body: ChatCompletionRequest, config: ServerConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Messages in mm's form (images as bytes or allowed paths) and the image-budget options."""
    messages: list[dict[str, Any]] = []
    details: set[str] = set()
    for message in body.messages:
        if isinstance(message.content, str):
            messages.append({"role": message.role, "content": message.content})
            continue
        parts: list[dict[str, Any]] = []
        for part in message.content:
            if isinstance(part, ImagePart):
                source = image_source(part.image_url.url, max_bytes=config.max_file_bytes,
                                      allow_local_files=config.allow_local_files)
                parts.append({"type": "image", "image": source})
                details.add(part.image_url.detail or "auto")
            else:
                parts.append({"type": "text", "text": part.text})
        if not any(p["type"] == "image" for p in parts):  # text parts only: plain text for either model
            messages.append({"role": message.role, "content": "".join(p["text"] for p in parts)})
        else:
            messages.append({"role": message.role, "content": parts})
    if len(details) > 1:
        raise bad_request(f"images with different detail settings ({sorted(details)}) in one request are not "
                          "supported", param="detail")
    preset = DETAIL_PRESETS[details.pop()] if details else None
    return messages, ({"image_tokens": preset} if preset else {})


def pick_model(request: Request, body: ChatCompletionRequest) -> Any:
    models = request.app.state.models
    models.get(body.model, ("chat", "vqa"))  # 404 for an unknown id, 503 while it loads
    kind = "vqa" if body.has_image() else "chat"
    slot = models.first(kind)
    if slot is None:
        raise bad_request("this request has an image; the server has no vision-language model (start it with "
                          "--vqa-model)" if kind == "vqa" else
                          "this request has only text; the server has no text model (start it with --chat-model) "
                          "and the VL model answers turns with images", param="messages")
    return models.ready(slot)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    config: ServerConfig = request.app.state.config
    check_request(body)
    limit = max_tokens(body, config)
    how = sampling(body)
    slot = pick_model(request, body)
    queue = slot.parts["queue"]
    try:
        messages, options = await asyncio.to_thread(conversation, body, config)
        item = await asyncio.to_thread(queue.engine.prepare, messages, options)
    except MMError as exc:
        raise from_mm_error(exc) from exc
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[str | None] = asyncio.Queue()
    row = Row(max_tokens=limit, stop=body.stop_list(), emit=lambda piece: loop.call_soon_threadsafe(
        events.put_nowait, piece))
    job = ChatJob(item, row, how, on_done=lambda _: loop.call_soon_threadsafe(events.put_nowait, None))
    try:
        queue.submit(job)
    except QueueFull as exc:
        raise APIError(429, f"the model {slot.id!r} has too many waiting requests ({exc}); retry later",
                       code="queue_full", headers={"Retry-After": "1"}) from exc
    completion = Completion(new_id(), slot.id,
                            include_usage=bool(body.stream_options and body.stream_options.include_usage))
    if body.stream:
        return ClosingStream(_stream(completion, job, events), on_close=row.cancel.set,
                             media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    return await _collect(request, completion, job, events)


def _job_error(job: ChatJob) -> APIError:
    exc = job.error
    if isinstance(exc, MMError):
        return from_mm_error(exc)
    return APIError(500, f"generation failed: {type(exc).__name__}: {exc}", code="generation_failed")


def _usage(job: ChatJob) -> dict[str, int]:
    return usage(job.prompt_tokens, len(job.row.token_ids))


async def _collect(request: Request, completion: Completion, job: ChatJob,
                   events: asyncio.Queue[str | None]) -> Any:
    try:
        while True:
            try:
                piece = await asyncio.wait_for(events.get(), timeout=0.5)
            except TimeoutError:
                if await request.is_disconnected():
                    job.row.cancel.set()
                    return JSONResponse({}, status_code=499)  # nobody is listening any more
                continue
            if piece is None:
                break
    finally:
        if not job.row.finished:
            job.row.cancel.set()
    if job.error is not None:
        raise _job_error(job)
    return completion.response(job.row.text, job.row.finish_reason or "stop", _usage(job))


async def _stream(completion: Completion, job: ChatJob, events: asyncio.Queue[str | None]):
    yield completion.chunk({"role": "assistant", "content": ""})
    while True:
        piece = await events.get()
        if piece is None:
            break
        yield completion.chunk({"content": piece})
    if job.error is not None:
        yield sse(_job_error(job).body())
        yield DONE
        return
    yield completion.chunk({}, job.row.finish_reason or "stop")
    if completion.include_usage:
        yield completion.usage_chunk(_usage(job))
    yield DONE
