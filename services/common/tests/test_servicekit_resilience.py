"""ResilientHttpClient against a real loopback server that fails on purpose; gRPC retry/breaker helper."""

from __future__ import annotations

import asyncio
import socket
import time
from types import SimpleNamespace

import grpc
import httpx
import pytest
import tenacity.wait
from grpc import aio

from servicekit.correlation import correlation_scope
from servicekit.resilience import CircuitOpenError, ResilientHttpClient, get_breaker, resilient_grpc_call


class FlakyServer:
    """Minimal HTTP/1.1 server: answers with the next scripted (status, delay) and records requests."""

    def __init__(self, script: list[tuple[int, float]] | None = None, default: tuple[int, float] = (200, 0.0)) -> None:
        self.script = list(script or [])
        self.default = default
        self.requests: list[dict[str, str]] = []
        self.arrivals: list[float] = []  # time.monotonic() of each request
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> FlakyServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            if int(headers.get("content-length", "0")):
                await reader.readexactly(int(headers["content-length"]))
            self.requests.append({"request_line": lines[0], **headers})
            self.arrivals.append(time.monotonic())
            status, delay = self.script.pop(0) if self.script else self.default
            await asyncio.sleep(delay)
            body = b'{"ok": true}'
            writer.write(
                f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def _closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens here now: connections are refused
    return f"http://127.0.0.1:{port}"


async def test_retries_503_then_succeeds_and_propagates_correlation_id(make_settings):
    async with FlakyServer([(503, 0), (503, 0)]) as server:
        async with ResilientHttpClient(server.url, name="dep", settings=make_settings()) as client:
            with correlation_scope("corr-r1"):
                response = await client.get("/thing")
    assert response.status_code == 200
    assert len(server.requests) == 3
    assert all(r["x-correlation-id"] == "corr-r1" for r in server.requests)


async def test_gives_up_after_retry_attempts_and_returns_last_response(make_settings):
    async with FlakyServer(default=(503, 0)) as server:
        async with ResilientHttpClient(server.url, name="dep", settings=make_settings(retry_attempts=3, breaker_failure_threshold=10)) as client:
            response = await client.get("/thing")
    assert response.status_code == 503
    assert len(server.requests) == 3


async def test_non_idempotent_post_is_not_retried_unless_declared(make_settings):
    settings = make_settings(breaker_failure_threshold=10)
    async with FlakyServer(default=(503, 0)) as server:
        async with ResilientHttpClient(server.url, name="dep", settings=settings) as client:
            assert (await client.post("/orders", json={"a": 1})).status_code == 503
            assert len(server.requests) == 1
            assert (await client.post("/orders", json={"a": 1}, idempotent=True)).status_code == 503
            assert len(server.requests) == 4


async def test_client_errors_are_not_retried(make_settings):
    async with FlakyServer(default=(404, 0)) as server:
        async with ResilientHttpClient(server.url, name="dep", settings=make_settings()) as client:
            assert (await client.get("/missing")).status_code == 404
    assert len(server.requests) == 1


async def test_connection_refused_retries_then_raises(make_settings):
    async with ResilientHttpClient(_closed_port_url(), name="dep", settings=make_settings(breaker_failure_threshold=10)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/x")
        assert client.attempts == 3


async def test_timeouts_stay_within_the_call_budget(make_settings):
    # Each attempt may take 0.3 s; the whole call only has 0.5 s, so the second attempt gets the rest. Without
    # the budget the 5 attempts would take 1.5 s; the 0.5 s margin below is for a loaded machine.
    settings = make_settings(http_timeout_seconds=0.3, call_budget_seconds=0.5, retry_attempts=5, breaker_failure_threshold=10)
    async with FlakyServer(default=(200, 2.0)) as server:
        async with ResilientHttpClient(server.url, name="dep", settings=settings) as client:
            started = time.monotonic()
            with pytest.raises(httpx.TimeoutException):
                await client.get("/slow")
            elapsed = time.monotonic() - started
    assert elapsed < 0.5 + 0.5
    assert 1 <= client.attempts < 5


async def test_backoff_grows_but_is_capped_and_jittered(make_settings, monkeypatch):
    # Full jitter draws each sleep uniformly from [0, window]; the draw is pinned to the window's top so the
    # sleeps are known, and the windows it was asked for are recorded.
    windows: list[tuple[float, float]] = []

    def top_of_window(low: float, high: float) -> float:
        windows.append((low, high))
        return high

    monkeypatch.setattr(tenacity.wait, "random", SimpleNamespace(uniform=top_of_window))
    settings = make_settings(retry_attempts=4, retry_backoff_seconds=0.05, retry_backoff_max_seconds=0.08, breaker_failure_threshold=10)
    async with FlakyServer(default=(503, 0)) as server:
        async with ResilientHttpClient(server.url, name="dep", settings=settings) as client:
            await client.get("/x")
    assert len(server.requests) == 4
    # Windows double from the base (0.05, 0.1, 0.2) but stop at the cap, and start at 0 (full jitter). tenacity
    # also draws a wait after the last attempt (its stop-before-delay check reads it); that one is not slept.
    slept = windows[:3]
    assert [low for low, _ in slept] == [0, 0, 0]
    assert [high for _, high in slept] == pytest.approx([0.05, 0.08, 0.08])
    # And the client really waits them: each retry arrives at least its sleep after the previous attempt.
    gaps = [later - earlier for earlier, later in zip(server.arrivals, server.arrivals[1:], strict=False)]
    assert all(gap >= sleep - 0.002 for gap, sleep in zip(gaps, [0.05, 0.08, 0.08], strict=True)), gaps


async def test_breaker_opens_fails_fast_then_recovers_half_open(make_settings):
    # A 1 s reset: on a loaded machine the refused call must still come before the breaker half-opens.
    settings = make_settings(retry_attempts=1, breaker_failure_threshold=3, breaker_reset_seconds=1.0)
    async with FlakyServer([(503, 0)] * 3) as server:
        async with ResilientHttpClient(server.url, name="dep", settings=settings) as client:
            for _ in range(3):
                assert (await client.get("/x")).status_code == 503
            assert client.breaker_state == "open"
            with pytest.raises(CircuitOpenError):
                await client.get("/x")
            assert len(server.requests) == 3  # refused without touching the network

            await asyncio.sleep(1.1)
            assert client.breaker_state == "half-opened"
            assert (await client.get("/x")).status_code == 200  # trial call succeeds
            assert client.breaker_state == "closed"
    assert len(server.requests) == 4


async def test_failed_trial_call_reopens_the_breaker(make_settings):
    # A 1 s reset: on a loaded machine the refused call must still come before the breaker half-opens again.
    settings = make_settings(retry_attempts=1, breaker_failure_threshold=2, breaker_reset_seconds=1.0)
    async with FlakyServer(default=(503, 0)) as server:
        async with ResilientHttpClient(server.url, name="dep", settings=settings) as client:
            for _ in range(2):
                await client.get("/x")
            await asyncio.sleep(1.1)
            assert (await client.get("/x")).status_code == 503
            assert client.breaker_state == "open"
            with pytest.raises(CircuitOpenError):
                await client.get("/x")
    assert len(server.requests) == 3


async def test_breaker_open_stops_retries_midway(make_settings):
    settings = make_settings(retry_attempts=5, breaker_failure_threshold=2)
    async with FlakyServer(default=(503, 0)) as server:
        async with ResilientHttpClient(server.url, name="dep", settings=settings) as client:
            with pytest.raises(CircuitOpenError):
                await client.get("/x")
    assert len(server.requests) == 2


@pytest.mark.parametrize(("trial_status", "state_after"), [(200, "closed"), (503, "open")])
async def test_half_open_lets_one_trial_through_and_fails_the_others_fast(make_settings, trial_status, state_after):
    # Margins for a loaded machine: the trial is slow (the others arrive while it runs), a re-opened breaker
    # stays open for a second (the last call below must still find it open), and no call times out (a 2 s
    # timeout: with 0.5 s, the 0.3 s trial timed out when both suites of `make test` loaded the cores).
    settings = make_settings(retry_attempts=1, breaker_failure_threshold=3, breaker_reset_seconds=1.0,
                             http_timeout_seconds=2.0, call_budget_seconds=4.0)
    async with FlakyServer([(503, 0)] * 3 + [(trial_status, 0.3)]) as server:
        async with ResilientHttpClient(server.url, name="dep", settings=settings) as client:
            for _ in range(3):
                await client.get("/x")
            await asyncio.sleep(1.1)
            results = await asyncio.gather(*(client.get("/x") for _ in range(20)), return_exceptions=True)
            refused = [r for r in results if isinstance(r, CircuitOpenError)]
            answered = [r for r in results if isinstance(r, httpx.Response)]
            assert len(refused) == 19 and [r.status_code for r in answered] == [trial_status]
            assert len(server.requests) == 4  # only the trial reached the dependency
            assert client.breaker_state == state_after  # the trial's outcome decides
            if trial_status == 200:
                assert (await client.get("/x")).status_code == 200
            else:
                with pytest.raises(CircuitOpenError):
                    await client.get("/x")
    assert len(server.requests) == (5 if trial_status == 200 else 4)


async def test_calls_cancelled_by_the_caller_do_not_open_the_breaker(make_settings):
    settings = make_settings(http_timeout_seconds=5.0, retry_attempts=1, breaker_failure_threshold=2)
    async with FlakyServer(default=(200, 1.0)) as server:
        async with ResilientHttpClient(server.url, name="dep", settings=settings) as client:
            for _ in range(3):
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.25):  # the caller's own deadline (time enough to send), not the dependency's
                        await client.get("/x")
            assert client.breaker_state == "closed"
            assert len(server.requests) == 3


async def test_cancelled_call_is_neither_a_failure_nor_a_success(make_settings):
    breaker = get_breaker("dep", make_settings(breaker_failure_threshold=2))

    async def fails():
        raise ConnectionError("down")

    async def cancelled():
        raise asyncio.CancelledError

    with pytest.raises(ConnectionError):
        await breaker.call(fails)
    with pytest.raises(asyncio.CancelledError):
        await breaker.call(cancelled)
    assert breaker.state == "closed"  # not a second failure...
    with pytest.raises(ConnectionError):
        await breaker.call(fails)
    assert breaker.state == "open"  # ...nor a success that reset the count


async def test_cancelled_trial_frees_the_slot_for_the_next_call(make_settings):
    breaker = get_breaker("dep", make_settings(breaker_failure_threshold=1, breaker_reset_seconds=0.1))

    async def fails():
        raise ConnectionError("down")

    async def ok():
        return "ok"

    with pytest.raises(ConnectionError):
        await breaker.call(fails)
    await asyncio.sleep(0.15)
    trial = asyncio.create_task(breaker.call(lambda: asyncio.sleep(10)))
    await asyncio.sleep(0.01)
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)  # the trial is still running
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    assert breaker.state == "half-opened"  # the cancelled trial neither re-opened nor closed it
    assert await breaker.call(ok) == "ok"  # the next call is the trial
    assert breaker.state == "closed"


