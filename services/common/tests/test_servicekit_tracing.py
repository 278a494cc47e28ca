"""Spans and RED metrics: server span per route, trace context on outbound calls (traceparent on HTTP and gRPC,
the X-Ray header and traceparent on AWS SDK calls), reconfigurable per app."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from fastapi import APIRouter, Request
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from servicekit import aws
from servicekit.app import create_service_app
from servicekit.correlation import HEADER
from servicekit.tracing import configure_telemetry


class _LocalHandler(BaseHTTPRequestHandler):
    def reply(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class _EchoHeaders(_LocalHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self.reply(json.dumps({k.lower(): v for k, v in self.headers.items()}).encode(), "application/json")


class _DynamoDBStub(_LocalHandler):
    """Answers every DynamoDB call with an empty result (GetItem: no such item) and keeps the headers it got."""

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.requests.append({k.lower(): v for k, v in self.headers.items()})
        self.reply(b"{}", "application/x-amz-json-1.0")


@contextlib.contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]):
    """``handler`` on 127.0.0.1 in a thread: yields the server (its ``requests`` list starts empty)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def echo_url():
    with _serving(_EchoHeaders) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def dynamodb_stub(fake_aws_credentials):
    """A DynamoDB endpoint on 127.0.0.1: yields (url, the headers of each request it received)."""
    with _serving(_DynamoDBStub) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.requests


def _app(settings, echo_url: str):
    router = APIRouter()

    @router.get("/v1/relay/{name}")
    async def relay(name: str, request: Request) -> dict:
        async with httpx.AsyncClient() as client:
            seen = (await client.get(f"{echo_url}/downstream", headers={HEADER: request.headers.get(HEADER, "")})).json()
        return {"name": name, "downstream_headers": seen}

    return create_service_app(settings, title="relay", version="1", routers=[router])


def _points(reader: InMemoryMetricReader, name: str) -> list:
    data = reader.get_metrics_data()
    points = []
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    points.extend(metric.data.data_points)
    return points


async def test_server_span_and_traceparent_on_outbound_httpx_call(make_settings, echo_url):
    settings = make_settings(public_path="/api/relay")
    app = _app(settings, echo_url)
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    configure_telemetry(settings, app, span_exporter=exporter, metric_reader=reader)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as c:
        response = await c.get("/api/relay/v1/relay/x", headers={HEADER: "trace-test-1"})
        await c.get("/health/ready")
    assert response.status_code == 200
    downstream = response.json()["downstream_headers"]

    spans = exporter.get_finished_spans()
    server = next(s for s in spans if s.kind == SpanKind.SERVER)
    client = next(s for s in spans if s.kind == SpanKind.CLIENT)
    assert server.name == "GET /v1/relay/{name}"
    assert server.attributes["http.route"] == "/v1/relay/{name}"
    assert server.resource.attributes["service.name"] == "svc-test"
    # The outbound call is a child of the server span and carries its context downstream.
    assert client.context.trace_id == server.context.trace_id
    assert client.parent.span_id == server.context.span_id
    trace_hex, span_hex = format(client.context.trace_id, "032x"), format(client.context.span_id, "016x")
    assert downstream["traceparent"] == f"00-{trace_hex}-{span_hex}-01"
    assert downstream["x-correlation-id"] == "trace-test-1"
    # Health probes are not traced.
    assert not any("health" in s.name for s in spans)

    (point,) = [p for p in _points(reader, "http.server.request.duration") if p.attributes.get("http.route") == "/v1/relay/{name}"]
    assert point.count == 1
    assert point.attributes["http.response.status_code"] == 200


async def test_5xx_counted_per_route_in_red_histogram(make_settings, echo_url):
    settings = make_settings()
    router = APIRouter()

    @router.get("/v1/fail")
    async def fail() -> dict:
        raise RuntimeError("boom")

    app = create_service_app(settings, title="t", version="1", routers=[router])
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    configure_telemetry(settings, app, span_exporter=exporter, metric_reader=reader)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as c:
        for _ in range(3):
            assert (await c.get("/v1/fail")).status_code == 500
    (point,) = _points(reader, "http.server.request.duration")
    assert point.attributes["http.route"] == "/v1/fail"
    assert point.attributes["http.response.status_code"] == 500
    assert point.count == 3
    server = next(s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER)
    assert server.events and server.events[0].name == "exception"


