"""``POST /v1/embeddings`` with the dense encoder (``--embedding-model``)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from fastapi import APIRouter, Request

from mm.errors import MMError
from mm.server import adapters
from mm.server.batching import QueueFull
from mm.server.errors import APIError, bad_request, from_mm_error
from mm.server.schemas import EmbeddingRequest

router = APIRouter()

MAX_INPUTS = 2048


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> Any:
    slot = request.app.state.models.get(body.model, ("embedding",))
    encoder = slot.parts["encoder"]
    if adapters.is_multivector(encoder):
        raise bad_request(f"the model {slot.id!r} is a ColBERT (multi-vector) model: it gives one vector per token, "
                          "not one per text; search with it through POST /v1/search", param="model",
                          code="multivector_model")
    texts = body.texts()
    if not texts or len(texts) > MAX_INPUTS:
        raise bad_request(f"input must hold 1 to {MAX_INPUTS} texts, got {len(texts)}", param="input")
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise bad_request(f"input {empty[0]} is empty; every input must have some text", param="input")
    if body.dimensions is not None and body.dimensions != encoder.dim:
        raise bad_request(f"dimensions={body.dimensions} is not supported; {slot.id!r} gives {encoder.dim}-d "
                          "vectors (omit dimensions)", param="dimensions")
    try:
        async with slot.parts["gate"]:
            vectors, tokens = await asyncio.to_thread(adapters.embed, encoder, texts)
    except QueueFull as exc:
        raise APIError(429, f"the model {slot.id!r} has too many waiting requests ({exc}); retry later",
                       code="queue_full", headers={"Retry-After": "1"}) from exc
    except MMError as exc:
        raise from_mm_error(exc) from exc
    data = []
    for i, vector in enumerate(vectors):
        value: Any = base64.b64encode(vector.astype("<f4").tobytes()).decode() \
            if body.encoding_format == "base64" else vector.tolist()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {"object": "list", "data": data, "model": slot.id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
