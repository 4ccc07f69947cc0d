"""Mimi decoding on a background thread, overlapped with the generation loop that produces the frames.

:class:`BackgroundDecoder` takes frames as they are sampled (:meth:`~BackgroundDecoder.submit` returns
at once) and decodes them on its own thread with one :class:`~mm.encoders.mimi.MimiStreamDecoder`.
When the generation runs ahead, the frames that queued up are decoded in one call (up to
``max_batch``), which reads the codec's weights once for all of them: the first frame is decoded
alone (low latency), later ones in batches when the decoder falls behind. The waveform is the same
as decoding frame by frame (the stream carries its state; up to float rounding).

>>> import torch
>>> from mm.encoders.mimi import MimiCodec, random_mimi_state_dict, tiny_mimi_config
>>> cfg = tiny_mimi_config()
>>> codec = MimiCodec.from_state_dict(random_mimi_state_dict(cfg), cfg)
>>> codes = torch.randint(0, 2048, (8, 5))
>>> with BackgroundDecoder(codec.stream()) as worker:
...     for t in range(5):
...         worker.submit(tuple(codes[:, t].tolist()))
...     chunks = worker.poll() + worker.finish()
>>> [len(c.samples) for c in chunks]
[1920, 1920, 1920, 1920, 1920]
>>> bool((torch.cat([torch.from_numpy(c.samples) for c in chunks]) - codec.decode(codes)).abs().max() < 1e-4)
True
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

_STOP = object()


@dataclass
class DecodedFrame:
    """One decoded frame: its 8 codes and ``frame_size`` float32 samples."""

    codes: tuple[int, ...]
    samples: np.ndarray


class BackgroundDecoder:
    """Decode submitted frames on a daemon thread; collect them with :meth:`poll` / :meth:`finish`.

    ``seconds`` is the decode time spent so far (wall, on the worker thread); an exception raised
    while decoding is re-raised by the next :meth:`poll` / :meth:`finish`. Use as a context manager
    (or call :meth:`close`) so the thread ends when the consumer stops early.
    """

    def __init__(self, stream, max_batch: int = 4) -> None:
        self.stream = stream
        self.max_batch = max(1, int(max_batch))
        self.seconds = 0.0
        self.calls = 0
        self._in: queue.Queue = queue.Queue()
        self._out: queue.Queue = queue.Queue()
        self._pending = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="mm-mimi-decode", daemon=True)
        self._thread.start()

    def submit(self, codes: tuple[int, ...]) -> None:
        """Queue one frame (8 codes in ``0..2047``) for decoding."""
        self._pending += 1
        self._in.put(tuple(int(c) for c in codes))

    def _work(self) -> None:
        while True:
            item = self._in.get()
            if item is _STOP:
                return
            batch = [item]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._in.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            try:
                t0 = time.perf_counter()
                with torch.inference_mode():
                    wave = self.stream.decode_frames(torch.tensor(batch, dtype=torch.long).T)
                samples = wave.float().numpy()
                self.seconds += time.perf_counter() - t0
                self.calls += 1
                size = len(samples) // len(batch)
                for i, codes in enumerate(batch):
                    self._out.put(DecodedFrame(codes, samples[i * size:(i + 1) * size].copy()))
            except BaseException as exc:  # handed to the consumer thread
                self._error = exc
                self._out.put(_STOP)
                return
            if stop:
                return

    def _take(self, block: bool) -> list[DecodedFrame]:
        out: list[DecodedFrame] = []
        while self._pending:
            try:
                item = self._out.get(block=block and not out)
            except queue.Empty:
                break
            if item is _STOP:
                raise self._error if self._error is not None else RuntimeError("Mimi decode thread stopped")
            out.append(item)
            self._pending -= 1
        return out

    def poll(self) -> list[DecodedFrame]:
        """The frames decoded so far and not yet collected (never waits)."""
        if self._error is not None and self._out.empty():
            raise self._error
        return self._take(block=False)

    def finish(self) -> list[DecodedFrame]:
        """Wait for every submitted frame; return those not yet collected, in order."""
        out: list[DecodedFrame] = []
        while self._pending:
            out.extend(self._take(block=True))
        return out

    def close(self) -> None:
        """Stop the thread (frames still queued are dropped)."""
        if self._thread.is_alive():
            self._in.put(_STOP)
            self._thread.join(timeout=30)

    def __enter__(self) -> BackgroundDecoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