async def test_configure_twice_each_app_exports_to_its_own_exporter(make_settings, echo_url):
    first_settings, second_settings = make_settings(service_name="first"), make_settings(service_name="second")
    first, second = _app(first_settings, echo_url), _app(second_settings, echo_url)
    first_exporter, second_exporter = InMemorySpanExporter(), InMemorySpanExporter()
    configure_telemetry(first_settings, first, span_exporter=first_exporter)
    configure_telemetry(second_settings, second, span_exporter=second_exporter)
    # Reconfiguring an already instrumented app is allowed and redirects its spans.
    replacement = InMemorySpanExporter()
    configure_telemetry(first_settings, first, span_exporter=replacement)

    for app in (first, second):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as c:
            assert (await c.get("/v1/relay/a")).status_code == 200

    assert first_exporter.get_finished_spans() == ()
    assert {s.resource.attributes["service.name"] for s in replacement.get_finished_spans()} == {"first"}
    assert {s.resource.attributes["service.name"] for s in second_exporter.get_finished_spans()} == {"second"}
    # The global httpx instrumentation follows the app handling the request.
    assert any(s.kind == SpanKind.CLIENT for s in replacement.get_finished_spans())
    assert any(s.kind == SpanKind.CLIENT for s in second_exporter.get_finished_spans())


def test_instrumentation_off_returns_disabled_telemetry(make_settings):
    settings = make_settings(instrumentation=False)
    telemetry = configure_telemetry(settings)
    assert not telemetry.enabled
    telemetry.shutdown()  # harmless


async def test_grpc_call_carries_trace_and_correlation_and_records_rpc_duration(make_settings):
    import grpc
    from grpc import aio

    from servicekit.correlation import correlation_scope, current_correlation_id
    from servicekit.resilience import grpc_channel, resilient_grpc_call

    settings = make_settings(service_name="grpc-test")
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    configure_telemetry(settings, span_exporter=exporter, metric_reader=reader)
    seen: dict = {}

    async def echo(request: bytes, context) -> bytes:
        seen["correlation_id"] = current_correlation_id()
        return request.upper()

    server = aio.server()  # servicekit's interceptor is added by configure_telemetry's patch
    handler = grpc.unary_unary_rpc_method_handler(echo, request_deserializer=None, response_serializer=None)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Echo", {"Say": handler})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc_channel(f"127.0.0.1:{port}", settings) as channel:
            say = channel.unary_unary("/test.Echo/Say")
            with correlation_scope("grpc-corr"):
                reply = await resilient_grpc_call("echo", lambda timeout: say(b"hi", timeout=timeout), settings=settings)
    finally:
        await server.stop(0)

    assert reply == b"HI"
    assert seen["correlation_id"] == "grpc-corr"
    spans = exporter.get_finished_spans()
    client = next(s for s in spans if s.kind == SpanKind.CLIENT)
    server_span = next(s for s in spans if s.kind == SpanKind.SERVER)
    assert server_span.context.trace_id == client.context.trace_id
    assert server_span.parent.span_id == client.context.span_id
    (point,) = _points(reader, "rpc.server.duration")
    assert point.attributes["rpc.method"] == "Say" and point.attributes["rpc.grpc.status_code"] == 0


def test_sampler_follows_the_standard_variables_with_a_small_ratio_by_default():
    from opentelemetry.sdk.trace.sampling import ParentBased

    from servicekit.tracing import make_sampler

    def parts(sampler) -> list[str]:  # "ParentBased{root:...,remoteParentSampled:...}" -> ["root:...", ...]
        return sampler.get_description().removeprefix("ParentBased{").removesuffix("}").split(",")

    # services/README.md: unset, parentbased_traceidratio at 0.05, following the caller's decision otherwise.
    default = make_sampler(None, None)
    assert isinstance(default, ParentBased)
    assert parts(default)[:3] == ["root:TraceIdRatioBased{0.05}", "remoteParentSampled:AlwaysOnSampler", "remoteParentNotSampled:AlwaysOffSampler"]
    assert parts(make_sampler("parentbased_traceidratio", "0.5"))[0] == "root:TraceIdRatioBased{0.5}"
    assert parts(make_sampler("parentbased_always_on", None))[0] == "root:AlwaysOnSampler"
    assert parts(make_sampler("nonsense", "x"))[0] == "root:TraceIdRatioBased{0.05}"  # a bad setting falls back to the default


