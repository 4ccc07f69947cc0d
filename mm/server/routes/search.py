"""``POST /v1/search`` (mm's extension): ``{query, k, filters, hybrid}`` -> ``{data: [{id, score, text, metadata}]}``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from mm.errors import MMError
from mm.server import adapters
from mm.server.batching import QueueFull
from mm.server.errors import APIError, bad_request, from_mm_error
from mm.server.schemas import SearchRequest

router = APIRouter()


@router.post("/v1/search")
async def search(body: SearchRequest, request: Request) -> Any:
    slot = request.app.state.models.get(body.model, ("search",))
    if not body.query.strip():
        raise bad_request("query is empty; pass some text to search for", param="query")
    options = {"k": body.k, "filters": body.filters, "hybrid": body.hybrid}
    try:
        async with slot.parts["gate"]:
            hits = await asyncio.to_thread(adapters.search, slot.parts["pipeline"], body.query, options)
    except QueueFull as exc:
        raise APIError(429, f"the search index {slot.id!r} has too many waiting requests ({exc}); retry later",
                       code="queue_full", headers={"Retry-After": "1"}) from exc
    except MMError as exc:
        raise from_mm_error(exc) from exc
    return {"object": "list", "model": slot.id, "data": hits}
