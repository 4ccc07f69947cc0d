"""What every mm app shares: model slots, error panels, upload checks, limits and launching.

A :class:`ModelSlot` holds one pipeline per model, loaded once and shared by every
user; its ``concurrency_id`` ties all of the model's events to one Gradio queue
limit. :func:`user_errors` turns mm's errors into an in-page message (never a
traceback). :func:`launch` starts an app bound to loopback with upload limits and
no file access outside Gradio's own upload cache.

>>> limits = AppLimits(max_file_size="2mb")
>>> limits.max_bytes
2097152
>>> slot = ModelSlot("vqa", lambda: (_ for _ in ()).throw(FileNotFoundError("no such dir")))
>>> slot.load()
False
>>> "no such dir" in slot.error
True
"""

from __future__ import annotations

import contextlib
import functools
import html
import inspect
import logging
import math
import os
import queue
import threading
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from mm.errors import InputTooLargeError, InvalidInputError, MMError
from mm.validation import parse_size

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".webm", ".opus", ".aiff", ".aif")


CSS = """
.mm-status {padding: 0.6em 0.9em; border-radius: 8px; margin: 0.2em 0; font-size: 0.95em}
.mm-status-ok {background: #ecfdf5; border: 1px solid #6ee7b7; color: #065f46}
.mm-status-info {background: #eff6ff; border: 1px solid #93c5fd; color: #1e3a8a}
.mm-status-error {background: #fef2f2; border: 1px solid #fca5a5; color: #991b1b}
.mm-hit {border: 1px solid #e5e7eb; border-radius: 8px; padding: 0.6em 0.9em; margin: 0.5em 0}
.mm-hit-head {display: flex; gap: 1em; font-size: 0.9em; color: #4b5563}
.mm-hit-rank {font-weight: 700; color: #111827}
.mm-hit-text {margin-top: 0.3em; line-height: 1.5}
.mm-hit-text mark {background: #fde68a; padding: 0 1px; border-radius: 2px}
.mm-hit-meta {font-size: 0.8em; color: #6b7280; margin-top: 0.3em}
"""




@dataclass(frozen=True)
class AppLimits:
    """Limits applied to every request, checked before a model sees the input."""

    max_file_size: str | int = "25mb"  # per uploaded file (also enforced by Gradio at upload time)
    max_image_pixels: int = 40_000_000  # decoded width * height
    max_audio_seconds: float = 120.0
    max_text_chars: int = 4000
    max_new_tokens: int = 512
    queue_size: int = 64  # waiting events across the app before new ones are turned away

    @property
    def max_bytes(self) -> int:
        return parse_size(self.max_file_size)


# -- in-page messages ----------------------------------------------------------------------------

def status_html(message: str, kind: str = "info") -> str:
    """An in-page status box (``kind``: ok, info or error); ``message`` is escaped.

    >>> status_html("<b>x</b>", "error")
    '<div class="mm-status mm-status-error">&lt;b&gt;x&lt;/b&gt;</div>'
    """
    if kind not in {"ok", "info", "error"}:
        raise ValueError(f"unknown status kind {kind!r}")
    return f'<div class="mm-status mm-status-{kind}">{html.escape(message, quote=False)}</div>'


def user_message(exc: BaseException) -> str:
    """The text a user sees for ``exc``: mm's own message, or a generic line for a server fault."""
    if isinstance(exc, gr.Error):
        return str(exc.message)
    if isinstance(exc, MMError):
        return str(exc)
    return (f"Something went wrong on the server ({type(exc).__name__}); "
            "the details are in the server log. Try again, or try another input.")


