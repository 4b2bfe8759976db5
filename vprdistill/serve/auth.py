"""API-key check for the service: ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import HTTPException, Request, status

API_KEY_ENV = "VPRDISTILL_API_KEY"


def presented_key(request: Request) -> str | None:
    """The key a request carries, from ``X-API-Key`` or a bearer ``Authorization`` header."""
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def api_key_dependency(api_key: str | None) -> Callable[[Request], None]:
    """A FastAPI dependency that answers 401 unless the request carries ``api_key`` (no check when ``None``)."""
    expected = api_key.encode() if api_key else None

    def check(request: Request) -> None:
        if expected is None:
            return
        key = presented_key(request)
        # compare_digest takes as long for a near miss as for a far one: the key leaks nothing through timing.
        if key is None or not hmac.compare_digest(key.encode(), expected):
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail="missing or wrong API key (send X-API-Key or Authorization: Bearer)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check