# --- gRPC -------------------------------------------------------------------------------------------


def _rpc_error(code: grpc.StatusCode) -> aio.AioRpcError:
    return aio.AioRpcError(code, aio.Metadata(), aio.Metadata(), details=code.name)


async def test_grpc_call_retries_unavailable_and_passes_timeout(make_settings):
    settings = make_settings()
    timeouts: list[float] = []
    outcomes = [_rpc_error(grpc.StatusCode.UNAVAILABLE), "ok"]

    async def call(timeout: float):
        timeouts.append(timeout)
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert await resilient_grpc_call("persona", call, settings=settings) == "ok"
    assert len(timeouts) == 2 and all(0 < t <= settings.http_timeout_seconds for t in timeouts)


async def test_grpc_business_errors_are_not_retried_nor_counted(make_settings):
    settings = make_settings(breaker_failure_threshold=2)
    calls = 0

    async def not_found():
        nonlocal calls
        calls += 1
        raise _rpc_error(grpc.StatusCode.NOT_FOUND)

    for _ in range(3):
        with pytest.raises(aio.AioRpcError) as info:
            await resilient_grpc_call("persona", not_found, settings=settings)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert calls == 3
    assert get_breaker("persona", settings).state == "closed"


async def test_grpc_hang_becomes_deadline_exceeded_and_opens_breaker(make_settings):
    settings = make_settings(http_timeout_seconds=0.05, retry_attempts=2, breaker_failure_threshold=2)

    async def hangs():
        await asyncio.sleep(10)

    with pytest.raises(aio.AioRpcError) as info:
        await resilient_grpc_call("persona", hangs, settings=settings)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert get_breaker("persona", settings).state == "open"
    with pytest.raises(CircuitOpenError):
        await resilient_grpc_call("persona", hangs, settings=settings)
    # Breakers belong to a settings object: a fresh one starts closed.
    assert get_breaker("persona", make_settings()).state == "closed"


