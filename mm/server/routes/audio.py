"""``POST /v1/audio/transcriptions`` (multipart upload -> text) and ``POST /v1/audio/speech`` (text -> WAV stream)."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from starlette.datastructures import UploadFile

from mm.errors import MMError, choices_text
from mm.server import adapters
from mm.server.batching import QueueFull
from mm.server.errors import APIError, bad_request, from_mm_error
from mm.server.media import too_large
from mm.server.schemas import SpeechRequest
from mm.server.streaming import ClosingStream, iterate_in_thread
from mm.server.wav import pcm16, stream_header

log = logging.getLogger(__name__)
router = APIRouter()

TRANSCRIPTION_FIELDS = ("file", "model", "response_format", "temperature")
RESPONSE_FORMATS = ("json", "text", "verbose_json")


def busy(slot_id: str, exc: QueueFull) -> APIError:
    return APIError(429, f"the model {slot_id!r} has too many waiting requests ({exc}); retry later",
                    code="queue_full", headers={"Retry-After": "1"})


def _temperature_options(value: Any) -> dict[str, Any]:
    if value in (None, ""):
        return {}
    try:
        temperature = float(value)
    except ValueError as exc:
        raise bad_request(f"temperature must be a number, got {value!r}", param="temperature") from exc
    if not 0 <= temperature <= 2:
        raise bad_request(f"temperature must be in [0, 2], got {temperature}", param="temperature")
    return {"do_sample": True, "temperature": temperature} if temperature > 0 else {}


@router.post("/v1/audio/transcriptions")
async def transcriptions(request: Request) -> Any:
    config = request.app.state.config
    form = await request.form(max_files=1, max_fields=len(TRANSCRIPTION_FIELDS))
    unknown = [k for k in form if k not in TRANSCRIPTION_FIELDS]
    if unknown:
        raise bad_request(f"unsupported parameter(s) {choices_text(unknown)}; this endpoint takes "
                          f"{choices_text(TRANSCRIPTION_FIELDS)}", param=unknown[0])
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise bad_request("'file' is required: upload the audio as a multipart file field", param="file")
    response_format = str(form.get("response_format") or "json")
    if response_format not in RESPONSE_FORMATS:
        raise bad_request(f"response_format {response_format!r} is not supported; valid: "
                          f"{choices_text(RESPONSE_FORMATS)}", param="response_format")
    options = {**_temperature_options(form.get("temperature")), "max_new_tokens": config.max_new_tokens}
    slot = request.app.state.models.get(form.get("model"), ("speech",))
    if upload.size is not None and upload.size > config.max_file_bytes:
        raise too_large(f"the uploaded file {upload.filename!r}", upload.size, config.max_file_bytes)
    audio = await upload.read()
    if len(audio) > config.max_file_bytes:
        raise too_large(f"the uploaded file {upload.filename!r}", len(audio), config.max_file_bytes)
    if not audio:
        raise bad_request("the uploaded audio file is empty", param="file")
    try:
        async with slot.parts["gate"]:
            result = await asyncio.to_thread(adapters.transcribe, slot.parts["asr"], audio, options)
    except QueueFull as exc:
        raise busy(slot.id, exc) from exc
    except MMError as exc:
        raise from_mm_error(exc) from exc
    if response_format == "text":
        return PlainTextResponse(result["text"])
    if response_format == "json":
        return {"text": result["text"], "usage": {"type": "duration", "seconds": round(result["duration"], 3)}}
    segments = [{"id": i, "start": s["start"], "end": s["end"], "text": s["text"]}
                for i, s in enumerate(result["segments"])]
    return {"task": "transcribe", "duration": result["duration"], "text": result["text"], "segments": segments}


def speech_options(body: SpeechRequest) -> dict[str, Any]:
    if body.speed is not None and body.speed != 1.0:
        raise bad_request(f"speed={body.speed} is not supported; LFM2-Audio speaks at its own pace (1.0)",
                          param="speed")
    voices = adapters.tts_voices()
    if body.voice is not None and body.voice not in voices:
        raise bad_request(f"unknown voice {body.voice!r}; valid: {choices_text(voices)}", param="voice")
    return {"voice": body.voice} if body.voice is not None else {}


@router.post("/v1/audio/speech")
async def speech(body: SpeechRequest, request: Request) -> Any:
    slot = request.app.state.models.get(body.model, ("speech",))
    options = speech_options(body)
    tts = slot.parts["tts"]
    try:
        adapters.check_speech_input(tts, body.input, options)  # 400 before any audio is sent
    except MMError as exc:
        raise from_mm_error(exc) from exc
    gate = slot.parts["gate"]
    try:
        await gate.acquire()
    except QueueFull as exc:
        raise busy(slot.id, exc) from exc
    cancel = threading.Event()
    released = threading.Event()

    def close() -> None:
        cancel.set()
        if not released.is_set():
            released.set()
            gate.release()

    async def wav() -> Any:
        yield stream_header(adapters.tts_sample_rate(tts))
        try:
            async for samples, _rate in iterate_in_thread(lambda: adapters.speech_chunks(tts, body.input, options),
                                                          cancel):
                yield pcm16(samples)
        except Exception:  # the status line is sent already: log it and end the stream short
            log.exception("speech generation failed mid-stream")

    return ClosingStream(wav(), on_close=close, media_type="audio/wav")
