"""One pure ASGI middleware per service for HTTP telemetry: the server span, the RED histogram and the
access log line of every request, at the least cost per request.

It replaces OpenTelemetry's generic ASGI/FastAPI instrumentation, which for every request matched the
route a second time, decoded every header and built the span's attributes whether or not the span was
sampled: most of the instrumentation's cost on cheap endpoints. Here, per request:

- the parent context is extracted (by the global propagator) only when a propagation header is there;
- the span starts with no attributes; they are set at the end and only when it is recorded (sampled);
- the route template is the one Starlette's router put in `scope["route"]` when it matched (no second
  match; unknown routes have none, so the raw path never reaches a span name or a metric; a mounted
  sub-application would report its mount's path, and the services mount none);
- the histogram's attribute dict is built once per (route, method, status, ...) and reused;
- the access line is built only when its level is enabled, and written without a LogRecord when
  servicekit's JSON handler is the only one that would see it (logging.direct_json_handler).

Health probes get no span and no measurement (they would drown the real traffic) and log at DEBUG.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .correlation import current_correlation_id
from .logging import direct_json_handler, write_direct
from .tracing import Telemetry

access_log = logging.getLogger("servicekit.access")

HEALTH_PATHS = frozenset({"/health/live", "/health/ready"})
DURATION_METRIC = "http.server.request.duration"
INSTRUMENTATION_SCOPE = "servicekit.http"
# Any other method is reported as "_OTHER" (semantic conventions): a client must not be able to mint
# new metric series by inventing methods.
KNOWN_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"})
# Distinct (route, method, status, ...) keys are few; the cap only guards against surprises.
MAX_CACHED_ATTRIBUTE_SETS = 1024


class HttpTelemetryMiddleware:
    """Server span (W3C context continued, route template as name), `http.server.request.duration`
    per route/method/status, and one JSON access line per request with the trace IDs."""

    def __init__(self, app, fastapi_app) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self._bound: Telemetry | None = None
        self._tracer: trace.Tracer | None = None
        self._duration: Any = None
        self._propagation_headers: frozenset[bytes] = frozenset()
        self._metric_attributes: dict[tuple[Any, ...], dict[str, Any]] = {}

    def _bind(self, telemetry: Telemetry) -> None:
        """Tracer and histogram straight from this app's providers (configure_telemetry may swap them)."""
        self._tracer = telemetry.tracer_provider.get_tracer(INSTRUMENTATION_SCOPE)
        meter = telemetry.meter_provider.get_meter(INSTRUMENTATION_SCOPE)
        self._duration = meter.create_histogram(
            DURATION_METRIC,
            unit="s",
            # An exponential histogram (tracing.EXPONENTIAL_HISTOGRAMS): no bucket boundaries to advise.
            description="Duration of HTTP server requests.",
        )
        self._propagation_headers = frozenset(field.lower().encode("latin-1") for field in propagate.get_global_textmap().fields)
        self._metric_attributes = {}
        self._bound = telemetry

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        telemetry = self.fastapi_app.state.telemetry
        if telemetry is None or not telemetry.enabled:
            await self.app(scope, receive, send)
            return
        if telemetry is not self._bound:
            self._bind(telemetry)
        if scope["path"] in HEALTH_PATHS:
            await self._untraced(scope, receive, send)
            return

        started = time.perf_counter()
        method = scope["method"]
        parent = self._parent_context(scope["headers"])
        span = self._tracer.start_span(method, context=parent, kind=SpanKind.SERVER)  # type: ignore[union-attr]
        token = context.attach(trace.set_span_in_context(span, parent))
        status = 0

        async def send_tracking_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        error: BaseException | None = None
        try:
            await self.app(scope, receive, send_tracking_status)
        except BaseException as exc:
            error = exc
            raise
        finally:
            seconds = time.perf_counter() - started
            if not status:
                status = 500  # nothing was sent: the server error middleware outside answers 500
            route = getattr(scope.get("route"), "path", None)
            error_type = type(error).__qualname__ if error is not None else str(status) if status >= 500 else None
            self._duration.record(seconds, self._attributes(route, method, status, error_type, scope))
            if span.is_recording():
                self._describe(span, scope, method, route, status, error_type, error)
            if access_log.isEnabledFor(logging.INFO):
                _log_access(logging.INFO, scope, route, status, seconds, span)
            span.end()
            context.detach(token)

    async def _untraced(self, scope, receive, send) -> None:
        if not access_log.isEnabledFor(logging.DEBUG):
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def send_tracking_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_tracking_status)
        finally:
            _log_access(logging.DEBUG, scope, getattr(scope.get("route"), "path", None), status, time.perf_counter() - started)

    def _parent_context(self, headers) -> context.Context | None:
        """The caller's context when it sent a propagation header (traceparent, baggage, ...), else
        None (a new trace); nothing is decoded unless one is there."""
        carrier: dict[str, list[str]] | None = None
        for name, value in headers:
            if name in self._propagation_headers:
                if carrier is None:
                    carrier = {}
                carrier.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
        if carrier is None:
            return None
        return propagate.extract(carrier)

    def _attributes(self, route: str | None, method: str, status: int, error_type: str | None, scope) -> dict[str, Any]:
        method = method if method in KNOWN_METHODS else "_OTHER"
        scheme, version = scope.get("scheme", "http"), scope.get("http_version", "1.1")
        key = (route, method, status, error_type, scheme, version)
        attributes = self._metric_attributes.get(key)
        if attributes is None:
            attributes = {"http.request.method": method, "http.response.status_code": status, "url.scheme": scheme,
                          "network.protocol.version": version}
            if route is not None:
                attributes["http.route"] = route
            if error_type is not None:
                attributes["error.type"] = error_type
            if len(self._metric_attributes) < MAX_CACHED_ATTRIBUTE_SETS:
                self._metric_attributes[key] = attributes
        return attributes

    @staticmethod
    def _describe(span, scope, method: str, route: str | None, status: int, error_type: str | None,
                  error: BaseException | None) -> None:
        """Span name and attributes (stable HTTP semantic conventions): for recorded spans only."""
        known = method if method in KNOWN_METHODS else "_OTHER"
        attributes: dict[str, Any] = {
            "http.request.method": known,
            "url.scheme": scope.get("scheme", "http"),
            "url.path": scope.get("root_path", "") + scope["path"],
            "network.protocol.version": scope.get("http_version", "1.1"),
            "http.response.status_code": status,
        }
        if known != method:
            attributes["http.request.method_original"] = method
        if scope.get("query_string"):
            attributes["url.query"] = scope["query_string"].decode("latin-1")
        if route is not None:
            attributes["http.route"] = route
        server, client = scope.get("server"), scope.get("client")
        if server:
            attributes["server.address"], attributes["server.port"] = server[0], server[1]
        if client:
            attributes["client.address"], attributes["client.port"] = client[0], client[1]
        for name, value in scope["headers"]:
            if name == b"user-agent":
                attributes["user_agent.original"] = value.decode("latin-1")
                break
        correlation_id = current_correlation_id()
        if correlation_id:
            # Searchable in X-Ray / the trace backend next to the logs' correlation_id.
            attributes["correlation.id"] = correlation_id
        if error_type is not None:
            attributes["error.type"] = error_type
        span.set_attributes(attributes)
        span.update_name(f"{known} {route}" if route is not None else known)
        if error is not None and not isinstance(error, Exception):
            # Exceptions are recorded by the catch-all inside (which answers 500 or re-raises);
            # what it lets through (cancellation, ...) is recorded here.
            span.record_exception(error)
        # 4xx is the client's error, not the server's (semantic conventions); a status already set by
        # the catch-all (with the exception's message) is kept.
        current = getattr(span, "status", None)
        if error_type is not None and (current is None or current.status_code is StatusCode.UNSET):
            span.set_status(Status(StatusCode.ERROR))


def _log_access(level: int, scope, route: str | None, status: int, seconds: float, span: trace.Span | None = None) -> None:
    """The access line: written straight to servicekit's JSON handler when nothing else would see the
    record (the usual case: the same line for 40 % less CPU than the LogRecord/Handler/Formatter
    chain), else logged as a record (a capture handler, a filter, a non-JSON format)."""
    method, path = scope["method"], scope["path"]
    fields = {"method": method, "route": route, "path": scope.get("root_path", "") + path, "status": status,
              "duration_ms": round(seconds * 1000.0, 3)}
    handler = direct_json_handler(access_log, level)
    line = None
    if handler is not None:
        try:
            line = handler.formatter.direct_line(level, access_log.name, f"{method} {path} {status}", fields, span)  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - a value the shortcut cannot write: logging's own path takes it
            line = None
    if line is None:
        access_log.log(level, "%s %s %s", method, path, status, extra=fields)
        return
    try:
        write_direct(handler, line)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - as logging does, a line that cannot be written never fails the request
        pass  # (and is not retried through logging: part of it may already be out)
