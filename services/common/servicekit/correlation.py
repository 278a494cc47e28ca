"""Correlation IDs: one per request, taken from `X-Correlation-Id` or generated, carried everywhere.

The ID lives in a contextvar so logs, outbound HTTP/gRPC calls and published events pick it up
without being passed around explicitly.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token

HEADER = "X-Correlation-Id"
HEADER_LOWER = HEADER.lower()
GRPC_METADATA_KEY = "x-correlation-id"
EVENT_FIELD = "correlation_id"

# Accept client IDs only if they are harmless in logs and headers; otherwise make our own.
_VALID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

_correlation_id: ContextVar[str | None] = ContextVar("servicekit_correlation_id", default=None)


def current_correlation_id() -> str | None:
    return _correlation_id.get()


def new_correlation_id() -> str:
    return str(uuid.uuid4())


def is_valid(value: str | None) -> bool:
    return bool(value) and bool(_VALID.fullmatch(value))  # type: ignore[arg-type]


def set_correlation_id(value: str | None) -> Token:
    return _correlation_id.set(value)


def reset_correlation_id(token: Token) -> None:
    _correlation_id.reset(token)


@contextlib.contextmanager
def correlation_scope(value: str | None = None) -> Iterator[str]:
    """Run a block with `value` (or a fresh ID when missing/invalid) as the correlation ID."""
    cid = value if is_valid(value) else new_correlation_id()
    token = _correlation_id.set(cid)
    try:
        yield cid
    finally:
        _correlation_id.reset(token)


def outbound_headers(headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """Copy of `headers` with X-Correlation-Id added (unless the caller set one)."""
    result = dict(headers or {})
    cid = current_correlation_id()
    if cid and not any(k.lower() == HEADER_LOWER for k in result):
        result[HEADER] = cid
    return result


def grpc_metadata(metadata: object = None) -> list[tuple[str, str]]:
    """gRPC metadata list with x-correlation-id added (unless present)."""
    items: list[tuple[str, str]] = list(metadata or [])  # type: ignore[call-overload]
    cid = current_correlation_id()
    if cid and not any(k == GRPC_METADATA_KEY for k, _ in items):
        items.append((GRPC_METADATA_KEY, cid))
    return items


def from_grpc_metadata(metadata: object) -> str | None:
    """Correlation ID from a grpc.aio ServicerContext's invocation_metadata(), if valid."""
    for key, value in metadata or ():  # type: ignore[union-attr]
        if key == GRPC_METADATA_KEY and isinstance(value, str) and is_valid(value):
            return value
    return None


class CorrelationMiddleware:
    """Pure ASGI: take or generate the ID, expose it to the request, echo it on the response."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", ()):
            if name == b"x-correlation-id":
                incoming = value.decode("latin-1")
                break
        cid = incoming if is_valid(incoming) else new_correlation_id()
        token = _correlation_id.set(cid)
        # (The server span, inside this middleware, carries it as `correlation.id`: http_telemetry.)
        raw = cid.encode("latin-1")

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-correlation-id"]
                headers.append((b"x-correlation-id", raw))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _correlation_id.reset(token)
