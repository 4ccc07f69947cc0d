"""Everything the server reads from mm's pipelines and their results, in one place.

Pipeline results are :class:`mm.results.GenerationResult` s (``.text``, ``.token_ids``, ``.usage`` ...)
and :class:`mm.results.SearchResults`; the routes only call the functions here, so a change of
result shape is a change of this module alone.

>>> from types import SimpleNamespace as NS
>>> hit = NS(id="d1", score=0.5, text="Paris", metadata={"lang": "fr"}, chunk=None)
>>> search_hit(hit)
{'id': 'd1', 'score': 0.5, 'text': 'Paris', 'metadata': {'lang': 'fr'}}
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np


# -- chat models: what the batching queue needs from a chat or VQA pipeline -----------------------
class ChatEngine:
    """A text chat pipeline seen as: conversations in -> one left-padded batch of model inputs."""

    kind = "chat"

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.backbone = pipeline.backbone

    def prepare(self, conversation: list[dict[str, Any]], options: dict[str, Any]) -> Any:
        """Validate one conversation (runs in the request's thread, before queueing); no options apply."""
        return self.pipeline.preprocess(conversation, **options)

    def encode(self, items: Sequence[Any]) -> dict[str, Any]:
        return self.backbone.encode_chat(list(items))


class VisionEngine:
    """A VQA pipeline seen the same way; ``prepare`` loads and tiles the images."""

    kind = "vqa"

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.backbone = pipeline.vl

    def prepare(self, conversation: list[dict[str, Any]], options: dict[str, Any]) -> Any:
        return self.pipeline.preprocess(conversation, **options)

    def encode(self, items: Sequence[Any]) -> dict[str, Any]:
        inputs, _, _ = self.pipeline._inputs(list(items))
        return inputs


# -- speech -----------------------------------------------------------------------------------------
def transcribe(asr: Any, audio: bytes, options: dict[str, Any]) -> dict[str, Any]:
    """Run ASR on an uploaded file; ``{"text", "duration", "segments": [{start, end, text}], "tokens"}``."""
    from mm.media.audio import load_audio

    clip = load_audio(audio, None, target_rate=16000, max_seconds=asr.max_input_seconds, min_seconds=0.01)
    result = asr((clip.samples, clip.sample_rate), **options)
    segments = [{"start": float(s.start), "end": float(s.end), "text": s.text} for s in result.segments]
    return {"text": result.text, "duration": len(clip.samples) / clip.sample_rate, "segments": segments,
            "tokens": len(result.token_ids)}


def check_speech_input(tts: Any, text: str, options: dict[str, Any]) -> None:
    """Raise the pipeline's :class:`mm.errors.MMError` for text or a voice it would refuse."""
    tts.preprocess(text, **options)


def speech_chunks(tts: Any, text: str, options: dict[str, Any]) -> Iterator[tuple[np.ndarray, int]]:
    """Yield ``(float32 samples, sample rate)`` pieces of synthesised speech as they are generated."""
    for piece in tts.stream(text, **options):
        if hasattr(piece, "samples"):
            yield np.asarray(piece.samples, dtype=np.float32), int(piece.sample_rate)


def tts_sample_rate(tts: Any) -> int:
    from mm.pipelines.speech import OUTPUT_RATE

    return OUTPUT_RATE


def tts_voices() -> tuple[str, ...]:
    from mm.pipelines.speech import TTS_VOICES

    return TTS_VOICES


# -- embeddings and search --------------------------------------------------------------------------
def is_multivector(encoder: Any) -> bool:
    """Whether the encoder gives one vector per token (ColBERT) rather than one per text."""
    from mm.encoders.dense import DenseEncoder

    return not isinstance(encoder, DenseEncoder)


def embed(encoder: Any, texts: list[str]) -> tuple[np.ndarray, int]:
    """``(vectors [n, dim], prompt tokens)`` for ``texts`` with a dense encoder."""
    vectors = encoder.encode_documents(texts)
    tokens = sum(encoder.token_lengths(texts))
    return np.asarray(vectors, dtype=np.float32), int(tokens)


def search_hit(hit: Any) -> dict[str, Any]:
    """One hit as the API's ``{id, score, text, metadata}``."""
    return {"id": str(hit.id), "score": float(hit.score), "text": hit.text, "metadata": dict(hit.metadata or {})}


def search(pipeline: Any, query: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    return [search_hit(hit) for hit in pipeline(query, **options)]
