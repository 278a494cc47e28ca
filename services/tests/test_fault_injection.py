"""Fault injection between real services: a FaultProxy (tests/faultproxy.py) delays, blackholes or resets
the link, and the caller must still answer within its time budget, retry what is worth retrying, and trip
its circuit breaker so a dead dependency costs nothing.

(a) HTTP: servicekit's ResilientHttpClient and JwksVerifier (how persona and vc-start fetch auth's JWKS)
    -> proxy -> the real auth app served by uvicorn on loopback, on a moto server.
(b) gRPC: vc-start's persona client (grpc_channel + resilient_grpc_call) -> proxy -> persona's real gRPC
    server, and vc-start's POST /v1/sessions answering 503 persona_unavailable while persona is unreachable.
Small settings keep it fast: 0.3 s per attempt, 1.5 s budget, breaker reset after 1 s.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faultproxy import FaultProxy, PersonaGrpcThread, settings_for  # noqa: E402

from persona_service.settings import PersonaSettings  # noqa: E402
from servicekit import aws  # noqa: E402
from servicekit.auth import JwksVerifier  # noqa: E402
from servicekit.errors import ApiError  # noqa: E402
from servicekit.resilience import CircuitOpenError, ResilientHttpClient, get_breaker  # noqa: E402
from servicekit.settings import ServiceSettings  # noqa: E402
from vc_start.app import build_clients  # noqa: E402
from vc_start.app import create_app as create_vc_start_app  # noqa: E402
from vc_start.persona import BREAKER_NAME, GrpcPersonaClient, PersonaUnavailableError  # noqa: E402
from vc_start.settings import VcStartSettings  # noqa: E402

TIMEOUT = 0.3  # HTTP_TIMEOUT_SECONDS: per attempt
BUDGET = 1.5  # CALL_BUDGET_SECONDS: all attempts and backoff together
RESET = 1.0  # BREAKER_RESET_SECONDS
THRESHOLD = 3  # BREAKER_FAILURE_THRESHOLD
SLACK = 0.5  # scheduling noise on a busy 2-core machine
SLOW_MS = 1000  # "delay" well beyond the per-attempt timeout
JWKS = "/.well-known/jwks.json"

RESILIENCE = {
    "http_timeout_seconds": TIMEOUT,
    "call_budget_seconds": BUDGET,
    "retry_attempts": 3,
    "retry_backoff_seconds": 0.05,
    "retry_backoff_max_seconds": 0.2,
    "breaker_failure_threshold": THRESHOLD,
    "breaker_reset_seconds": RESET,
    "log_level": "WARNING",
}


def resilience(**overrides) -> dict:
    return {**RESILIENCE, **overrides}


# --- the services -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def persona_grpc(env, auth):
    server = PersonaGrpcThread(settings_for(PersonaSettings, env["persona"], auth_url=auth.url, log_level="WARNING"))
    yield server
    server.stop()


@pytest.fixture
def persona_id(persona_grpc, caller) -> str:
    return persona_grpc.store.create(caller[1], "Ada", {}, 10).persona_id


@pytest.fixture
def auth_proxy(auth):
    with FaultProxy("127.0.0.1", auth.port, max_lifetime_seconds=60) as proxy:
        yield proxy


@pytest.fixture
def persona_proxy(persona_grpc):
    with FaultProxy("127.0.0.1", persona_grpc.port, max_lifetime_seconds=60) as proxy:
        yield proxy


def break_link(proxy: FaultProxy, mode: str) -> None:
    proxy.set_mode(mode, delay_ms=SLOW_MS)


async def timed(awaitable) -> tuple[float, object]:
    """(seconds taken, result or the exception raised)."""
    started = time.monotonic()
    try:
        outcome = await awaitable
    except Exception as exc:
        outcome = exc
    return time.monotonic() - started, outcome


# --- (a) HTTP: ResilientHttpClient -> auth's JWKS ------------------------------------------------------


@pytest.mark.parametrize("mode", ["delay", "drop"])
async def test_http_call_over_a_slow_or_silent_link_times_out_within_its_budget(auth_proxy, mode):
    # Enough attempts (and a breaker lenient enough) that only the budget can stop the retries.
    settings = ServiceSettings(**resilience(retry_attempts=50, breaker_failure_threshold=100))
    async with ResilientHttpClient(auth_proxy.url, name="auth-jwks", settings=settings) as http:
        assert (await http.get(JWKS)).status_code == 200  # the link works until it breaks
        break_link(auth_proxy, mode)
        elapsed, outcome = await timed(http.get(JWKS))
    assert isinstance(outcome, httpx.TimeoutException), outcome
    # Kept retrying until the budget was (nearly) spent, and not a moment longer.
    assert BUDGET - 0.5 <= elapsed <= BUDGET + SLACK
    # It did retry (each attempt a fresh connection: a timed-out one is never reused) and gave up on budget.
    assert http.attempts >= 1 + 3
    assert auth_proxy.connections >= 3


async def test_jwks_verifier_answers_auth_unavailable_within_budget_when_auth_is_blackholed(auth_proxy, caller):
    settings = ServiceSettings(**resilience(retry_attempts=50, breaker_failure_threshold=100))
    break_link(auth_proxy, "drop")
    async with ResilientHttpClient(auth_proxy.url, name="auth-jwks", settings=settings) as http:
        verifier = JwksVerifier(auth_proxy.url + JWKS, issuer="mf-auth", audience="mf-services", http=http)
        elapsed, outcome = await timed(verifier.verify(caller[0]))
    assert isinstance(outcome, ApiError), outcome
    assert (outcome.status, outcome.code) == (503, "auth_unavailable")
    assert elapsed <= BUDGET + SLACK


async def test_http_call_retries_reset_connections_with_backoff_then_fails_within_budget(auth_proxy, caplog):
    break_link(auth_proxy, "reset")
    async with ResilientHttpClient(auth_proxy.url, name="auth-jwks", settings=ServiceSettings(**resilience())) as http:
        elapsed, outcome = await timed(http.get(JWKS))
    assert isinstance(outcome, httpx.TransportError), outcome
    assert elapsed <= BUDGET + SLACK
    # RETRY_ATTEMPTS attempts, each a new connection that the proxy reset, with a backoff sleep before each retry.
    assert http.attempts == 3
    assert auth_proxy.connections == 3
    retries = [r.getMessage() for r in caplog.records if r.name == "servicekit.resilience" and "retrying auth-jwks" in r.getMessage()]
    assert len(retries) == 2 and all("(sleep " in message for message in retries), retries


async def test_http_breaker_opens_after_threshold_failures_fails_fast_and_closes_after_reset(auth_proxy):
    # One attempt per call, so each call is exactly one breaker failure.
    settings = ServiceSettings(**resilience(retry_attempts=1))
    async with ResilientHttpClient(auth_proxy.url, name="auth-jwks", settings=settings) as http:
        break_link(auth_proxy, "reset")
        for failures in range(1, THRESHOLD + 1):
            assert http.breaker_state == "closed", f"open after {failures - 1} failures"
            with pytest.raises(httpx.TransportError):
                await http.get(JWKS)
        assert http.breaker_state == "open"

        auth_proxy.set_mode("pass")  # auth is back, but the breaker does not know yet
        traffic = auth_proxy.traffic()
        elapsed, outcome = await timed(http.get(JWKS))
        assert isinstance(outcome, CircuitOpenError), outcome
        assert elapsed < SLACK  # no attempt, timeout or backoff waited for (SLACK: a busy machine)
        assert auth_proxy.traffic() == traffic, "an open breaker must not touch the network"

        await asyncio.sleep(RESET + 0.1)
        assert http.breaker_state == "half-opened"
        response = await http.get(JWKS)
        assert response.status_code == 200 and response.json()["keys"]
        assert http.breaker_state == "closed"


# --- (b) gRPC: vc-start's persona client -> persona ------------------------------------------------------


def vc_start_settings(env, auth, target: str, **overrides) -> VcStartSettings:
    return settings_for(VcStartSettings, env["vc-start"], auth_url=auth.url, persona_grpc_target=target, **resilience(**overrides))


@pytest.mark.parametrize("mode", ["delay", "drop", "reset"])
async def test_grpc_call_fails_as_persona_unavailable_within_its_budget(env, auth, persona_proxy, persona_id, caller, mode):
    settings = vc_start_settings(env, auth, persona_proxy.address, retry_attempts=50, breaker_failure_threshold=100)
    client = GrpcPersonaClient(persona_proxy.address, settings)
    try:
        assert (await client.get_persona(persona_id, token=caller[0])).persona_id == persona_id
        break_link(persona_proxy, mode)
        elapsed, outcome = await timed(client.get_persona(persona_id, token=caller[0]))
    finally:
        await client.close()
    assert isinstance(outcome, PersonaUnavailableError), outcome
    assert BUDGET - 0.5 <= elapsed <= BUDGET + SLACK
    if mode != "reset":  # a slow or silent persona is a deadline, not a refused connection
        assert outcome.__cause__.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_grpc_breaker_opens_after_threshold_failures_fails_fast_and_closes_after_reset(env, auth, persona_proxy, persona_id, caller):
    settings = vc_start_settings(env, auth, persona_proxy.address, retry_attempts=1)
    client = GrpcPersonaClient(persona_proxy.address, settings)
    breaker = get_breaker(BREAKER_NAME, settings)
    token = caller[0]
    try:
        await client.get_persona(persona_id, token=token)
        # Slower than the deadline but not broken, so the same HTTP/2 connection serves again afterwards.
        persona_proxy.set_mode("delay", delay_ms=600)
        for failures in range(1, THRESHOLD + 1):
            assert breaker.state == "closed", f"open after {failures - 1} failures"
            with pytest.raises(PersonaUnavailableError):
                await client.get_persona(persona_id, token=token)
        assert breaker.state == "open"

        persona_proxy.set_mode("pass")
        traffic = persona_proxy.traffic()
        elapsed, outcome = await timed(client.get_persona(persona_id, token=token))
        assert isinstance(outcome, PersonaUnavailableError) and isinstance(outcome.__cause__, CircuitOpenError), outcome
        assert elapsed < SLACK  # no attempt, timeout or backoff waited for (SLACK: a busy machine)
        assert persona_proxy.traffic() == traffic, "an open breaker must not touch the network"

        await asyncio.sleep(RESET + 0.2)
        assert breaker.state == "half-opened"
        assert (await client.get_persona(persona_id, token=token)).persona_id == persona_id
        assert breaker.state == "closed"
    finally:
        await client.close()


def session_count(settings: VcStartSettings) -> int:
    """Sessions in vc-start's table (a test-only Scan)."""
    items = aws.client("dynamodb", settings).scan(TableName=settings.table_name)["Items"]
    return sum(1 for item in items if item["pk"]["S"].startswith("SESSION#"))


async def test_start_session_answers_503_persona_unavailable_within_budget_when_persona_is_blackholed(
    env, auth, persona_grpc, persona_proxy, persona_id, caller
):
    settings = vc_start_settings(env, auth, persona_proxy.address, breaker_failure_threshold=50)
    clients = build_clients(settings)
    app = create_vc_start_app(settings, clients=clients)
    headers = {"Authorization": f"Bearer {caller[0]}"}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://vc-start.test") as http:
            first = await http.post("/v1/sessions", json={"persona_id": persona_id}, headers=headers)
            assert first.status_code == 201 and first.json()["status"] == "PENDING", first.text
            sessions, reserved = session_count(settings), persona_grpc.store.get(persona_id, caller[1]).reserved

            break_link(persona_proxy, "drop")
            elapsed, response = await timed(http.post("/v1/sessions", json={"persona_id": persona_id}, headers=headers))
    finally:
        for close in clients.closers:
            await close()
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "persona_unavailable"
    assert response.headers.get("Retry-After")
    assert elapsed <= BUDGET + SLACK
    # Nothing written, nothing reserved.
    assert session_count(settings) == sessions
    assert persona_grpc.store.get(persona_id, caller[1]).reserved == reserved
