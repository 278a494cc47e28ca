"""boto3 clients built from the settings (region + optional endpoint, e.g. moto locally), and a way to
call them from async code without blocking the event loop."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
import boto3
from botocore import exceptions as botocore_errors
from botocore.config import Config

from .errors import ApiError
from .settings import ServiceSettings

T = TypeVar("T")

# SQS long polls for up to 20 s: the read timeout must outlast them.
_READ_TIMEOUT_SECONDS = {"sqs": 30.0}


def _config(name: str, settings: ServiceSettings, retries: bool) -> Config:
    return Config(
        # botocore's max_attempts counts the retries after the first attempt; total_max_attempts counts them all.
        retries={"mode": "standard", "max_attempts": 3} if retries else {"mode": "standard", "total_max_attempts": 1},
        connect_timeout=settings.http_timeout_seconds,
        read_timeout=_READ_TIMEOUT_SECONDS.get(name, max(5.0, settings.http_timeout_seconds)),
        max_pool_connections=50,
    )


def _kwargs(settings: ServiceSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if settings.aws_region:
        kwargs["region_name"] = settings.aws_region
    if settings.aws_endpoint_url:
        kwargs["endpoint_url"] = settings.aws_endpoint_url
    return kwargs


# One botocore session per process: it caches the (large) service models and the credentials chain.
# Creating clients from it is not thread-safe, hence the lock; the clients themselves are.
_session: boto3.session.Session | None = None
_session_lock = threading.Lock()


def _build(kind: str, name: str, settings: ServiceSettings, retries: bool = True) -> Any:
    global _session
    with _session_lock:
        if _session is None:
            _session = boto3.session.Session()
        return getattr(_session, kind)(name, config=_config(name, settings, retries), **_kwargs(settings))


def client(name: str, settings: ServiceSettings, *, retries: bool = True) -> Any:
    """Cached boto3 client for service `name` ("dynamodb", "events", "sqs", "secretsmanager", ...);
    `retries=False`: a client of its own that makes one attempt per call (e.g. for a readiness check)."""
    key = ("client", name) if retries else ("client", name, "no-retries")
    cached = settings._aws_clients.get(key)
    if cached is None:
        cached = settings._aws_clients[key] = _build("client", name, settings, retries)
    return cached


def resource(name: str, settings: ServiceSettings) -> Any:
    """Cached boto3 resource (e.g. "dynamodb")."""
    key = ("resource", name)
    cached = settings._aws_clients.get(key)
    if cached is None:
        cached = settings._aws_clients[key] = _build("resource", name, settings)
    return cached


async def run_sync(fn: Callable[..., T], *args: Any, limiter: anyio.CapacityLimiter | None = None, **kwargs: Any) -> T:
    """Run a blocking (boto3) call in a worker thread (anyio's shared pool, or ``limiter``'s); contextvars (trace,
    correlation id) follow it."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=limiter)


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError (None for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None


# AWS error codes that mean "the service is busy or failing: retry later", not "this request is wrong".
THROTTLING_ERROR_CODES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "Throttling", "RequestLimitExceeded"}
)
SERVER_ERROR_CODES = frozenset({"InternalServerError", "ServiceUnavailable", "ServiceUnavailableException"})
# Seconds a client should wait before retrying: throttling clears fast, an outage less so.
RETRY_AFTER_THROTTLED_SECONDS = 1
RETRY_AFTER_UNREACHABLE_SECONDS = 5


def is_unavailable(exc: BaseException) -> bool:
    """True for a botocore error meaning the AWS service cannot answer now (no connection, a timeout,
    throttling, a server-side failure), after botocore's own retries: the request itself may be fine."""
    # ConnectionError: EndpointConnectionError, ConnectTimeoutError, ...; HTTPClientError: ReadTimeoutError, ConnectionClosedError.
    if isinstance(exc, (botocore_errors.ConnectionError, botocore_errors.HTTPClientError)):
        return True
    return isinstance(exc, botocore_errors.ClientError) and error_code(exc) in THROTTLING_ERROR_CODES | SERVER_ERROR_CODES


def retry_after_seconds(exc: BaseException) -> int:
    """The Retry-After to answer for an `is_unavailable` error."""
    return RETRY_AFTER_THROTTLED_SECONDS if error_code(exc) in THROTTLING_ERROR_CODES else RETRY_AFTER_UNREACHABLE_SECONDS


def storage_unavailable(retry_after: int) -> ApiError:
    """503 `storage_unavailable` with Retry-After: the answer to an `is_unavailable` error. A service raises it
    for a sign of the same that is no botocore error (e.g. a batch call DynamoDB keeps answering only in part)."""
    message = "storage is busy; retry later" if retry_after == RETRY_AFTER_THROTTLED_SECONDS else "storage is unavailable; retry later"
    return ApiError(503, "storage_unavailable", message, headers={"Retry-After": str(retry_after)})
