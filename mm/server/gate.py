"""A per-model gate for models that serve one request at a time: a bounded wait, then exclusive use.

>>> import asyncio
>>> async def demo():
...     gate = Gate(queue_size=1)
...     async with gate:
...         return gate.busy
>>> from concurrent.futures import ThreadPoolExecutor  # a fresh thread: the caller may run a loop
>>> ThreadPoolExecutor(1).submit(asyncio.run, demo()).result()
1
"""

from __future__ import annotations

import asyncio

from mm.server.batching import QueueFull


class Gate:
    """At most one request runs; at most ``queue_size`` wait; one more raises :class:`QueueFull` (429)."""

    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self.busy = 0  # running + waiting
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait for the model, or raise :class:`QueueFull` when ``queue_size`` requests already wait."""
        if self.busy > self.queue_size:
            raise QueueFull(f"{self.busy - 1} requests are already waiting for this model")
        self.busy += 1
        try:
            await self._lock.acquire()
        except BaseException:
            self.busy -= 1
            raise

    def release(self) -> None:
        self._lock.release()
        self.busy -= 1

    async def __aenter__(self) -> Gate:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
