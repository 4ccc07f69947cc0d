"""The models a server loads, their client-facing ids, and their state (loading, ready, failed).

Models load in a background thread so the server answers at once: a request for a model still
loading gets 503 (with ``Retry-After``), one for a model that is not served gets 404.

>>> from mm.server.config import ServerConfig
>>> models = ModelSet(ServerConfig(chat_model="/m/LFM2-350M", embedding_model="minilm"))
>>> [(s.id, s.kind, s.state) for s in models.slots]
[('LFM2-350M', 'chat', 'loading'), ('minilm', 'embedding', 'loading')]
>>> models.get("nope", ("chat",))
Traceback (most recent call last):
...
mm.server.errors.APIError: the model 'nope' is not served here; available for this endpoint: 'LFM2-350M'
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm.errors import choices_text
from mm.server.config import ServerConfig
from mm.server.errors import APIError

log = logging.getLogger(__name__)

#: which endpoint serves which kind of model
ENDPOINTS = {"chat": "/v1/chat/completions", "vqa": "/v1/chat/completions",
             "speech": "/v1/audio/transcriptions and /v1/audio/speech", "embedding": "/v1/embeddings",
             "search": "/v1/search"}


@dataclass
class Slot:
    """One served model."""

    id: str
    kind: str  # chat, vqa, speech, embedding, search
    source: str
    state: str = "loading"  # loading, ready, failed
    error: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    parts: dict[str, Any] = field(default_factory=dict)  # pipelines, queues, gates

    def card(self) -> dict[str, Any]:
        """The ``/v1/models`` entry."""
        info = {"kind": self.kind, "endpoint": ENDPOINTS[self.kind], "state": self.state}
        if "queue" in self.parts:
            info["queue"] = self.parts["queue"].stats()
        return {"id": self.id, "object": "model", "created": self.created, "owned_by": "mm", "mm": info}


def _model_id(source: Any) -> str:
    text = str(source)
    path = Path(text).expanduser()
    return path.name if path.name and (path.exists() or "/" in text or "\\" in text) else text


class ModelSet:
    """All slots of a server; :meth:`load` fills them (call it in a thread)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.slots: list[Slot] = []
        for kind, source in (("chat", config.chat_model), ("vqa", config.vqa_model),
                             ("speech", config.speech_model), ("embedding", config.embedding_model),
                             ("search", config.search_index)):
            if source is None:
                continue
            name = _model_id(source)
            if kind == "search":
                name = f"search-{name}"
            if any(s.id == name for s in self.slots):
                name = f"{name}-{kind}"
            self.slots.append(Slot(name, kind, str(source)))
        self.loaded = threading.Event()

    # -- loading ---------------------------------------------------------------------------------
    def load(self) -> None:
        """Load every slot in order; a failure marks that slot failed (its requests get 503) and goes on."""
        from mm.server import loaders

        for slot in self.slots:
            t0 = time.perf_counter()
            try:
                slot.parts = loaders.load(slot.kind, slot.source, self.config)
                slot.state = "ready"
                log.info("loaded %s model %r in %.1fs", slot.kind, slot.id, time.perf_counter() - t0)
            except Exception as exc:
                slot.state, slot.error = "failed", f"{type(exc).__name__}: {exc}"
                log.error("could not load %s model %r from %s: %s", slot.kind, slot.id, slot.source, exc)
        self.loaded.set()

    def close(self) -> None:
        for slot in self.slots:
            queue = slot.parts.get("queue")
            if queue is not None:
                queue.close()

    # -- lookup ----------------------------------------------------------------------------------
    def of_kind(self, kinds: tuple[str, ...]) -> list[Slot]:
        return [s for s in self.slots if s.kind in kinds]

    def get(self, model_id: str | None, kinds: tuple[str, ...]) -> Slot:
        """The ready slot named ``model_id`` (None: the only one of these kinds), or 404/400/503."""
        candidates = self.of_kind(kinds)
        if model_id is None:
            if len(candidates) != 1:
                raise APIError(400, f"pass 'model'; this endpoint serves {choices_text(s.id for s in candidates)}"
                               if candidates else self._none_loaded(kinds), param="model")
            return self.ready(candidates[0])
        slot = next((s for s in self.slots if s.id == model_id), None)
        if slot is None:
            available = choices_text(s.id for s in candidates) or "none"
            raise APIError(404, f"the model {model_id!r} is not served here; available for this endpoint: "
                                f"{available}", code="model_not_found", param="model")
        if slot.kind not in kinds:
            raise APIError(400, f"the model {model_id!r} is a {slot.kind} model; use {ENDPOINTS[slot.kind]}",
                           code="wrong_endpoint", param="model")
        return self.ready(slot)

    def first(self, kind: str) -> Slot | None:
        return next((s for s in self.slots if s.kind == kind), None)

    @staticmethod
    def ready(slot: Slot) -> Slot:
        if slot.state == "loading":
            raise APIError(503, f"the model {slot.id!r} is still loading; retry shortly", code="model_loading",
                           headers={"Retry-After": "5"})
        if slot.state == "failed":
            raise APIError(503, f"the model {slot.id!r} failed to load ({slot.error}); fix it and restart the "
                                "server", code="model_failed")
        return slot

    @staticmethod
    def _none_loaded(kinds: tuple[str, ...]) -> str:
        flags = {"chat": "--chat-model", "vqa": "--vqa-model", "speech": "--speech-model",
                 "embedding": "--embedding-model", "search": "--search-index"}
        return f"no model for this endpoint is loaded; start the server with {' or '.join(flags[k] for k in kinds)}"
