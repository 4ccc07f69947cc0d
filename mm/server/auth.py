"""API-key check: ``Authorization: Bearer KEY``, compared in constant time.

>>> check_key("Bearer s3cret", "s3cret")
>>> check_key(None, None)        # no key configured: every request is allowed
>>> check_key("Bearer nope", "s3cret")
Traceback (most recent call last):
...
mm.server.errors.APIError: incorrect API key provided
"""

from __future__ import annotations

import hmac

from mm.server.errors import APIError


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, or None.

    >>> bearer_token("Bearer abc"), bearer_token("Basic abc"), bearer_token(None)
    ('abc', None, None)
    """
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def check_key(header: str | None, api_key: str | None) -> None:
    """Raise a 401 :class:`APIError` unless ``header`` carries ``api_key`` (no key configured: allow)."""
    if api_key is None:
        return
    token = bearer_token(header)
    if token is None:
        raise APIError(401, "missing API key: send 'Authorization: Bearer KEY' (the server was started with "
                            "--api-key / MM_API_KEY)", code="invalid_api_key")
    if not hmac.compare_digest(token.encode("utf-8"), api_key.encode("utf-8")):
        raise APIError(401, "incorrect API key provided", code="invalid_api_key")
