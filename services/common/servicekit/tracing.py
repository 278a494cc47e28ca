"""OpenTelemetry: traces (X-Ray compatible ids) and RED metrics, exported over OTLP/gRPC to the ADOT sidecar.

Instrumentors (httpx, grpc, botocore) patch libraries process-wide and bind a tracer provider once.
To let `configure_telemetry` run many times in one process (tests build many apps, each with its own
in-memory exporter), the globally installed providers are thin switches: every span or measurement
goes to the `Telemetry` active in the current context (set per request by the app's edge middleware),
else to the most recently configured one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.aws import AwsXRayPropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.extension.aws.trace import AwsXRayIdGenerator
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import DropAggregation, ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .settings import ServiceSettings

log = logging.getLogger(__name__)

# Stable HTTP semantic conventions for the library instrumentations (httpx, botocore), like the
# server side (servicekit.http_telemetry). Must be set before any instrumentation initialises.
os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
OTLP_TIMEOUT_SECONDS = 3
# CloudWatch (via the ADOT sidecar's EMF exporter) stores metrics at one-minute resolution anyway.
METRIC_EXPORT_INTERVAL_MILLIS = 30_000

# Trace sampling when OTEL_TRACES_SAMPLER is unset: like X-Ray's default rule, a small share of the
# requests that start a trace here; a request whose caller sampled (or not) follows that decision.
# Unsampled requests still carry a valid trace id: it is in their logs and in the traceparent they
# send on. OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (the standard variables) override it, e.g.
# `parentbased_always_on` to trace everything (tests, `make run-local`).
DEFAULT_TRACES_SAMPLER = "parentbased_traceidratio"
DEFAULT_TRACES_SAMPLER_RATIO = 0.05

# Instruments the library instrumentations create that no dashboard or alarm reads: they would cost
# a recording (or two) per request for nothing. http.server.request.duration (RED) is kept.
DROPPED_INSTRUMENTS = frozenset(
    {
        "http.server.active_requests",
        "http.server.request.body.size",
        "http.server.response.body.size",
        "http.client.request.body.size",
        "http.client.response.body.size",
    }
)

# The RED durations the dashboards and canary alarms read as percentiles: base-2 exponential histograms,
# which the ADOT sidecar's awsemf exporter writes as EMF Values/Counts arrays that CloudWatch computes
# p50/p95/p99 from (explicit-bucket histograms arrive as count/sum/min/max only). A View, so every
# reader gets them this way, whatever OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION says.
EXPONENTIAL_HISTOGRAMS = ("http.server.request.duration", "rpc.server.duration")
# awsemf passes exponential histogram points through as they come (it converts no cumulative histogram
# to delta): cumulative points would make every minute's p95 the p95 of the task's whole life.
OTLP_HISTOGRAM_TEMPORALITY = {Histogram: AggregationTemporality.DELTA}


def metric_views() -> list[View]:
    """The instruments dropped, and the RED durations as exponential histograms."""
    return [
        *(View(instrument_name=name, aggregation=DropAggregation()) for name in sorted(DROPPED_INSTRUMENTS)),
        *(View(instrument_name=name, aggregation=ExponentialBucketHistogramAggregation()) for name in EXPONENTIAL_HISTOGRAMS),
    ]


class Telemetry:
    """The providers of one configured service; `shutdown()` flushes and stops exporting."""

    def __init__(
        self,
        service_name: str,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        *,
        span_exporter: SpanExporter | None = None,
        metric_reader: MetricReader | None = None,
    ) -> None:
        self.service_name = service_name
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.span_exporter = span_exporter
        self.metric_reader = metric_reader
        self._shut_down = False

    @property
    def enabled(self) -> bool:
        return self.tracer_provider is not None

    def tracer(self, name: str) -> trace.Tracer:
        return self.tracer_provider.get_tracer(name) if self.tracer_provider else trace.NoOpTracer()

    @contextlib.contextmanager
    def activate(self) -> Iterator[Telemetry]:
        """Send spans/metrics produced in this block (incl. by global instrumentors) to this Telemetry."""
        token = _active.set(self)
        try:
            yield self
        finally:
            _active.reset(token)

    def force_flush(self, timeout_millis: int = 5000) -> None:
        if self.tracer_provider:
            self.tracer_provider.force_flush(timeout_millis)
        if self.meter_provider:
            self.meter_provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        global _latest
        if self._shut_down or not self.enabled:
            return
        self._shut_down = True
        with _lock:
            if _latest is self:
                _latest = None
        try:
            self.tracer_provider.shutdown()
            self.meter_provider.shutdown()
        except Exception:  # exporter hiccups must not break shutdown
            log.warning("telemetry shutdown failed", exc_info=True)


_active: ContextVar[Telemetry | None] = ContextVar("servicekit_telemetry", default=None)
_latest: Telemetry | None = None
_lock = threading.Lock()
_globals_installed = False


def current_telemetry() -> Telemetry | None:
    tel = _active.get()
    if tel is not None and tel.enabled and not tel._shut_down:
        return tel
    return _latest


def set_active_telemetry(tel: Telemetry | None):
    """Token-returning setter used by the app's edge middleware (reset with `reset_active_telemetry`)."""
    return _active.set(tel)


