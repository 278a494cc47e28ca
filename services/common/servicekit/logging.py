"""One JSON object per line on stdout, with service, correlation and trace fields on every record."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from .correlation import current_correlation_id

_HANDLER_MARK = "_servicekit_handler"

# LogRecord attributes that are renamed or dropped; everything else passed via `extra=` is kept.
_DROP = ("levelname", "name", "msg", "args", "color_message", "taskName")
# Record attributes that are never copied as extras (the standard ones and the dropped ones).
_NOT_EXTRA = frozenset(RESERVED_ATTRS) | frozenset(_DROP) | {"message"}


# What the formatter's encoder (ensure_ascii=False) writes for a str, int and finite float.
_encode_str = json.encoder.encode_basestring


def _plain_json(value: Any) -> str | None:
    """`value` as the formatter's encoder writes it, for the plain types; None for anything else."""
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if value is None:
        return "null"
    if kind is int:
        return int.__repr__(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    return None


def xray_trace_id(trace_id_hex: str) -> str:
    """W3C trace id (32 hex) -> X-Ray form 1-<8 hex epoch>-<24 hex> (AwsXRayIdGenerator makes them agree)."""
    return f"1-{trace_id_hex[:8]}-{trace_id_hex[8:]}"


def trace_fields(span: trace.Span | None = None) -> dict[str, str | None]:
    """trace_id, span_id and xray_trace_id of `span` (default: the current span; None outside a span)."""
    ctx = (span or trace.get_current_span()).get_span_context()
    if not ctx.is_valid:
        return {"trace_id": None, "span_id": None, "xray_trace_id": None}
    tid = format(ctx.trace_id, "032x")
    return {"trace_id": tid, "span_id": format(ctx.span_id, "016x"), "xray_trace_id": xray_trace_id(tid)}


class ServiceJsonFormatter(JsonFormatter):
    """python-json-logger formatter adding the fixed fields in a fixed order."""

    def __init__(self, service_name: str, **kwargs: Any) -> None:
        super().__init__("%(message)s", json_ensure_ascii=False, **kwargs)
        self.service_name = service_name
        # One encoder for every record: json.dumps(cls=...) would build a new one per line.
        self._encoder = self.json_encoder(ensure_ascii=False) if self.json_encoder and not self.json_default else None
        self._second: tuple[int, str] = (-1, "")  # the last whole second seen and its ISO text

    def _timestamp(self, record: logging.LogRecord) -> str:
        return self._iso(int(record.created), int(record.msecs))

    def _iso(self, whole: int, msecs: int) -> str:
        """ISO 8601 UTC with milliseconds; the date and time part is formatted once per second."""
        second, text = self._second
        if whole != second:
            text = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = (whole, text)
        return f"{text}.{msecs:03d}Z"

    def direct_line(self, level: int, logger_name: str, message: str, fields: dict[str, Any], span: trace.Span | None) -> str:
        """The line format() would write for a record of `logger_name` at `level` with `fields` as
        extras, made now, inside `span` (None: the current one), without building the record. Plain
        values (str, int, finite float, None) are written directly, as the encoder would: it builds
        a new C encoder for every line, a fifth of the line's cost."""
        created = time.time()
        whole = int(created)
        log_data: dict[str, Any] = {
            "timestamp": self._iso(whole, int((created - whole) * 1000)),  # LogRecord's msecs
            "level": logging.getLevelName(level),
            "service": self.service_name,
            "message": message,
            "logger": logger_name,
            "correlation_id": current_correlation_id(),
        }
        log_data.update(trace_fields(span))
        for key, value in fields.items():
            if key not in log_data:
                log_data[key] = value
        if self._encoder is not None:
            parts = []
            for key, value in log_data.items():
                text = _plain_json(value)
                if text is None or type(key) is not str:
                    break
                parts.append(f"{_encode_str(key)}: {text}")
            else:
                return "{" + ", ".join(parts) + "}"
        return self.jsonify_log_record(log_data)

    def jsonify_log_record(self, log_data: dict[str, Any]) -> str:
        if self._encoder is None:
            return super().jsonify_log_record(log_data)
        return self._encoder.encode(log_data)

    def _fixed(self, record: logging.LogRecord, message: str) -> dict[str, Any]:
        fixed: dict[str, Any] = {
            "timestamp": self._timestamp(record),
            "level": record.levelname,
            "service": self.service_name,
            "message": message,
            "logger": record.name,
            "correlation_id": getattr(record, "correlation_id", None) or current_correlation_id(),
        }
        fixed.update(trace_fields())
        return fixed

    def format(self, record: logging.LogRecord) -> str:
        """The same JSON as the python-json-logger path (add_fields), built directly: one line per
        request is on the hot path, and the generic path costs several times as much."""
        if isinstance(record.msg, dict):
            return super().format(record)
        message = record.message = record.getMessage()
        log_data = self._fixed(record, message)
        if record.exc_info:
            log_data["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            log_data["exc_info"] = record.exc_text
        if record.stack_info:
            log_data["stack_info"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            # Our values win over same-named extras.
            if key not in _NOT_EXTRA and key not in log_data and not key.startswith("_"):
                log_data[key] = value
        return self.jsonify_log_record(log_data)

    def add_fields(self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        # Only for records whose msg is a dict (logger.info({...})): the generic path.
        fixed = self._fixed(record, record.getMessage() if not isinstance(record.msg, dict) else "")
        log_record.update(fixed)
        super().add_fields(log_record, record, message_dict)
        for key in _DROP:
            log_record.pop(key, None)
        # Our values win over same-named extras set by the base class.
        log_record.update({k: v for k, v in fixed.items() if k not in ("message",)})


def configure_logging(service_name: str, level: str | int = "INFO", *, json_format: bool = True, stream: TextIO | None = None) -> None:
    """Route every logger (incl. uvicorn's) to one stdout handler. Safe to call repeatedly."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stdout)
    setattr(handler, _HANDLER_MARK, True)
    if json_format:
        handler.setFormatter(ServiceJsonFormatter(service_name))
    else:
        # INSTRUMENTATION=off: the benchmark's baseline, as cheap as logging gets.
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    if json_format:
        _skip_unused_record_fields()
    # uvicorn installs its own handlers; ours already prints everything, and we write our own access line.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    for noisy in ("botocore", "boto3", "urllib3", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _skip_unused_record_fields() -> None:
    """The JSON line leaves out the caller's file/line, thread and process (they are in _NOT_EXTRA):
    stop every record from collecting them (the Logging HOWTO's "Optimization" switches). Walking
    the stack for the caller alone cost a third of the access line."""
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def direct_json_handler(logger: logging.Logger, level: int) -> logging.StreamHandler | None:
    """servicekit's JSON handler when it is the only place a `level` record from `logger` would go,
    with nothing on the way (no filter, no other handler, no custom record factory) that could
    change or drop it: then the line may be written without building the record (write_direct).
    None otherwise (a test's capture handler, a filter, ...): the record must go through logging.
    The caller has checked logger.isEnabledFor(level)."""
    if logger.filters or logging.getLogRecordFactory() is not logging.LogRecord:
        return None
    found = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if (found is not None or not getattr(handler, _HANDLER_MARK, False) or handler.filters
                    or level < handler.level or not isinstance(handler.formatter, ServiceJsonFormatter)):
                return None
            found = handler
        current = current.parent if current.propagate else None
    return found  # type: ignore[return-value]


def write_direct(handler: logging.StreamHandler, line: str) -> None:
    """What StreamHandler.emit does with a formatted line (under the handler's lock, flushed)."""
    with handler.lock:  # type: ignore[union-attr]
        handler.stream.write(line + handler.terminator)
        handler.flush()


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
