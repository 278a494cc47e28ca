"""The one JSON error shape used by every service, and the exception routes raise to produce it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from .correlation import current_correlation_id


class ApiError(Exception):
    """Raise from a route (or a dependency) to answer `status` with the standard error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.status_code = status  # alias: reads like HTTPException
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.details)

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!r}, {self.message!r})"


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """`{"error": {"code", "message", "correlation_id"[, "details"]}}` with the current correlation id."""
    error: dict[str, Any] = {
        "code": code,
        # One line: messages end up in logs and clients' UIs.
        "message": " ".join(str(message).split()),
        "correlation_id": current_correlation_id(),
    }
    if details is not None:
        error["details"] = details
    return {"error": error}


# Status -> code for errors Starlette raises itself (routing, method, bodies).
HTTP_STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}


def code_for_status(status: int) -> str:
    return HTTP_STATUS_CODES.get(status, "client_error" if status < 500 else "server_error")


# --- OpenAPI models: routes pass `responses=error_responses(404, 409)` to document their errors -----


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable snake_case error code")
    message: str = Field(description="One-line human readable message")
    correlation_id: str | None = Field(default=None, description="X-Correlation-Id of the request")
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` mapping documenting the standard error body for each status."""
    return {status: {"model": ErrorResponse, "description": code_for_status(status).replace("_", " ")} for status in statuses}