async def test_grpc_half_open_lets_one_trial_through(make_settings):
    settings = make_settings(retry_attempts=1, breaker_failure_threshold=1, breaker_reset_seconds=1.0)  # margins for a loaded machine
    calls = 0

    async def still_down():
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.1)
        raise _rpc_error(grpc.StatusCode.UNAVAILABLE)

    with pytest.raises(aio.AioRpcError):
        await resilient_grpc_call("persona", still_down, settings=settings)
    await asyncio.sleep(1.1)
    results = await asyncio.gather(*(resilient_grpc_call("persona", still_down, settings=settings) for _ in range(10)), return_exceptions=True)
    assert calls == 2  # the first failure and the one trial
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 9
    assert get_breaker("persona", settings).state == "open"


async def test_each_attempt_carries_a_traceparent_of_the_current_trace(make_settings):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from servicekit.tracing import configure_telemetry, get_tracer

    settings = make_settings()
    configure_telemetry(settings, span_exporter=InMemorySpanExporter())
    async with FlakyServer([(503, 0)]) as server:
        async with ResilientHttpClient(server.url, name="dep", settings=settings) as client:
            with get_tracer("t").start_as_current_span("caller") as span:
                await client.get("/x")
    trace_hex = format(span.get_span_context().trace_id, "032x")
    assert [r["traceparent"].split("-")[1] for r in server.requests] == [trace_hex, trace_hex]
    # One client span per attempt: the retry is visible in the trace.
    assert len({r["traceparent"].split("-")[2] for r in server.requests}) == 2


async def test_client_can_be_used_again_after_aclose(make_settings):
    # An app's lifespan closes its clients on shutdown; starting the app again must still work. No transport is
    # injected, as in production: the closed connection pool must be replaced by a new one.
    async with FlakyServer() as server:
        client = ResilientHttpClient(server.url, name="dep", settings=make_settings())
        assert (await client.get("/x")).json() == {"ok": True}
        await client.aclose()
        assert (await client.get("/x")).json() == {"ok": True}
        await client.aclose()
    assert len(server.requests) == 2