def to_gr_error(exc: BaseException) -> gr.Error:
    """An escaped :class:`gradio.Error` for ``exc`` (logged with its traceback when it is not a user error)."""
    if isinstance(exc, gr.Error):
        return exc
    if not isinstance(exc, MMError):
        log.exception("unexpected error in an app handler", exc_info=exc)
    return gr.Error(html.escape(user_message(exc), quote=False), print_exception=False)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a Gradio handler (function or generator) so every error reaches the page as a clear message.

    >>> @user_errors
    ... def bad(x):
    ...     raise InvalidInputError("the question is empty")
    >>> try:
    ...     bad(1)
    ... except gr.Error as err:
    ...     print(err.message)
    the question is empty
    """
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:
                raise to_gr_error(exc) from exc
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise to_gr_error(exc) from exc
    return wrapper


_DONE = object()


def stream_in_thread(make_iter: Callable[[], Iterator[Any]], *, name: str = "mm-stream") -> Iterator[Any]:
    """Run a pipeline's stream start to finish in one dedicated thread, yielding its items here.

    Gradio resumes a generator handler on whichever worker thread is free, so a pipeline stream
    iterated directly may start on one thread and finish on another; a stream that holds a
    (re-entrant) lock across its yields cannot release it then. Here the stream stays on one
    thread; when the consumer stops early (the user left, or cancelled), the stream is closed on
    that thread too, before its next item is produced.

    >>> list(stream_in_thread(lambda: iter("abc")))
    ['a', 'b', 'c']
    """
    items: queue.Queue[Any] = queue.Queue(maxsize=64)
    stop = threading.Event()

    def produce() -> None:
        iterator = make_iter()
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
            items.put((_DONE, None))
        except BaseException as exc:  # handed to the consumer, re-raised there
            items.put((_DONE, exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item = items.get()
            if isinstance(item, tuple) and len(item) == 2 and item[0] is _DONE:
                if item[1] is not None:
                    raise item[1]
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue, then let it finish
            with contextlib.suppress(queue.Empty):
                items.get(timeout=0.1)


# -- models --------------------------------------------------------------------------------------

class ModelSlot:
    """One model shared by every user of an app: loaded once, with its load error kept for the page.

    ``loader`` builds the pipeline (it runs at most once successfully). ``concurrency_limit`` is how
    many requests may use the model at the same time; every event that runs the model passes
    :attr:`event_options` so they share one queue limit.
    """

    def __init__(self, name: str, loader: Callable[[], Any] | None, *, concurrency_limit: int = 1,
                 missing_hint: str = "") -> None:
        if concurrency_limit < 1:
            raise InvalidInputError(f"concurrency_limit must be >= 1, got {concurrency_limit}")
        self.name = name
        self._loader = loader
        self.concurrency_limit = concurrency_limit
        self.missing_hint = missing_hint
        self.pipeline: Any = None
        self.error: str | None = None if loader is not None else self._not_configured()
        self.load_seconds: float | None = None
        self._lock = threading.Lock()

    @classmethod
    def of(cls, name: str, value: Any, loader: Callable[[Any], Any], **kwargs: Any) -> ModelSlot:
        """A slot for ``value``: a ready pipeline object, a path / id handed to ``loader``, or None (missing)."""
        if value is None:
            return cls(name, None, **kwargs)
        if isinstance(value, str | os.PathLike):
            return cls(name, lambda: loader(value), **kwargs)
        slot = cls(name, lambda: value, **kwargs)
        slot.load()
        return slot

    def _not_configured(self) -> str:
        hint = f" {self.missing_hint}" if self.missing_hint else ""
        return f"No {self.name} model is configured for this app.{hint}"

    @property
    def concurrency_id(self) -> str:
        return f"model:{self.name}"

    @property
    def event_options(self) -> dict[str, Any]:
        """Keyword arguments for every event listener that runs this model."""
        return {"concurrency_limit": self.concurrency_limit, "concurrency_id": self.concurrency_id}

    @property
    def ready(self) -> bool:
        return self.pipeline is not None

    def load(self) -> bool:
        """Load the model now (idempotent); False (with :attr:`error` set) when it cannot be loaded."""
        if self.pipeline is not None:
            return True
        if self._loader is None:
            return False
        with self._lock:
            if self.pipeline is not None:
                return True
            t0 = time.perf_counter()
            try:
                self.pipeline = self._loader()
            except Exception as exc:
                if not isinstance(exc, MMError):
                    log.exception("loading the %s model failed", self.name)
                self.error = f"The {self.name} model could not be loaded: {user_message(exc) if isinstance(exc, MMError) else exc}"
                return False
            self.load_seconds = time.perf_counter() - t0
            self.error = None
            log.info("%s model ready in %.1f s", self.name, self.load_seconds)
            return True

    def get(self) -> Any:
        """The pipeline, or a :class:`gradio.Error` naming why there is none."""
        if not self.load():
            raise gr.Error(html.escape(self.error or f"the {self.name} model is not available", quote=False),
                           print_exception=False)
        return self.pipeline

    def status(self) -> str:
        """An HTML status box for the page: ready (with load time) or the load error."""
        if self.load():
            extra = f" (loaded in {self.load_seconds:.1f} s)" if self.load_seconds is not None else ""
            model_id = getattr(self.pipeline, "model_id", None)
            # the folder's name only: the page does not reveal the server's directory layout
            where = f": {Path(model_id).name}" if isinstance(model_id, str | os.PathLike) and model_id else ""
            return status_html(f"{self.name} model ready{where}{extra}", "ok")
        return status_html(self.error or "", "error")


# -- uploads -------------------------------------------------------------------------------------

def upload_path(value: Any, what: str) -> Path:
    """The local path of an uploaded file (a str / Path or a Gradio FileData-like dict)."""
    if value is None or value == "":
        raise InvalidInputError(f"no {what} was given; upload one first")
    if isinstance(value, dict):
        value = value.get("path")
    if not isinstance(value, str | os.PathLike) or isinstance(os.fspath(value), bytes):
        raise InvalidInputError(f"the uploaded {what} is not a file (got a {type(value).__name__}); upload it again")
    path = Path(os.fspath(value))
    try:
        is_file = path.is_file()
    except (OSError, ValueError):  # a name too long or with a NUL byte
        is_file = False
    if not is_file:
        raise InvalidInputError(f"the uploaded {what} is no longer on the server; upload it again")
    return path


def check_upload(value: Any, what: str, suffixes: tuple[str, ...], limits: AppLimits) -> Path:
    """Check an uploaded file's presence, size and type; return its path.

    The suffix check is a first, cheap filter: the decoders below still check the content.
    """
    path = upload_path(value, what)
    size = path.stat().st_size
    if size == 0:
        raise InvalidInputError(f"the uploaded {what} ({path.name}) is empty")
    if size > limits.max_bytes:
        raise InputTooLargeError(f"the uploaded {what} is {size / 1e6:.1f} MB; the limit is "
                                 f"{limits.max_bytes / 1e6:.1f} MB")
    if suffixes and path.suffix.lower() not in suffixes:
        raise InvalidInputError(f"{path.name} is not a supported {what} type; use one of "
                                f"{', '.join(s.lstrip('.') for s in suffixes)}")
    return path


def _named(exc: MMError, subject: str, name: str) -> str:
    """``exc``'s message about ``subject`` (what mm.media calls the bytes it decoded) told about file ``name``."""
    return str(exc).replace(subject, name).replace(" or pass a larger max_pixels", "")