def reset_active_telemetry(token) -> None:
    _active.reset(token)


# --- switching providers -------------------------------------------------------------------------


class _SwitchingTracer(trace.Tracer):
    def __init__(self, name: str, version: str | None, schema_url: str | None, attributes: Any) -> None:
        self._args = (name, version, schema_url, attributes)
        self._cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _delegate(self) -> trace.Tracer:
        tel = current_telemetry()
        if tel is None or tel.tracer_provider is None:
            return _NOOP_TRACER
        tracer = self._cache.get(tel.tracer_provider)
        if tracer is None:
            name, version, schema_url, attributes = self._args
            tracer = tel.tracer_provider.get_tracer(name, version, schema_url, attributes)
            self._cache[tel.tracer_provider] = tracer
        return tracer

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self._delegate().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        return self._delegate().start_as_current_span(*args, **kwargs)


class _SwitchingTracerProvider(trace.TracerProvider):
    def get_tracer(self, instrumenting_module_name, instrumenting_library_version=None, schema_url=None, attributes=None):
        return _SwitchingTracer(instrumenting_module_name, instrumenting_library_version, schema_url, attributes)


class _SwitchingInstrument:
    """Synchronous instrument that records into the current Telemetry's meter provider."""

    def __init__(self, meter: _SwitchingMeter, kind: str, name: str, kwargs: dict[str, Any]) -> None:
        self._meter = meter
        self._kind = kind
        self.name = name
        self._kwargs = kwargs
        self._cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _delegate(self):
        tel = current_telemetry()
        if tel is None or tel.meter_provider is None:
            return None
        inst = self._cache.get(tel.meter_provider)
        if inst is None:
            name, version, schema_url, attributes = self._meter._args
            real_meter = tel.meter_provider.get_meter(name, version, schema_url, attributes)
            inst = getattr(real_meter, f"create_{self._kind}")(self.name, **self._kwargs)
            self._cache[tel.meter_provider] = inst
        return inst

    def add(self, amount, attributes=None, context=None) -> None:
        inst = self._delegate()
        if inst is not None:
            inst.add(amount, attributes, context)

    def record(self, amount, attributes=None, context=None) -> None:
        inst = self._delegate()
        if inst is not None:
            inst.record(amount, attributes, context)

    def set(self, amount, attributes=None, context=None) -> None:
        inst = self._delegate()
        if inst is not None:
            inst.set(amount, attributes, context)


