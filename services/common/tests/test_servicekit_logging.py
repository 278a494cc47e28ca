"""Every log record is one JSON line carrying service, correlation and trace ids."""

from __future__ import annotations

import io
import json
import logging
import re
import time

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from servicekit.correlation import correlation_scope
from servicekit.logging import configure_logging, get_logger
from servicekit.tracing import configure_telemetry, get_tracer


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_log_line_has_service_level_and_correlation_fields():
    stream = io.StringIO()
    configure_logging("orders", "INFO", stream=stream)
    with correlation_scope("corr-123"):
        get_logger("orders.test").warning("stock low", extra={"sku": "A1"})
    (line,) = _lines(stream)
    assert line["service"] == "orders"
    assert line["level"] == "WARNING"
    assert line["message"] == "stock low"
    assert line["logger"] == "orders.test"
    assert line["correlation_id"] == "corr-123"
    assert line["sku"] == "A1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["timestamp"])
    # Outside a span the trace fields exist but are null.
    assert line["trace_id"] is None and line["xray_trace_id"] is None


def test_log_inside_span_carries_w3c_and_matching_xray_trace_id(make_settings):
    configure_telemetry(make_settings(), span_exporter=InMemorySpanExporter())
    stream = io.StringIO()
    configure_logging("orders", "INFO", stream=stream)
    with get_tracer("test").start_as_current_span("work") as span:
        logging.getLogger("x").info("inside")
    (line,) = _lines(stream)
    ctx = span.get_span_context()
    assert line["trace_id"] == format(ctx.trace_id, "032x")
    assert line["span_id"] == format(ctx.span_id, "016x")
    assert re.fullmatch(r"1-[0-9a-f]{8}-[0-9a-f]{24}", line["xray_trace_id"])
    assert line["xray_trace_id"].replace("1-", "", 1).replace("-", "") == line["trace_id"]
    # AwsXRayIdGenerator: the first 8 hex digits are the start time in epoch seconds.
    assert abs(int(line["trace_id"][:8], 16) - time.time()) < 60


def test_plain_logging_when_instrumentation_off():
    stream = io.StringIO()
    configure_logging("orders", "INFO", json_format=False, stream=stream)
    logging.getLogger("x").info("hello")
    assert stream.getvalue().strip() == "INFO x hello"


def test_level_filters_records():
    stream = io.StringIO()
    configure_logging("orders", "WARNING", stream=stream)
    logging.getLogger("x").info("dropped")
    logging.getLogger("x").error("kept")
    assert [line["message"] for line in _lines(stream)] == ["kept"]


def test_timestamp_is_each_records_own_time_in_utc_milliseconds():
    stream = io.StringIO()
    configure_logging("orders", "INFO", stream=stream)
    (handler,) = [h for h in logging.getLogger().handlers if getattr(h, "_servicekit_handler", False)]
    # The date and time part is cached per second: a new second, a new minute, and back again.
    for created in (1_700_000_000.25, 1_700_000_000.999, 1_700_000_061.5, 1_700_000_000.0):
        record = logging.LogRecord("orders.test", logging.INFO, __file__, 1, "tick", None, None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        handler.handle(record)
    assert [line["timestamp"] for line in _lines(stream)] == [
        "2023-11-14T22:13:20.250Z", "2023-11-14T22:13:20.999Z", "2023-11-14T22:14:21.500Z", "2023-11-14T22:13:20.000Z"]


def test_non_ascii_text_and_non_json_extras_are_written_as_before():
    from datetime import UTC, datetime

    stream = io.StringIO()
    configure_logging("orders", "INFO", stream=stream)
    get_logger("orders.test").info("café ünïcode", extra={"when": datetime(2024, 1, 2, tzinfo=UTC), "raw": b"\x00"})
    assert "café ünïcode" in stream.getvalue()  # not \u-escaped
    (line,) = _lines(stream)
    assert line["when"] == "2024-01-02T00:00:00+00:00"
    assert line["raw"]  # python-json-logger's encoder still handles what json cannot


def test_a_line_written_without_a_log_record_is_the_line_the_record_would_have_made(make_settings, monkeypatch):
    # The access line skips the LogRecord/Handler/Formatter chain; its text must not change (Logs
    # Insights queries in runbooks/ use the field names, and parsers the encoding).
    from datetime import UTC, datetime

    import servicekit.logging as servicekit_logging

    configure_telemetry(make_settings(), span_exporter=InMemorySpanExporter())
    stream = io.StringIO()
    configure_logging("orders", "INFO", stream=stream)
    (handler,) = [h for h in logging.getLogger().handlers if getattr(h, "_servicekit_handler", False)]
    plain = {"method": "GET", "route": None, "path": '/v1/caf\u00e9/"quoted"\n\x01\\', "status": 404, "duration_ms": 12.345,
             "level": "sneaky"}
    mixed = {**plain, "ratio": float("nan"), "cached": True, "when": datetime(2024, 1, 2, tzinfo=UTC), "raw": b"\x00"}
    with correlation_scope("corr-9"), get_tracer("test").start_as_current_span("request"):
        for created, fields in ((1_700_000_000.25, plain), (1_700_000_061.999, mixed), (1_700_000_062.0, plain)):
            monkeypatch.setattr(servicekit_logging.time, "time", lambda created=created: created)
            direct = handler.formatter.direct_line(logging.INFO, "servicekit.access", "GET /v1/caf\u00e9 404", fields, None)
            record = logging.LogRecord("servicekit.access", logging.INFO, __file__, 1, "%s %s %s", ("GET", "/v1/caf\u00e9", 404), None)
            record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
            record.__dict__.update(fields)
            assert direct == handler.formatter.format(record)
            # Plain values and the encoder's fallback alike; our fixed fields win over a same-named extra.
            assert json.loads(direct)["level"] == "INFO" and json.loads(direct)["path"] == plain["path"]


def test_a_client_correlation_id_is_taken_only_whole():
    """A trailing line break (which ``$`` alone would let through) makes the id one of our own instead."""
    from servicekit.correlation import is_valid

    assert is_valid("corr-123") and not is_valid("corr-123\n") and not is_valid("x" * 129)