def load_image(value: Any, limits: AppLimits) -> Any:
    """Decode an uploaded image exactly as ``mm.pipeline("vqa")`` decodes an image file.

    The decoding is :func:`mm.media.image.load_image`'s (EXIF orientation applied, 16-bit scaled,
    CMYK and palettes converted, the pixel limit checked from the header before decoding), so the
    model sees the same pixels as through the API; errors name the uploaded file, not a server path.
    """
    from mm.media.image import load_image as decode_image

    path = check_upload(value, "image", IMAGE_SUFFIXES, limits)
    data = path.read_bytes()
    try:
        return decode_image(data, max_pixels=limits.max_image_pixels)
    except InputTooLargeError as exc:
        raise InputTooLargeError(_named(exc, f"bytes ({len(data)} bytes)", path.name)) from exc
    except InvalidInputError as exc:
        cause = f" ({type(exc.__cause__).__name__})" if exc.__cause__ is not None else ""
        raise InvalidInputError(f"{path.name} could not be read as an image{cause}; upload a PNG, JPEG, WebP, "
                                "BMP, GIF or TIFF file") from exc


def load_audio(value: Any, limits: AppLimits, *, target_rate: int) -> Any:
    """Decode an uploaded audio file exactly as the speech pipelines decode an audio file.

    Returns an :class:`mm.media.audio.AudioClip`: mono float32 at ``target_rate`` (pass the
    pipeline's input rate, and the pipeline uses the clip as it is), decoded, mixed and resampled by
    :func:`mm.media.audio.load_audio`. The length limit is checked from the file header first, so an
    over-long upload is refused before it is decoded.
    """
    import soundfile as sf

    from mm.media.audio import load_audio as decode_audio

    path = check_upload(value, "audio file", AUDIO_SUFFIXES, limits)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
        raise InvalidInputError(f"{path.name} could not be read as audio ({exc.__class__.__name__}); upload a WAV, "
                                "FLAC, OGG or MP3 file") from exc
    if info.frames and info.samplerate and info.frames / info.samplerate > limits.max_audio_seconds:
        raise InputTooLargeError(f"{path.name} is {info.frames / info.samplerate:.0f} s long; the limit is "
                                 f"{limits.max_audio_seconds:.0f} s")
    data = path.read_bytes()
    try:
        return decode_audio(data, target_rate=target_rate, max_seconds=limits.max_audio_seconds)
    except MMError as exc:
        raise type(exc)(f"{path.name}: {_named(exc, 'the audio bytes', 'the file')}") from exc


