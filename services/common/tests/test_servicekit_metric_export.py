"""The RED durations leave a service as base-2 exponential histograms with delta temporality: what the ADOT
sidecar's awsemf exporter turns into EMF Values/Counts, from which CloudWatch computes p50/p95/p99 per minute.

Both tests run servicekit's own setup (create_service_app, configure_telemetry, its gRPC server patch): the
first reads the points with an in-memory reader, the second receives what the real OTLP/gRPC exporter sends
to a collector on 127.0.0.1, as the sidecar would. The same collector also receives the spans: a request's
server span reaches the configured endpoint in its caller's trace.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent import futures

import grpc
import httpx
import pytest
from fastapi import APIRouter
from grpc import aio
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.metrics.export import ExponentialHistogramDataPoint, InMemoryMetricReader

from servicekit import tracing
from servicekit.app import create_service_app
from servicekit.tracing import configure_telemetry

HTTP_DURATION, GRPC_DURATION = "http.server.request.duration", "rpc.server.duration"
SLOW_SECONDS = 0.25

router = APIRouter()


@router.get("/v1/work")
async def work(slow: bool = False) -> dict:
    if slow:
        await asyncio.sleep(SLOW_SECONDS)
    return {"slow": slow}


@pytest.fixture(autouse=True)
def restore_latest_telemetry():
    """Each test configures telemetry of its own; the process's previous one is current again afterwards."""
    previous = tracing._latest
    yield
    tracing._latest = previous


def _quantile(point: ExponentialHistogramDataPoint, q: float) -> float:
    """The upper bound of the bucket that holds the q-quantile, as CloudWatch reads the buckets."""
    base = 2 ** (2 ** -point.scale)
    rank, seen = q * point.count, point.zero_count
    for i, count in enumerate(point.positive.bucket_counts):
        seen += count
        if seen >= rank:
            return base ** (point.positive.offset + i + 1)
    raise AssertionError("the buckets hold fewer values than count says")


def _points(reader: InMemoryMetricReader, name: str) -> list:
    data = reader.get_metrics_data()
    return [point for rm in (data.resource_metrics if data else []) for sm in rm.scope_metrics
            for metric in sm.metrics if metric.name == name for point in metric.data.data_points]


async def _requests(app, *, fast: int, slow: int) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        for _ in range(fast):
            assert (await client.get("/v1/work")).status_code == 200
        for _ in range(slow):
            assert (await client.get("/v1/work", params={"slow": "true"})).status_code == 200


async def _grpc_calls(count: int) -> None:
    server = aio.server()  # servicekit's interceptor comes with configure_telemetry's patch
    handler = grpc.unary_unary_rpc_method_handler(_echo)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Echo", {"Say": handler})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            say = channel.unary_unary("/test.Echo/Say")
            for _ in range(count):
                assert await say(b"hi") == b"hi"
    finally:
        await server.stop(0)


async def _echo(request: bytes, context) -> bytes:
    return request


async def test_http_and_grpc_durations_are_exponential_histograms_whose_buckets_give_the_percentiles(make_settings):
    settings = make_settings(service_name="histograms")
    app = create_service_app(settings, title="histograms", version="1", routers=[router])
    reader = InMemoryMetricReader()
    configure_telemetry(settings, app, metric_reader=reader)

    await _requests(app, fast=98, slow=2)
    await _grpc_calls(5)

    (http,) = _points(reader, HTTP_DURATION)
    assert isinstance(http, ExponentialHistogramDataPoint)
    assert http.count == 100 and sum(http.positive.bucket_counts) + http.zero_count == 100
    # 98 fast requests and 2 slow ones: the median is a fast request, p99 a slow one.
    assert _quantile(http, 0.50) < SLOW_SECONDS / 2
    assert _quantile(http, 0.99) >= SLOW_SECONDS
    (rpc,) = _points(reader, GRPC_DURATION)
    assert isinstance(rpc, ExponentialHistogramDataPoint) and rpc.count == 5
    assert rpc.attributes["rpc.grpc.status_code"] == 0


class _Collector(metrics_service_pb2_grpc.MetricsServiceServicer, trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC receiver on 127.0.0.1 that keeps every metrics and trace export it is sent."""

    def __init__(self) -> None:
        self.exports: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.trace_exports: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self._lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 (the generated servicer's name)
        if isinstance(request, metrics_service_pb2.ExportMetricsServiceRequest):
            with self._lock:
                self.exports.append(request)
            return metrics_service_pb2.ExportMetricsServiceResponse()
        with self._lock:
            self.trace_exports.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def metrics(self, name: str) -> list[metrics_pb2.Metric]:
        with self._lock:
            return [metric for export in self.exports for rm in export.resource_metrics for sm in rm.scope_metrics
                    for metric in sm.metrics if metric.name == name]

    def spans(self) -> list[tuple[str, trace_pb2.Span]]:
        """(service.name, span) for every span received."""
        with self._lock:
            return [(_service_name(rs.resource), span) for export in self.trace_exports for rs in export.resource_spans
                    for ss in rs.scope_spans for span in ss.spans]


def _service_name(resource) -> str:
    return next((a.value.string_value for a in resource.attributes if a.key == "service.name"), "")


@pytest.fixture
def collector():
    receiver = _Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(receiver, server)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield receiver, f"http://127.0.0.1:{port}"
    server.stop(0)


async def test_the_otlp_exporter_sends_the_durations_as_delta_exponential_histograms(make_settings, collector):
    receiver, endpoint = collector
    settings = make_settings(service_name="histograms-otlp", otel_exporter_otlp_endpoint=endpoint)
    app = create_service_app(settings, title="histograms", version="1", routers=[router])
    telemetry = configure_telemetry(settings, app)
    try:
        await _requests(app, fast=7, slow=0)
        telemetry.force_flush()
        await _requests(app, fast=3, slow=0)
        telemetry.force_flush()
    finally:
        telemetry.shutdown()

    exported = receiver.metrics(HTTP_DURATION)
    assert exported and all(metric.WhichOneof("data") == "exponential_histogram" for metric in exported)
    temporalities = {metric.exponential_histogram.aggregation_temporality for metric in exported}
    assert temporalities == {metrics_pb2.AGGREGATION_TEMPORALITY_DELTA}
    # Delta: each export counts only the requests since the one before (cumulative would send 7, then 10).
    counts = [point.count for metric in exported for point in metric.exponential_histogram.data_points]
    assert counts == [7, 3]


async def test_the_otlp_exporter_sends_the_request_server_span_in_the_caller_trace(make_settings, collector):
    receiver, endpoint = collector
    settings = make_settings(service_name="spans-otlp", otel_exporter_otlp_endpoint=endpoint)
    app = create_service_app(settings, title="spans", version="1", routers=[router])
    telemetry = configure_telemetry(settings, app)
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
            response = await client.get("/v1/work", headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"})
        assert response.status_code == 200
        telemetry.force_flush()
    finally:
        telemetry.shutdown()

    ((service, span),) = [(service, span) for service, span in receiver.spans() if span.kind == trace_pb2.Span.SPAN_KIND_SERVER]
    assert service == "spans-otlp" and span.name == "GET /v1/work"
    # It continues the caller's trace: the trace id and parent come from the traceparent the request carried.
    assert span.trace_id.hex() == caller_trace and span.parent_span_id.hex() == caller_span