class _SwitchingMeter(metrics.Meter):
    def __init__(self, name: str, version: str | None, schema_url: str | None, attributes: Any) -> None:
        super().__init__(name, version, schema_url)
        self._args = (name, version, schema_url, attributes)

    def _sync(self, kind: str, name: str, **kwargs: Any) -> Any:
        if name in DROPPED_INSTRUMENTS:
            # Not even a switch: nothing per request (the providers' Views drop them as well).
            return getattr(_NOOP_METER, f"create_{kind}")(name, **kwargs)
        return _SwitchingInstrument(self, kind, name, kwargs)

    def _observable(self, kind: str, name: str, **kwargs: Any) -> Any:
        # Callbacks are polled by a reader; bind to whichever Telemetry is current at creation.
        tel = current_telemetry()
        provider = tel.meter_provider if tel and tel.meter_provider else metrics.NoOpMeterProvider()
        name_, version, schema_url, attributes = self._args
        return getattr(provider.get_meter(name_, version, schema_url, attributes), f"create_{kind}")(name, **kwargs)

    def create_counter(self, name, unit="", description=""):
        return self._sync("counter", name, unit=unit, description=description)

    def create_up_down_counter(self, name, unit="", description=""):
        return self._sync("up_down_counter", name, unit=unit, description=description)

    def create_histogram(self, name, unit="", description="", *, explicit_bucket_boundaries_advisory=None):
        return self._sync(
            "histogram", name, unit=unit, description=description, explicit_bucket_boundaries_advisory=explicit_bucket_boundaries_advisory
        )

    def create_gauge(self, name, unit="", description=""):
        return self._sync("gauge", name, unit=unit, description=description)

    def create_observable_counter(self, name, callbacks=None, unit="", description=""):
        return self._observable("observable_counter", name, callbacks=callbacks, unit=unit, description=description)

    def create_observable_gauge(self, name, callbacks=None, unit="", description=""):
        return self._observable("observable_gauge", name, callbacks=callbacks, unit=unit, description=description)

    def create_observable_up_down_counter(self, name, callbacks=None, unit="", description=""):
        return self._observable("observable_up_down_counter", name, callbacks=callbacks, unit=unit, description=description)


class _SwitchingMeterProvider(metrics.MeterProvider):
    def get_meter(self, name, version=None, schema_url=None, attributes=None):
        return _SwitchingMeter(name, version, schema_url, attributes)


_NOOP_TRACER = trace.NoOpTracer()
SDK_CALL_PROPAGATOR = CompositePropagator([AwsXRayPropagator(), TraceContextTextMapPropagator()])
_NOOP_METER = metrics.NoOpMeter("servicekit.dropped")
SWITCHING_TRACER_PROVIDER = _SwitchingTracerProvider()
SWITCHING_METER_PROVIDER = _SwitchingMeterProvider()


def _install_globals() -> None:
    """Once per process: global providers, W3C propagation, library instrumentors."""
    global _globals_installed
    with _lock:
        if _globals_installed:
            return
        _globals_installed = True
    trace.set_tracer_provider(SWITCHING_TRACER_PROVIDER)
    metrics.set_meter_provider(SWITCHING_METER_PROVIDER)
    propagate.set_global_textmap(CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()]))

    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    providers = {"tracer_provider": SWITCHING_TRACER_PROVIDER, "meter_provider": SWITCHING_METER_PROVIDER}
    HTTPXClientInstrumentor().instrument(**providers)
    # AWS services read and pass on only X-Amzn-Trace-Id (e.g. SQS's AWSTraceHeader); traceparent goes
    # out as well, like on every other outbound call, for whatever reads W3C context on the way.
    # Both are added after botocore signs the request, so neither is a signed header.
    BotocoreInstrumentor().instrument(**providers, propagator=SDK_CALL_PROPAGATOR)
    GrpcAioInstrumentorClient().instrument(tracer_provider=SWITCHING_TRACER_PROVIDER)
    GrpcAioInstrumentorServer().instrument(tracer_provider=SWITCHING_TRACER_PROVIDER)
    from .grpcutil import install_server_metrics

    install_server_metrics()


_SAMPLERS: dict[str, Any] = {
    "always_on": ALWAYS_ON,
    "always_off": ALWAYS_OFF,
    "parentbased_always_on": DEFAULT_ON,
    "parentbased_always_off": DEFAULT_OFF,
    "traceidratio": TraceIdRatioBased,
    "parentbased_traceidratio": ParentBasedTraceIdRatio,
}