def check_text(text: str | None, what: str, limits: AppLimits, *, required: bool = True) -> str:
    """Strip ``text`` and check it is present, valid Unicode and within the length limit."""
    from mm.validation import check_text as check_unicode

    text = check_unicode("" if text is None else text, f"the {what}", allow_empty=True).strip()
    if required and not text:
        raise InvalidInputError(f"the {what} is empty; type something first")
    if len(text) > limits.max_text_chars:
        raise InputTooLargeError(f"the {what} has {len(text):,} characters; the limit is "
                                 f"{limits.max_text_chars:,}")
    return text


def check_new_tokens(value: Any, limits: AppLimits) -> int:
    """A whole number of new tokens within ``[1, limits.max_new_tokens]``."""
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"max new tokens must be a number, got {value!r}") from exc
    if not math.isfinite(number) or number != int(number) or not 1 <= number <= limits.max_new_tokens:
        raise InvalidInputError(f"max new tokens must be a whole number from 1 to {limits.max_new_tokens}, "
                                f"got {value!r}")
    return int(number)


def _checked_image_preprocess(self: gr.Image, payload: Any) -> Any:
    if payload is None:
        return None
    if getattr(payload, "path", None):
        return payload.path
    try:
        return gr.Image.preprocess(self, payload)
    except Exception as exc:
        raise gr.Error("the image could not be read; upload a PNG, JPEG, WebP, BMP, GIF or TIFF file",
                       print_exception=False) from exc


def checked_image(**kwargs: Any) -> gr.Image:
    """A ``gr.Image`` input that hands the app the uploaded file's path unopened.

    Gradio's own image preprocessing opens the file with PIL and fails with a bare exception on a
    corrupt upload; with this the app's decoder (:func:`load_image`) reports what was wrong, in the
    page. (An instance-level override: a subclass would make Gradio write a .pyi stub beside this file.)
    """
    image = gr.Image(type="filepath", **kwargs)
    image.preprocess = types.MethodType(_checked_image_preprocess, image)  # type: ignore[method-assign]
    return image


def fmt_seconds(seconds: float) -> str:
    """Human-readable latency.

    >>> fmt_seconds(0.0123), fmt_seconds(2.5)
    ('12 ms', '2.50 s')
    """
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


# -- launching -----------------------------------------------------------------------------------

def prepare(blocks: gr.Blocks, limits: AppLimits) -> gr.Blocks:
    """Enable the queue: default limit 2 for light events, model events carry their own slot limits."""
    blocks.queue(max_size=limits.queue_size, default_concurrency_limit=2)
    return blocks


def launch(blocks: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = None,
           limits: AppLimits | None = None, block: bool = True, quiet: bool = False) -> gr.Blocks:
    """Serve ``blocks`` with mm's safe defaults.

    Binds ``host`` (loopback unless told otherwise), enforces ``limits.max_file_size`` on uploads,
    allows no extra file paths (only Gradio's own upload cache is served), shows no tracebacks,
    and disables monitoring, MCP and server-side rendering. ``block=False`` returns at once
    (tests); the server then runs in a background thread until ``blocks.close()``.
    """
    limits = limits or AppLimits()
    prepare(blocks, limits)
    blocks.launch(
        server_name=host,
        server_port=port,
        max_file_size=limits.max_bytes,
        allowed_paths=[],
        show_error=False,
        enable_monitoring=False,
        mcp_server=False,
        ssr_mode=False,
        share=False,
        inbrowser=False,
        quiet=quiet,
        prevent_thread_lock=not block,
        css=CSS,
        footer_links=["api"],
    )
    return blocks
