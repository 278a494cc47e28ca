"""HttpTelemetryMiddleware: the server span, RED histogram and access line of every request, with no
span work for unsampled requests and no raw paths in span names or metrics."""

from __future__ import annotations

import io
import json
import secrets

import httpx
import pytest
from fastapi import APIRouter
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from servicekit.app import create_service_app
from servicekit.http_telemetry import HttpTelemetryMiddleware
from servicekit.logging import configure_logging
from servicekit.tracing import configure_telemetry

router = APIRouter()


@router.get("/v1/items/{item_id}")
async def get_item(item_id: int) -> dict:
    return {"id": item_id}


def _points(reader: InMemoryMetricReader, name: str = "http.server.request.duration") -> list:
    data = reader.get_metrics_data()
    return [
        point
        for rm in (data.resource_metrics if data else [])
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def _traceparent(sampled: bool) -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}", trace_id, span_id


@pytest.fixture
def service(make_settings):
    """An app tracing nothing on its own (parent-based, root never sampled): the caller's traceparent
    decides, so one test can send a sampled and an unsampled request. Logs go to a buffer."""
    settings = make_settings(public_path="/api/items", otel_traces_sampler="parentbased_always_off")
    app = create_service_app(settings, title="items", version="1", routers=[router])
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    configure_telemetry(settings, app, span_exporter=exporter, metric_reader=reader)
    stream = io.StringIO()
    configure_logging(settings.service_name, "INFO", stream=stream)
    yield app, exporter, reader, stream
    configure_logging(settings.service_name, "INFO")


def _access_lines(stream: io.StringIO) -> list[dict]:
    return [line for line in map(json.loads, stream.getvalue().splitlines()) if line["logger"] == "servicekit.access"]


