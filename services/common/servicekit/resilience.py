"""Calls to other services: per-attempt timeout, retries with exponential backoff + full jitter inside a
total budget (tenacity), and a circuit breaker (purgatory) that fails fast while a dependency is down."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc
import httpx
from grpc import aio
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import HALF_OPENED, OpenedState
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_before_delay, wait_random_exponential

from .correlation import outbound_headers
from .grpcutil import client_interceptors
from .logging import get_logger
from .settings import ServiceSettings

log = get_logger(__name__)
T = TypeVar("T")

RETRY_STATUSES = frozenset({502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# gRPC codes that mean "the dependency is unhealthy" (a NOT_FOUND is an answer, not a failure).
GRPC_FAILURE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
)


class CircuitOpenError(Exception):
    """The breaker for `name` is open: the call was refused without touching the network."""

    def __init__(self, name: str) -> None:
        super().__init__(f"circuit breaker '{name}' is open")
        self.name = name


class BudgetExceededError(httpx.TimeoutException):
    """The HTTP call's total time budget (CALL_BUDGET_SECONDS) ran out before an attempt could be made."""


def _deadline_error(details: str) -> aio.AioRpcError:
    # gRPC callers handle one exception type: time-outs of any kind surface as DEADLINE_EXCEEDED.
    return aio.AioRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, aio.Metadata(), aio.Metadata(), details)


class _FailedResponse(Exception):
    # Lets purgatory count a 5xx response as a failure; unwrapped before the caller sees it.
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


class Breaker:
    """A named purgatory circuit breaker: opens after `threshold` consecutive failures; after `reset_seconds`
    (half-open) one trial call goes through while the others fail fast, and the trial's outcome closes or
    re-opens it. A cancelled call counts neither as a failure nor as a success."""

    def __init__(self, name: str, threshold: int, reset_seconds: float) -> None:
        self.name = name
        self.threshold = threshold
        self.reset_seconds = reset_seconds
        self._factory = AsyncCircuitBreakerFactory(default_threshold=threshold, default_ttl=reset_seconds)
        self._trial_running = False

    @property
    def state(self) -> str:
        """"closed" | "open" | "half-opened" ("half-opened" once the reset time has passed)."""
        context = self._factory.uow.contexts.breakers.get(self.name)  # in-memory repository
        if context is None or context.state == "closed":
            return "closed"
        if context.state == "opened":
            opened_at = context.opened_at or 0.0
            return "half-opened" if time.time() > opened_at + context.ttl else "open"
        return "half-opened"

    async def call(self, fn: Callable[[], Awaitable[T]], *, exclude: list[Any] | None = None) -> T:
        """Run `fn` through the breaker; exceptions count as failures unless `exclude`d."""
        breaker = await self._factory.get_breaker(self.name, exclude=exclude)
        # purgatory's context manager is driven by hand so that a cancelled call can skip its __aexit__.
        try:
            await breaker.__aenter__()
        except OpenedState as exc:
            raise CircuitOpenError(self.name) from exc
        # purgatory's half-open state lets every call through, so a still-sick dependency would get the
        # whole backlog at once: one call is the trial, the others are refused until it settles. Read after
        # __aenter__ (which moves an expired open state to half-open), so it agrees with purgatory's clock.
        trial = breaker.context.state == HALF_OPENED
        if trial:
            if self._trial_running:
                raise CircuitOpenError(self.name)
            self._trial_running = True
        try:
            result = await fn()
        except asyncio.CancelledError:
            # The caller gave up (its own time-out, shutdown): that says nothing about the dependency, so
            # it is not reported to purgatory, which would count it as a failure.
            raise
        except BaseException as exc:
            await breaker.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        else:
            await breaker.__aexit__(None, None, None)
            return result
        finally:
            if trial:
                self._trial_running = False  # settled or cancelled: a cancelled trial leaves it half-open


def get_breaker(name: str, settings: ServiceSettings) -> Breaker:
    """The breaker called `name` for this settings object (created on first use)."""
    breakers = settings._breakers
    breaker = breakers.get(name)
    if breaker is None:
        breaker = breakers[name] = Breaker(name, settings.breaker_failure_threshold, settings.breaker_reset_seconds)
    return breaker


def retrying(settings: ServiceSettings, should_retry: Callable[[BaseException], bool], name: str) -> AsyncRetrying:
    """tenacity's AsyncRetrying for a call with the settings' attempts, backoff and budget, retrying what `should_retry`
    accepts (re-raising the last error) and logging each retry as `name`'s."""

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "retrying %s after attempt %d: %s (sleep %.3f s)",
            name,
            state.attempt_number,
            f"{type(exc).__name__}: {exc}" if exc else "?",
            state.upcoming_sleep,
        )

    return AsyncRetrying(
        stop=stop_after_attempt(settings.retry_attempts) | stop_before_delay(settings.call_budget_seconds),
        # Full jitter: sleep uniformly in [0, min(max, base * 2**attempt)].
        wait=wait_random_exponential(multiplier=settings.retry_backoff_seconds, max=settings.retry_backoff_max_seconds),
        retry=retry_if_exception(should_retry),
        reraise=True,
        before_sleep=before_sleep,
    )