def make_sampler(name: str | None, arg: str | float | None) -> Sampler:
    """The sampler named like OTEL_TRACES_SAMPLER (with OTEL_TRACES_SAMPLER_ARG as the ratio);
    unset: DEFAULT_TRACES_SAMPLER at DEFAULT_TRACES_SAMPLER_RATIO (an unset or bad ratio: that one too)."""
    key = (name or DEFAULT_TRACES_SAMPLER).strip().lower()
    if key not in _SAMPLERS:
        log.warning("unknown OTEL_TRACES_SAMPLER %r: using %s", name, DEFAULT_TRACES_SAMPLER)
        key = DEFAULT_TRACES_SAMPLER
    sampler = _SAMPLERS[key]
    if key not in ("traceidratio", "parentbased_traceidratio"):
        return sampler
    ratio = DEFAULT_TRACES_SAMPLER_RATIO
    if arg not in (None, ""):
        try:
            ratio = float(arg)  # type: ignore[arg-type]
        except ValueError:
            log.warning("OTEL_TRACES_SAMPLER_ARG %r is not a number: using %g", arg, ratio)
        if not 0.0 <= ratio <= 1.0:
            log.warning("OTEL_TRACES_SAMPLER_ARG %r is outside [0, 1]: using %g", arg, DEFAULT_TRACES_SAMPLER_RATIO)
            ratio = DEFAULT_TRACES_SAMPLER_RATIO
    return sampler(ratio)


def _insecure(endpoint: str) -> bool:
    return not endpoint.startswith("https://")


def configure_telemetry(
    settings: ServiceSettings,
    app: Any = None,
    *,
    span_exporter: SpanExporter | None = None,
    metric_reader: MetricReader | None = None,
) -> Telemetry:
    """Build this service's providers and make them current; point `app` (from create_service_app) at them.

    With INSTRUMENTATION=off nothing is instrumented and a disabled Telemetry is returned.
    Safe to call repeatedly: the latest call wins for `app` and for process-wide instrumentation.
    """
    global _latest
    if not settings.instrumentation:
        tel = Telemetry(settings.service_name, None, None)
        if app is not None:
            app.state.telemetry = tel
        return tel

    resource = Resource.create({"service.name": settings.service_name})
    tracer_provider = TracerProvider(
        resource=resource,
        id_generator=AwsXRayIdGenerator(),
        sampler=make_sampler(settings.otel_traces_sampler, settings.otel_traces_sampler_arg),
    )
    readers: list[MetricReader] = []
    if span_exporter is not None:
        # Synchronous export so tests see spans as soon as the request returns.
        tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    if metric_reader is not None:
        readers.append(metric_reader)
    endpoint = settings.otel_exporter_otlp_endpoint
    if endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # The collector is a local sidecar: short timeouts keep shutdown inside ECS's 30 s stop timeout.
        tracer_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=_insecure(endpoint), timeout=OTLP_TIMEOUT_SECONDS))
        )
        readers.append(
            PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=endpoint, insecure=_insecure(endpoint), timeout=OTLP_TIMEOUT_SECONDS,
                                   preferred_temporality=OTLP_HISTOGRAM_TEMPORALITY),
                export_interval_millis=METRIC_EXPORT_INTERVAL_MILLIS,
            )
        )
    meter_provider = MeterProvider(
        resource=resource,
        metric_readers=readers,
        views=metric_views(),
        # No exemplars (trace ids attached to histogram points): nothing reads them, each costs per recording.
        exemplar_filter=AlwaysOffExemplarFilter(),
    )

    tel = Telemetry(settings.service_name, tracer_provider, meter_provider, span_exporter=span_exporter, metric_reader=metric_reader)
    _install_globals()
    with _lock:
        _latest = tel

    if app is not None:
        # The app's HttpTelemetryMiddleware (added by create_service_app) reads it per request.
        app.state.telemetry = tel
    return tel


def get_tracer(name: str) -> trace.Tracer:
    """Tracer that follows the current Telemetry (use for manual spans in services)."""
    return SWITCHING_TRACER_PROVIDER.get_tracer(name)


def get_meter(name: str) -> metrics.Meter:
    return SWITCHING_METER_PROVIDER.get_meter(name)