async def test_sampled_request_gets_a_described_span_and_unsampled_one_none_but_both_are_measured(service, monkeypatch):
    app, exporter, reader, stream = service
    described = []
    original = HttpTelemetryMiddleware._describe

    def spy(span, *args):
        described.append(span.get_span_context().trace_id)
        original(span, *args)

    monkeypatch.setattr(HttpTelemetryMiddleware, "_describe", staticmethod(spy))
    sampled, sampled_trace, caller_span = _traceparent(sampled=True)
    unsampled, unsampled_trace, _ = _traceparent(sampled=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        first = await client.get("/api/items/v1/items/1?verbose=1", headers={"traceparent": sampled, "X-Correlation-Id": "corr-s",
                                                                             "User-Agent": "probe/1"})
        second = await client.get("/api/items/v1/items/2", headers={"traceparent": unsampled})
    assert first.status_code == second.status_code == 200

    (span,) = exporter.get_finished_spans()
    # The caller's trace continues: same trace id, the caller's span as parent.
    assert format(span.context.trace_id, "032x") == sampled_trace
    assert format(span.parent.span_id, "016x") == caller_span
    assert span.kind == SpanKind.SERVER
    assert span.name == "GET /v1/items/{item_id}"
    attributes = dict(span.attributes)
    assert attributes["http.route"] == "/v1/items/{item_id}"
    assert attributes["http.request.method"] == "GET"
    assert attributes["http.response.status_code"] == 200
    assert attributes["url.path"] == "/api/items/v1/items/1"
    assert attributes["url.query"] == "verbose=1"
    assert attributes["user_agent.original"] == "probe/1"
    assert attributes["correlation.id"] == "corr-s"
    assert span.status.status_code == StatusCode.UNSET
    # The unsampled request's span was never described (no attributes built, no headers decoded).
    assert [format(t, "032x") for t in described] == [sampled_trace]

    # Both requests are in the RED histogram: metrics do not depend on sampling.
    (point,) = _points(reader)
    assert point.count == 2
    assert point.attributes == {"http.request.method": "GET", "http.response.status_code": 200, "http.route": "/v1/items/{item_id}",
                                "url.scheme": "http", "network.protocol.version": "1.1"}
    # Both access lines carry the trace id they belong to, the unsampled one too.
    lines = _access_lines(stream)
    assert [line["trace_id"] for line in lines] == [sampled_trace, unsampled_trace]
    assert lines[1]["xray_trace_id"] == f"1-{unsampled_trace[:8]}-{unsampled_trace[8:]}"
    assert (lines[0]["route"], lines[0]["path"], lines[0]["status"], lines[0]["correlation_id"]) == (
        "/v1/items/{item_id}", "/api/items/v1/items/1", 200, "corr-s")


async def test_unknown_routes_and_methods_never_put_the_raw_path_or_method_in_names_or_metrics(service):
    app, exporter, reader, stream = service
    sampled, _, _ = _traceparent(sampled=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        for n in range(20):
            response = await client.get(f"/v1/no-such-thing/{n}", headers={"traceparent": sampled})
            assert response.status_code == 404
        wrong_method = await client.delete("/v1/items/5", headers={"traceparent": sampled})
        invented = await client.request("FROB", "/v1/items/6", headers={"traceparent": sampled})
    assert wrong_method.status_code == invented.status_code == 405

    spans = exporter.get_finished_spans()
    unknown = [span for span in spans if span.attributes["http.response.status_code"] == 404]
    assert len(unknown) == 20
    assert {span.name for span in unknown} == {"GET"}
    assert not any("http.route" in span.attributes for span in unknown)
    # A known path with the wrong method: the route template, not the path.
    by_method = {span.attributes["http.request.method"]: span for span in spans if span.attributes["http.response.status_code"] == 405}
    assert by_method["DELETE"].name == "DELETE /v1/items/{item_id}"
    assert by_method["_OTHER"].name == "_OTHER /v1/items/{item_id}"
    assert by_method["_OTHER"].attributes["http.request.method_original"] == "FROB"

    points = _points(reader)
    # 20 different unknown paths are one series; nothing in any series names a path or the invented method.
    (not_found,) = [p for p in points if p.attributes["http.response.status_code"] == 404]
    assert not_found.count == 20 and "http.route" not in not_found.attributes
    assert {(p.attributes["http.request.method"], p.attributes.get("http.route")) for p in points if p.attributes["http.response.status_code"] == 405} == {
        ("DELETE", "/v1/items/{item_id}"), ("_OTHER", "/v1/items/{item_id}")}
    assert not any("no-such-thing" in str(value) or value == "FROB" for p in points for value in p.attributes.values())
    # The access line keeps the real path (logs are for finding this request, not for aggregating).
    assert _access_lines(stream)[0]["path"] == "/v1/no-such-thing/0" and _access_lines(stream)[0]["route"] is None


async def test_server_error_marks_the_span_and_the_series_with_its_error_type(make_settings):
    failing = APIRouter()

    @failing.get("/v1/unavailable")
    async def unavailable() -> dict:
        from servicekit.errors import ApiError

        raise ApiError(503, "storage_unavailable", "storage is unavailable; retry later")

    settings = make_settings()
    app = create_service_app(settings, title="t", version="1", routers=[failing])
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    configure_telemetry(settings, app, span_exporter=exporter, metric_reader=reader)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        assert (await client.get("/v1/unavailable")).status_code == 503
    (span,) = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "503"
    (point,) = _points(reader)
    assert point.attributes["error.type"] == "503" and point.attributes["http.route"] == "/v1/unavailable"


async def test_health_probes_are_neither_traced_nor_measured_and_log_only_at_debug(service):
    app, exporter, reader, stream = service
    sampled, _, _ = _traceparent(sampled=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        assert (await client.get("/health/live", headers={"traceparent": sampled})).status_code == 200
        assert (await client.get("/api/items/health/ready", headers={"traceparent": sampled})).status_code == 200
    assert exporter.get_finished_spans() == ()
    assert _points(reader) == []
    assert _access_lines(stream) == []

    configure_logging("svc-test", "DEBUG", stream=stream)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        await client.get("/health/live")
    (line,) = _access_lines(stream)
    assert (line["level"], line["route"], line["status"]) == ("DEBUG", "/health/live", 200)


async def test_access_line_is_skipped_when_its_level_is_off_but_metrics_still_count(service):
    app, exporter, reader, stream = service
    configure_logging("svc-test", "WARNING", stream=stream)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        assert (await client.get("/v1/items/9")).status_code == 200
    assert _access_lines(stream) == []
    (point,) = _points(reader)
    assert point.count == 1


async def test_instrumentation_off_has_no_telemetry_middleware_and_no_access_line(make_settings):
    settings = make_settings(instrumentation=False)
    app = create_service_app(settings, title="items", version="1", routers=[router])
    assert not any(m.cls is HttpTelemetryMiddleware for m in app.user_middleware)
    stream = io.StringIO()
    configure_logging(settings.service_name, "INFO", json_format=False, stream=stream)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
            response = await client.get("/v1/items/3")
    finally:
        configure_logging(settings.service_name, "INFO")
    assert response.status_code == 200 and response.headers["x-correlation-id"]
    assert "servicekit.access" not in stream.getvalue()


async def test_failure_after_the_response_started_is_recorded_once_with_its_exception_type(make_settings):
    from fastapi.responses import StreamingResponse

    streaming = APIRouter()

    @streaming.get("/v1/export")
    async def export() -> StreamingResponse:
        async def rows():
            yield b"first row\n"
            raise RuntimeError("export source vanished")

        return StreamingResponse(rows(), media_type="text/plain")

    settings = make_settings()
    app = create_service_app(settings, title="t", version="1", routers=[streaming])
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    configure_telemetry(settings, app, span_exporter=exporter, metric_reader=reader)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        await client.get("/v1/export")
    (span,) = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert span.status.status_code == StatusCode.ERROR
    assert [event.attributes["exception.type"] for event in span.events] == ["RuntimeError"]
    assert (span.attributes["http.response.status_code"], span.attributes["error.type"]) == (200, "RuntimeError")
    (point,) = _points(reader)
    assert (point.attributes["http.route"], point.attributes["error.type"]) == ("/v1/export", "RuntimeError")


async def test_access_line_is_the_same_whether_written_directly_or_through_logging_and_other_handlers_still_get_it(service, monkeypatch):
    # Alone on the root logger, servicekit's handler gets the access line written directly (no LogRecord);
    # with a capture handler (pytest's caplog, an embedding app's) or a filter the record goes through logging.
    import logging

    from servicekit import http_telemetry

    app, exporter, reader, stream = service
    _only_servicekit_handler(monkeypatch)
    written_directly: list[str] = []
    monkeypatch.setattr(http_telemetry, "write_direct", lambda handler, line: (written_directly.append(line), handler.stream.write(line + "\n")))
    sampled, trace_id, _ = _traceparent(sampled=True)
    captured: list[logging.LogRecord] = []
    capture = logging.Handler()
    capture.emit = captured.append  # type: ignore[method-assign]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        headers = {"traceparent": sampled, "X-Correlation-Id": "corr-d"}
        assert (await client.get("/api/items/v1/items/caf\u00e9", headers=headers)).status_code == 422
        logging.getLogger().addHandler(capture)
        try:
            assert (await client.get("/api/items/v1/items/caf\u00e9", headers=headers)).status_code == 422
        finally:
            logging.getLogger().removeHandler(capture)
    direct, through_logging = _access_lines(stream)
    assert [json.loads(line) for line in written_directly] == [direct]
    assert [record.name for record in captured] == ["servicekit.access"]
    spans = sorted(exporter.get_finished_spans(), key=lambda span: span.start_time)
    for line, span in zip((direct, through_logging), spans, strict=True):
        assert (line["trace_id"], line["span_id"]) == (trace_id, format(span.context.span_id, "016x"))
    varying = ("timestamp", "span_id", "duration_ms")
    assert list(direct) == list(through_logging) == [
        "timestamp", "level", "service", "message", "logger", "correlation_id", "trace_id", "span_id", "xray_trace_id",
        "method", "route", "path", "status", "duration_ms"]
    assert {k: v for k, v in direct.items() if k not in varying} == {k: v for k, v in through_logging.items() if k not in varying} == {
        "level": "INFO", "service": "svc-test", "message": "GET /v1/items/caf\u00e9 422", "logger": "servicekit.access",
        "correlation_id": "corr-d", "trace_id": trace_id, "xray_trace_id": f"1-{trace_id[:8]}-{trace_id[8:]}",
        "method": "GET", "route": "/v1/items/{item_id}", "path": "/api/items/v1/items/caf\u00e9", "status": 422}


async def test_a_filter_on_the_handler_still_decides_which_access_lines_are_written(service, monkeypatch):
    app, exporter, reader, stream = service
    handler = _only_servicekit_handler(monkeypatch)
    handler.addFilter(lambda record: record.status != 404)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        await client.get("/v1/items/1")
        await client.get("/v1/nothing-here")
    assert [line["status"] for line in _access_lines(stream)] == [200]


def _only_servicekit_handler(monkeypatch):
    """As in a service process: servicekit's handler alone on the root logger (pytest adds its own)."""
    import logging

    root = logging.getLogger()
    (handler,) = [h for h in root.handlers if getattr(h, "_servicekit_handler", False)]
    monkeypatch.setattr(root, "handlers", [handler])
    return handler
