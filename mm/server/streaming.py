"""A streamed response that runs a callback when it ends for any reason (finished, failed, client gone).

The callback sets the request's cancel flag, so a client that disconnects stops its generation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class ClosingStream(StreamingResponse):
    """:class:`StreamingResponse` + ``on_close()`` after the stream ends or is cut off."""

    def __init__(self, content: Any, on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


async def iterate_in_thread(make: Callable[[], Any], cancel: Any) -> Any:
    """Run the iterator ``make()`` in a worker thread and yield its items here; stop it when ``cancel`` is set.

    The iterator is advanced one item at a time in the thread and closed (its ``finally`` runs) as soon
    as ``cancel`` is set, so a client that goes away stops a generating pipeline within one step.
    """
    import asyncio
    import threading

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=0)

    def put(kind: str, value: Any = None) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    def run() -> None:
        iterator = None
        try:
            iterator = iter(make())
            for item in iterator:
                if cancel.is_set():
                    break
                put("item", item)
        except BaseException as exc:
            put("error", exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
            put("end")

    thread = threading.Thread(target=run, name="mm-stream", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        cancel.set()
