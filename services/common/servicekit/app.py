"""`create_service_app`: a FastAPI app with the behaviour every service shares.

Request path, outermost first:
  edge (PUBLIC_PATH strip, telemetry selection) -> correlation id -> HTTP telemetry (server span,
  RED histogram, access log: servicekit.http_telemetry; only with INSTRUMENTATION=on) -> catch-all
  500 -> body size limit -> body text check (lone surrogates) -> FastAPI routing/handlers.

Errors raised by handlers: ApiError -> its status; botocore errors meaning the store is unreachable or
throttling -> 503 `storage_unavailable` + Retry-After (aws.is_unavailable); anything else -> 500.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import aws
from .correlation import CorrelationMiddleware
from .errors import ApiError, ErrorResponse, code_for_status, error_body
from .health import Health
from .http_telemetry import HttpTelemetryMiddleware
from .logging import configure_logging, get_logger
from .settings import ServiceSettings
from .tracing import configure_telemetry, reset_active_telemetry, set_active_telemetry

log = get_logger("servicekit.app")


def _json_error(status: int, code: str, message: str, details: Any = None, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=dict(headers or {}))


async def _send_json_error(send, status: int, code: str, message: str, details: Any = None) -> None:
    response = _json_error(status, code, message, details)
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


# --- pure ASGI middlewares -------------------------------------------------------------------------


class EdgeMiddleware:
    """Outermost layer: strips PUBLIC_PATH (the ALB forwards /api/<svc>/... unchanged) and routes this
    request's telemetry to the app's own providers."""

    def __init__(self, app, fastapi_app: FastAPI, prefix: str) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.prefix = prefix
        self.prefix_bytes = prefix.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket") and self.prefix:
            path = scope.get("path", "")
            if path == self.prefix or path.startswith(self.prefix + "/"):
                stripped = path[len(self.prefix) :] or "/"
                scope = dict(scope)
                scope["path"] = stripped
                raw = scope.get("raw_path")
                if raw is not None and raw.startswith(self.prefix_bytes):
                    scope["raw_path"] = raw[len(self.prefix_bytes) :] or b"/"
                # Keeps request.url and the docs' openapi.json link pointing at the public URL.
                scope["root_path"] = scope.get("root_path", "") + self.prefix
        telemetry = getattr(self.fastapi_app.state, "telemetry", None)
        if telemetry is None or not telemetry.enabled:
            await self.app(scope, receive, send)
            return
        token = set_active_telemetry(telemetry)
        try:
            await self.app(scope, receive, send)
        finally:
            reset_active_telemetry(token)


class _BodyTooLarge(StarletteHTTPException):
    # An HTTPException so FastAPI's body parsing re-raises it instead of turning it into a 400.
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds {limit} bytes")


class BodyLimitMiddleware:
    """413 for bodies above MAX_BODY_BYTES, whether announced by Content-Length or streamed chunked."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await _send_json_error(send, 400, "bad_request", "invalid Content-Length header")
                    return
                if length > self.max_bytes:
                    await _send_json_error(send, 413, "payload_too_large", f"request body exceeds {self.max_bytes} bytes")
                    return
                break

        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge as exc:
            # Reached only when the body was read outside FastAPI's handlers (e.g. by a middleware).
            if started:
                raise
            await _send_json_error(send, 413, "payload_too_large", exc.detail)


