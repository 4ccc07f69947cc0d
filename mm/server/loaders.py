"""Load one served model by kind into the parts its routes use (pipelines, a batching queue, a gate).

>>> load("nope", "x", None)
Traceback (most recent call last):
...
ValueError: unknown model kind 'nope'
"""

from __future__ import annotations

from typing import Any

from mm.server.config import ServerConfig


def load(kind: str, source: str, config: ServerConfig) -> dict[str, Any]:
    """``{"pipeline" | "asr" | "tts" | "encoder": ..., "queue" | "gate": ...}`` for a model of ``kind``."""
    if kind not in _LOADERS:
        raise ValueError(f"unknown model kind {kind!r}")
    return _LOADERS[kind](source, config)


def _common(config: ServerConfig) -> dict[str, Any]:
    return {"device": config.device, "dtype": config.dtype}


def _chat(source: str, config: ServerConfig) -> dict[str, Any]:
    import mm
    from mm.server.adapters import ChatEngine
    from mm.server.batching import ChatQueue

    pipe = mm.pipeline("chat", model=source, batch_size=config.batch_size, **_common(config))
    return {"pipeline": pipe,
            "queue": ChatQueue(ChatEngine(pipe), batch_size=config.batch_size, queue_size=config.queue_size)}


def _vqa(source: str, config: ServerConfig) -> dict[str, Any]:
    import mm
    from mm.server.adapters import VisionEngine
    from mm.server.batching import ChatQueue

    pipe = mm.pipeline("vqa", model=source, batch_size=config.batch_size, **_common(config))
    return {"pipeline": pipe,
            "queue": ChatQueue(VisionEngine(pipe), batch_size=config.batch_size, queue_size=config.queue_size)}


def _speech(source: str, config: ServerConfig) -> dict[str, Any]:
    import mm
    from mm.server.gate import Gate

    asr = mm.pipeline("asr", model=source, **_common(config))
    tts = mm.pipeline("tts", model=source, **_common(config))  # shares the loaded LFM2-Audio model
    return {"asr": asr, "tts": tts, "gate": Gate(config.queue_size)}


def _embedding(source: str, config: ServerConfig) -> dict[str, Any]:
    from mm.encoders.loader import load_encoder
    from mm.server.gate import Gate

    return {"encoder": load_encoder(source), "gate": Gate(config.queue_size)}


def _search(source: str, config: ServerConfig) -> dict[str, Any]:
    import mm
    from mm.server.gate import Gate

    return {"pipeline": mm.pipeline("search", index=source), "gate": Gate(config.queue_size)}


_LOADERS = {"chat": _chat, "vqa": _vqa, "speech": _speech, "embedding": _embedding, "search": _search}