class ResilientHttpClient:
    """httpx.AsyncClient wrapper used for every service-to-service HTTP call."""

    def __init__(
        self,
        base_url: str,
        *,
        name: str,
        settings: ServiceSettings,
        transport: httpx.AsyncBaseTransport | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.breaker = Breaker(name, settings.breaker_failure_threshold, settings.breaker_reset_seconds)
        self._base_url = base_url
        self._transport = transport
        # An injected client belongs to the caller; ours is rebuilt after aclose() (see there).
        self._owns_client = client is None
        self._client: httpx.AsyncClient | None = client or self._new_client()
        self.attempts = 0  # total network attempts made (observability and tests)

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self._base_url, timeout=self.settings.http_timeout_seconds, transport=self._transport)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = self._new_client()
        return self._client

    @property
    def breaker_state(self) -> str:
        return self.breaker.state

    async def __aenter__(self) -> ResilientHttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool. A later request opens a new one (unless the httpx client was
        injected), so an app whose lifespan closes this client can be started again."""
        client = self._client
        if client is None:
            return
        if self._owns_client:
            self._client = None
        await client.aclose()

    async def request(self, method: str, path: str, *, idempotent: bool | None = None, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        """Send with retries (idempotent requests only), budget and breaker. Raises CircuitOpenError,
        httpx.TimeoutException / httpx.TransportError after the last attempt; retryable statuses
        (502/503/504) are returned as the final response once attempts run out."""
        method = method.upper()
        retry_allowed = idempotent if idempotent is not None else method in IDEMPOTENT_METHODS
        deadline = time.monotonic() + self.settings.call_budget_seconds
        send_headers = outbound_headers(headers)

        async def attempt() -> httpx.Response:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BudgetExceededError(f"{self.name}: call budget of {self.settings.call_budget_seconds:g} s exhausted")
            timeout = min(self.settings.http_timeout_seconds, remaining)

            async def send() -> httpx.Response:
                self.attempts += 1
                try:
                    # httpx's timeout is per phase (connect, each read...); this bounds the whole attempt.
                    async with asyncio.timeout(timeout):
                        response = await self._http().request(method, path, headers=send_headers, timeout=timeout, **kwargs)
                except TimeoutError:
                    raise httpx.ReadTimeout(f"{self.name}: no complete answer within {timeout:.3g} s") from None
                if response.status_code >= 500:
                    await response.aread()
                    raise _FailedResponse(response)
                return response

            return await self.breaker.call(send)

        def should_retry(exc: BaseException) -> bool:
            if not retry_allowed or isinstance(exc, CircuitOpenError | BudgetExceededError):
                return False
            if isinstance(exc, _FailedResponse):
                return exc.response.status_code in RETRY_STATUSES
            return isinstance(exc, httpx.TransportError)  # connect errors, timeouts, resets

        try:
            async for attempt_ctx in retrying(self.settings, should_retry, self.name):
                with attempt_ctx:
                    return await attempt()
        except _FailedResponse as failed:
            return failed.response
        raise AssertionError("unreachable")  # tenacity either returns or re-raises

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PUT", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", path, **kwargs)


def grpc_channel(target: str, settings: ServiceSettings, *, options: Iterable[tuple[str, Any]] = ()) -> aio.Channel:
    """Insecure grpc.aio channel (traffic stays inside the VPC/mesh) with correlation metadata;
    the OTel aio client instrumentation adds its tracing interceptor to it."""
    opts = [
        # Pings (every 30 s, 5 s to answer) go out only while a call is in flight: gRPC sends none on an idle
        # connection unless grpc.keepalive_permit_without_calls is 1 (gRPC's doc/keepalive.md). So a dead connection
        # (e.g. a killed task) is found only while calls use it, not between calls; each call's deadline bounds its wait.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        *options,
    ]
    return aio.insecure_channel(target, options=opts, interceptors=client_interceptors())


async def resilient_grpc_call(
    breaker_name: str,
    coro_factory: Callable[..., Awaitable[T]],
    *,
    settings: ServiceSettings,
    retry_codes: Iterable[grpc.StatusCode] = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED),
) -> T:
    """Call a gRPC method with breaker + retries + budget.

    `coro_factory` makes one attempt: if it takes a parameter it receives the per-attempt timeout in
    seconds (pass it as the stub's `timeout=`), e.g. `lambda timeout: stub.GetPersona(req, timeout=timeout)`;
    otherwise the attempt is bounded with asyncio.wait_for. Business errors (NOT_FOUND, FAILED_PRECONDITION,
    ...) are raised at once and do not count against the breaker. Raises CircuitOpenError when open.
    Time-outs surface as AioRpcError(DEADLINE_EXCEEDED). Only pass retry codes for calls that are safe
    to repeat.
    """
    breaker = get_breaker(breaker_name, settings)
    retry_set = frozenset(retry_codes)
    takes_timeout = bool(inspect.signature(coro_factory).parameters)
    deadline = time.monotonic() + settings.call_budget_seconds

    async def attempt() -> T:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _deadline_error(f"{breaker_name}: call budget of {settings.call_budget_seconds:g} s exhausted")
        timeout = min(settings.http_timeout_seconds, remaining)

        async def once() -> T:
            if takes_timeout:
                return await coro_factory(timeout)
            try:
                return await asyncio.wait_for(coro_factory(), timeout)
            except TimeoutError:
                raise _deadline_error(f"{breaker_name}: no answer within {timeout:.3g} s") from None

        # Business answers pass through the breaker as successes.
        exclude = [(aio.AioRpcError, lambda e: e.code() not in GRPC_FAILURE_CODES)]
        return await breaker.call(once, exclude=exclude)

    def should_retry(exc: BaseException) -> bool:
        return isinstance(exc, aio.AioRpcError) and exc.code() in retry_set

    async for attempt_ctx in retrying(settings, should_retry, breaker_name):
        with attempt_ctx:
            return await attempt()
    raise AssertionError("unreachable")
