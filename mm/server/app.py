"""The FastAPI app factory: routes, OpenAI-shaped error handlers, the key/size guard, background loading.

>>> from fastapi.testclient import TestClient
>>> from mm.server import ServerConfig, create_app
>>> with TestClient(create_app(ServerConfig(api_key="k"))) as client:
...     client.get("/v1/models").status_code, client.get("/v1/models", headers={"Authorization": "Bearer k"}).json()
(401, {'object': 'list', 'data': []})
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from mm.errors import MMError
from mm.server.batching import QueueFull
from mm.server.config import ServerConfig
from mm.server.errors import APIError, from_mm_error, validation_message
from mm.server.guard import Guard
from mm.server.models import ModelSet

log = logging.getLogger(__name__)


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def create_app(config: ServerConfig, *, load_models: bool = True) -> FastAPI:
    """The app for ``config``; its models load in a background thread once it starts (unless told not to)."""
    from mm.server.routes import ROUTERS

    models = ModelSet(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if load_models:
            threading.Thread(target=models.load, name="mm-load", daemon=True).start()
        try:
            yield
        finally:
            models.close()

    app = FastAPI(title="mm OpenAI-compatible API", version="1", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.config = config
    app.state.models = models
    for router in ROUTERS:
        app.include_router(router)
    _add_handlers(app)
    app.add_middleware(Guard, api_key=config.api_key, max_body_bytes=config.max_body_bytes)
    return app


def _add_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(list(exc.errors()))
        return error_response(APIError(400, message, param=param, code="invalid_request"))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        cause = exc.__cause__
        if isinstance(cause, APIError):  # e.g. the body grew past the limit while FastAPI read it
            return error_response(cause)
        status = exc.status_code if exc.status_code in (400, 401, 404, 405, 413, 429, 503) else 400
        message = "no such endpoint" if exc.status_code == 404 else str(exc.detail)
        return error_response(APIError(status, message))

    @app.exception_handler(QueueFull)
    async def full(_: Request, exc: QueueFull) -> JSONResponse:
        return error_response(APIError(429, f"too many waiting requests ({exc}); retry later", code="queue_full",
                                       headers={"Retry-After": "1"}))

    @app.exception_handler(MMError)
    async def mm_error(_: Request, exc: MMError) -> JSONResponse:
        return error_response(from_mm_error(exc))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error_response(APIError(500, f"internal error: {type(exc).__name__}", code="internal_error"))


def run(config: ServerConfig, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> Any:
    """Serve ``config`` with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(config), host=host, port=port, log_level=log_level, access_log=False)