# A UTF-16 surrogate written as a JSON escape; only lone ones (not half of a pair) are invalid.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _has_lone_surrogate(body: bytes) -> bool:
    try:
        json.dumps(json.loads(body), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except (ValueError, RecursionError):  # not (sane) JSON: FastAPI's own parsing answers it
        return False
    return False


class JsonTextMiddleware:
    """422 for a body holding a lone surrogate escape ("\\ud800"). Python's json accepts it, but the
    string cannot be encoded as UTF-8, so hashing, storing or echoing it would end in a 500."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        messages = [await receive()]
        while messages[-1]["type"] == "http.request" and messages[-1].get("more_body", False):
            messages.append(await receive())
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        if _SURROGATE_ESCAPE.search(body) and _has_lone_surrogate(body):
            message = "body: strings must be valid Unicode (lone surrogate escape)"
            error = {"loc": ["body"], "msg": message, "type": "string_unicode"}
            await _send_json_error(send, 422, "validation_error", message, {"errors": [error]})
            return

        async def replay():
            if messages:
                return messages.pop(0)
            return await receive()

        await self.app(scope, replay, send)


class CatchAllMiddleware:
    """Unexpected exceptions -> logged with traceback, recorded on the span, answered 500 JSON."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            span = trace.get_current_span()
            if span.is_recording():
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            log.error("unhandled error: %s: %s", type(exc).__name__, exc, exc_info=exc)
            if started:
                raise
            await _send_json_error(send, 500, "internal_error", "internal server error")


# --- error handlers ------------------------------------------------------------------------------


async def _api_error_handler(request: Request, exc: ApiError) -> JSONResponse:
    if exc.status >= 500:
        log.warning("api error %s %s: %s", exc.status, exc.code, exc.message)
    return _json_error(exc.status, exc.code, exc.message, exc.details, exc.headers)


async def _http_exception_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    status = exc.status_code
    if status == 404:
        message = "not found" if exc.detail in (None, "Not Found") else str(exc.detail)
    elif status == 405:
        message = f"method {request.method} not allowed"
    else:
        message = str(exc.detail) if exc.detail else code_for_status(status).replace("_", " ")
    return _json_error(status, code_for_status(status), message, headers=getattr(exc, "headers", None))


async def _aws_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """The service's table (or another AWS dependency) is unreachable or throttling: 503, so clients retry.

    Any other botocore error is a bug or a refused request: re-raised to the catch-all (500 + traceback)."""
    if not aws.is_unavailable(exc):
        raise exc
    reason = aws.error_code(exc) or type(exc).__name__
    span = trace.get_current_span()
    if span.is_recording():
        span.record_exception(exc)
    log.warning("storage unavailable: %s", reason, extra={"aws_error": reason})
    error = aws.storage_unavailable(aws.retry_after_seconds(exc))
    return _json_error(error.status, error.code, error.message, headers=error.headers)


def _clean_validation_errors(errors: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    # No "input" echo: it may hold passwords or huge payloads.
    return [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in errors]


async def _validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = _clean_validation_errors(exc.errors())
    first = errors[0] if errors else None
    message = f"{'.'.join(first['loc'])}: {first['msg']}" if first else "request validation failed"
    return _json_error(422, "validation_error", message, {"errors": errors})


# --- OpenAPI: document our error body instead of FastAPI's default 422 shape ------------------------


def _install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes, description=app.description)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        err_schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in err_schema.pop("$defs", {}).items():
            components[name] = sub
        components["ErrorResponse"] = err_schema
        ref = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                responses = operation["responses"]
                if "422" in responses:
                    responses["422"] = {"description": "Validation error", "content": ref}
                # Any 4xx (401, 404, 405, 413, ...) carries the standard error body.
                responses.setdefault("4XX", {"description": "Client error", "content": ref})
                if "health" not in operation.get("tags", ()):
                    responses.setdefault("503", {"description": "storage_unavailable (retry after Retry-After seconds)", "content": ref})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


# --- health routes -------------------------------------------------------------------------------


def _health_router(health: Health) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/health/live", summary="Liveness: the process is up")
    async def live() -> dict[str, str]:
        return {"status": "live"}

    @router.get(
        "/health/ready",
        summary="Readiness: not draining and every dependency check passes",
        responses={503: {"model": ErrorResponse, "description": "Not ready"}},
    )
    async def ready():
        ok, report = await health.readiness()
        if ok:
            return {"status": "ready", "checks": report}
        # The reasons go to the log only: the path is public (/api/<service>/health/ready through the edge), and an
        # AWS error names accounts, roles, tables and secrets.
        failing = {name: reason for name, reason in report.items() if reason != "ok"}
        log.warning("not ready: %s", "; ".join(f"{name}: {reason}" for name, reason in failing.items()))
        checks = {name: "ok" if reason == "ok" else ("draining" if name == "draining" else "failing") for name, reason in report.items()}
        return _json_error(503, "not_ready", "not ready: " + ", ".join(failing), {"checks": checks})

    return router


async def _call_all(callbacks: Iterable[Callable[[], Any]]) -> None:
    for callback in callbacks:
        result = callback()
        if inspect.isawaitable(result):
            await result


def create_service_app(
    settings: ServiceSettings,
    *,
    title: str,
    version: str,
    routers: list[APIRouter] | tuple[APIRouter, ...] = (),
    readiness_checks: Mapping[str, Callable[[], Awaitable[None]]] | None = None,
    on_startup: Iterable[Callable[[], Any]] = (),
    on_shutdown: Iterable[Callable[[], Any]] = (),
    description: str = "",
) -> FastAPI:
    """Build the service's FastAPI app (see module docstring for the request path)."""
    configure_logging(settings.service_name, settings.log_level, json_format=settings.instrumentation)
    health = Health(readiness_checks or {})
    startup, shutdown = list(on_startup), list(on_shutdown)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await _call_all(startup)
        try:
            yield
        finally:
            # Telemetry is flushed by servicekit.server.run once the servers have stopped.
            await _call_all(reversed(shutdown))

    # FastAPI's own OpenTelemetry support stays off: HttpTelemetryMiddleware does that job, and
    # FastAPI's would add a span per dependency, endpoint and serialization to every request.
    native_telemetry_off = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(title=title, version=version, description=description, lifespan=lifespan, telemetry=native_telemetry_off)
    app.state.settings = settings
    app.state.health = health
    app.state.telemetry = None

    app.add_exception_handler(ApiError, _api_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(ClientError, _aws_error_handler)
    app.add_exception_handler(BotoCoreError, _aws_error_handler)

    # add_middleware prepends: the last added runs first.
    app.add_middleware(JsonTextMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(CatchAllMiddleware)
    if settings.instrumentation:
        app.add_middleware(HttpTelemetryMiddleware, fastapi_app=app)
    app.add_middleware(CorrelationMiddleware)

    app.include_router(_health_router(health))
    for router in routers:
        app.include_router(router)
    _install_openapi(app)

    configure_telemetry(settings, app)

    # Wrap whatever stack FastAPI builds with the edge layer.
    inner_build = app.build_middleware_stack
    prefix = settings.normalized_public_path

    def build_middleware_stack():
        return EdgeMiddleware(inner_build(), app, prefix)

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]
    return app
