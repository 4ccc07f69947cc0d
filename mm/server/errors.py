"""Errors in OpenAI's JSON shape: ``{"error": {"message", "type", "param", "code"}}`` with the right status.

>>> err = APIError(404, "model 'x' is not loaded", code="model_not_found", param="model")
>>> err.body()["error"]["type"], err.status
('invalid_request_error', 404)
>>> from mm.errors import InputTooLargeError
>>> from_mm_error(InputTooLargeError("too long")).status
413
"""

from __future__ import annotations

import logging
from typing import Any

from mm.errors import InputTooLargeError, MMError, UnsupportedOptionError

log = logging.getLogger(__name__)

#: OpenAI's error ``type`` for each status this server answers with
ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
               413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error",
               503: "service_unavailable_error"}


class APIError(Exception):
    """An error answered to the client with ``status`` and an OpenAI error body."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": ERROR_TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 with ``message``."""
    return APIError(400, message, param=param, code=code)


def from_mm_error(exc: MMError) -> APIError:
    """The client-facing error for an :class:`mm.errors.MMError` raised by a pipeline on the client's input."""
    if isinstance(exc, InputTooLargeError):
        return APIError(413, str(exc), code="input_too_large")
    if isinstance(exc, UnsupportedOptionError):
        return APIError(400, str(exc), code="unsupported_parameter")
    return APIError(400, str(exc), code="invalid_input")


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """One readable message (and the first offending field) from pydantic's error list.

    >>> validation_message([{"type": "extra_forbidden", "loc": ("body", "logprobs"), "msg": "Extra inputs"}])
    ("unsupported parameter 'logprobs': this server does not implement it", 'logprobs')
    """
    parts = []
    first = None
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "form")]
        name = ".".join(loc) or "body"
        first = first or name
        if err.get("type") == "extra_forbidden":
            parts.append(f"unsupported parameter {name!r}: this server does not implement it")
        elif err.get("type") == "missing":
            parts.append(f"{name!r} is required")
        else:
            parts.append(f"{name!r}: {err.get('msg', 'invalid value')}")
    return "; ".join(parts) or "the request body is not valid", first
