"""``GET /v1/models`` (the served models and their ids) and ``GET /health`` (503 until every model loaded)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request) -> dict:
    models = request.app.state.models
    return {"object": "list", "data": [slot.card() for slot in models.slots]}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict:
    from mm.server.errors import APIError

    models = request.app.state.models
    for slot in models.slots:
        if slot.id == model_id:
            return slot.card()
    raise APIError(404, f"the model {model_id!r} is not served here", code="model_not_found", param="model")


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    models = request.app.state.models
    states = {slot.id: slot.state for slot in models.slots}
    status = "ok" if all(s == "ready" for s in states.values()) else \
        ("loading" if "loading" in states.values() else "degraded")
    return JSONResponse({"status": status, "models": states}, status_code=200 if status == "ok" else 503)
