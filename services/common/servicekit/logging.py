"""One JSON object per line on stdout, with service, correlation and trace fields on every record."""

from __future__ import annotations

import logging
import sys
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


def xray_trace_id(trace_id_hex: str) -> str:
    """W3C trace id (32 hex) -> X-Ray form 1-<8 hex epoch>-<24 hex> (AwsXRayIdGenerator makes them agree)."""
    return f"1-{trace_id_hex[:8]}-{trace_id_hex[8:]}"


def trace_fields() -> dict[str, str | None]:
    """trace_id, span_id and xray_trace_id of the current span (None outside a sampled span)."""
    ctx = trace.get_current_span().get_span_context()
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
        """ISO 8601 UTC with milliseconds; the date and time part is formatted once per second."""
        whole = int(record.created)
        second, text = self._second
        if whole != second:
            text = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = (whole, text)
        return f"{text}.{int(record.msecs):03d}Z"

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


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
