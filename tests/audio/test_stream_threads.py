"""A speech stream may be resumed on another thread (as web servers do) without lock errors."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

import mm


def test_stream_resumed_on_other_threads(tiny_audio):
    pipe = mm.pipeline("speech-to-speech", model=tiny_audio, dtype="float32")
    wave = (0.1 * np.sin(np.linspace(0, 400, 16000))).astype(np.float32)
    stream = pipe.stream(wave, sampling_rate=16000, max_new_tokens=8)
    with ThreadPoolExecutor(max_workers=3) as pool:
        items = []
        while True:  # every next() on a fresh worker thread, like Gradio's queue
            item = pool.submit(next, stream, None).result()
            if item is None:
                break
            items.append(item)
    assert items
    # the model lock was released at the end: a second call does not block
    assert pipe(wave, sampling_rate=16000, max_new_tokens=4).stop_reason