async def test_unsampled_request_still_logs_trace_ids_and_propagates_traceparent(make_settings, echo_url):
    import io

    from servicekit.logging import configure_logging

    settings = make_settings(otel_traces_sampler="parentbased_always_off")
    app = _app(settings, echo_url)
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    configure_telemetry(settings, app, span_exporter=exporter, metric_reader=reader)
    stream = io.StringIO()
    configure_logging(settings.service_name, "INFO", stream=stream)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as c:
            response = await c.get("/v1/relay/x")
    finally:
        configure_logging(settings.service_name, "INFO")
    assert response.status_code == 200
    assert exporter.get_finished_spans() == ()
    access = [json.loads(line) for line in stream.getvalue().splitlines() if '"access"' in line or "relay" in line][-1]
    assert access["trace_id"] and access["xray_trace_id"] == f"1-{access['trace_id'][:8]}-{access['trace_id'][8:]}"
    traceparent = response.json()["downstream_headers"]["traceparent"]
    assert traceparent.split("-")[1] == access["trace_id"] and traceparent.endswith("-00")
    # RED metrics do not depend on sampling; the unused instruments are not recorded at all.
    assert _points(reader, "http.server.request.duration")
    assert not _points(reader, "http.server.active_requests")
    assert not _points(reader, "http.server.response.body.size")


async def test_aws_sdk_call_is_a_child_span_and_carries_the_request_trace_as_xray_and_w3c_headers(make_settings, dynamodb_stub):
    endpoint, received = dynamodb_stub
    settings = make_settings(aws_endpoint_url=endpoint)
    router = APIRouter()

    @router.get("/v1/items/{item_id}")
    async def get_item(item_id: str) -> dict:
        table = aws.client("dynamodb", settings)
        found = await aws.run_sync(table.get_item, TableName=settings.table_name, Key={"pk": {"S": item_id}, "sk": {"S": "item"}})
        return {"found": "Item" in found}

    app = create_service_app(settings, title="items", version="1", routers=[router])
    exporter = InMemorySpanExporter()
    configure_telemetry(settings, app, span_exporter=exporter)
    caller_trace = "5f3c1a2b7d9e4f60a1b2c3d4e5f60718"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as c:
        response = await c.get("/v1/items/i-1", headers={"traceparent": f"00-{caller_trace}-00f067aa0ba902b7-01"})
    assert response.status_code == 200 and response.json() == {"found": False}

    spans = exporter.get_finished_spans()
    server = next(s for s in spans if s.kind == SpanKind.SERVER)
    (sdk_call,) = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert sdk_call.name == "DynamoDB.GetItem" and sdk_call.attributes["rpc.service"] == "DynamoDB"
    # The SDK call is a child of the request's span, in the caller's trace.
    assert format(server.context.trace_id, "032x") == caller_trace
    assert sdk_call.context.trace_id == server.context.trace_id
    assert sdk_call.parent.span_id == server.context.span_id
    # On the wire the trace goes out in the form AWS services read: X-Amzn-Trace-Id, the same trace id in
    # X-Ray form, with the SDK call's span as the parent and the sampling decision.
    (headers,) = received
    xray = dict(field.split("=", 1) for field in headers["x-amzn-trace-id"].split(";"))
    assert xray == {
        "Root": f"1-{caller_trace[:8]}-{caller_trace[8:]}",
        "Parent": format(sdk_call.context.span_id, "016x"),
        "Sampled": "1",
    }
    # And as traceparent, like every other outbound call: the same trace, parent and decision.
    assert headers["traceparent"] == f"00-{caller_trace}-{sdk_call.context.span_id:016x}-01"
    # Added after signing: a proxy or endpoint that rewrites trace headers cannot break the signature.
    signed = headers["authorization"].split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
    assert "traceparent" not in signed and "x-amzn-trace-id" not in signed
