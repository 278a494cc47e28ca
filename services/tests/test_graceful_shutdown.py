"""SIGTERM on a busy service (what ECS does on every deploy and scale-in): no request in flight is lost.

A dedicated auth process (production Argon2 costs, so logins take tens of ms; DRAIN_SECONDS=3) gets
SIGTERM while ~20 logins/registrations are in flight, plus one login whose body is still arriving:
- every request gets a complete HTTP response, none a connection error;
- /health/ready answers 503 during the drain (the ALB stops routing) while requests are still served;
- after the drain window a new connection is refused at once (no hang) although the process is still
  finishing the slow request; that request completes; the process exits 0 within the stop timeout.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import harness
import httpx

# harness.EXTRAS["auth-drain"]. Long enough for a readiness probe to be answered while the burst loads the CPU:
# with 1 s, a loaded 2-core machine closed the listener before the first probe got an answer.
DRAIN_SECONDS = 3.0
EXIT_DEADLINE_SECONDS = 15.0  # its SHUTDOWN_TIMEOUT_SECONDS (10) + margin; ECS would SIGKILL at 30


@dataclass
class Outcome:
    path: str
    started: float
    ended: float = 0.0
    status: int | None = None
    body: dict | None = None
    error: str | None = None


def _call(base: str, path: str, payload: dict, sent: threading.Semaphore | None = None) -> Outcome:
    """POST `payload`; `sent` is released once the whole request has reached the server's socket."""
    outcome = Outcome(path, time.monotonic())

    def trace(event: str, _info: dict) -> None:
        if sent is not None and event == "http11.send_request_body.complete":
            sent.release()

    try:
        # A client per call: each request on its own new connection, none reusing one the server may be closing.
        with httpx.Client(timeout=30) as client:
            response = client.post(f"{base}{path}", json=payload, extensions={"trace": trace})
        outcome.status, outcome.body = response.status_code, response.json()
    except (httpx.HTTPError, ValueError) as error:
        outcome.error = f"{type(error).__name__}: {error}"
    outcome.ended = time.monotonic()
    return outcome


def _slow_login(base: str, username: str, gate: threading.Event, first_part_sent: threading.Event) -> httpx.Response:
    """A login whose body arrives in two parts, the second only when `gate` is set: in flight for as long as we like."""
    payload = json.dumps({"username": username, "password": harness.PASSWORD}).encode()

    def body() -> Iterator[bytes]:
        yield payload[:10]
        first_part_sent.set()
        gate.wait(timeout=30)
        yield payload[10:]

    return httpx.post(f"{base}/api/auth/v1/tokens", content=body(), headers={"Content-Type": "application/json"}, timeout=30)


def test_sigterm_finishes_in_flight_requests_then_refuses_and_exits_0(stack: harness.Stack, auth_drain: str) -> None:
    base = stack.urls[auth_drain]
    process = stack.launcher.children[auth_drain].process
    users = [f"d{uuid.uuid4().hex[:12]}" for _ in range(5)]
    gate, first_part_sent = threading.Event(), threading.Event()

    with ThreadPoolExecutor(max_workers=24) as pool:
        for outcome in pool.map(lambda u: _call(base, "/api/auth/v1/users", {"username": u, "password": harness.PASSWORD}), users):
            assert outcome.status == 201, f"setup: register {outcome}" + stack.explain(auth_drain)
        slow: Future[httpx.Response] = pool.submit(_slow_login, base, users[0], gate, first_part_sent)
        try:
            assert first_part_sent.wait(5), "the slow login never started sending"
            # 10 logins and 10 registrations at once: with production hashing they queue up for a while.
            sent = threading.Semaphore(0)
            burst = [pool.submit(_call, base, "/api/auth/v1/tokens", {"username": u, "password": harness.PASSWORD}, sent) for u in users * 2]
            burst += [pool.submit(_call, base, "/api/auth/v1/users", {"username": f"n{uuid.uuid4().hex[:12]}", "password": harness.PASSWORD}, sent)
                      for _ in range(10)]
            # SIGTERM only once every request of the burst is on the wire (not after a fixed pause, which a
            # busy machine can outlast): the test is about requests in flight, not ones still being sent.
            for _ in burst:
                assert sent.acquire(timeout=10), "a request of the burst was never sent" + stack.explain(auth_drain)
            sigterm_at = time.monotonic()
            process.send_signal(signal.SIGTERM)

            probes, refused_at = _probe_until_refused(base, sigterm_at, stack, auth_drain)
            still_running = process.poll() is None
            outcomes = [f.result(timeout=30) for f in burst]
        finally:
            gate.set()  # never leave the slow request (and the pool) hanging
        slow_response = slow.result(timeout=30)

    try:
        returncode = process.wait(timeout=EXIT_DEADLINE_SECONDS)
    except Exception:
        raise AssertionError(f"{auth_drain} still running {EXIT_DEADLINE_SECONDS:g} s after its last request" + stack.explain(auth_drain)) from None

    lost = [o for o in outcomes if o.error or o.status not in (200, 201)]
    assert not lost, f"requests in flight at SIGTERM did not get a complete answer: {lost}" + stack.explain(auth_drain)
    assert any(o.ended > sigterm_at for o in outcomes), "the burst was over before SIGTERM: this run proved nothing"
    assert all("access_token" in o.body or "user_id" in o.body for o in outcomes if o.body)

    draining = [p for p in probes if isinstance(p, httpx.Response) and p.status_code == 503]
    assert draining, f"/health/ready never answered 503 during the drain: {probes}" + stack.explain(auth_drain)
    assert "draining" in draining[0].json()["error"]["details"]["checks"], draining[0].text
    assert refused_at - sigterm_at >= DRAIN_SECONDS * 0.9, f"stopped accepting {refused_at - sigterm_at:.2f} s after SIGTERM, before the drain ended"
    assert still_running, "the process had already exited when new connections were refused: nothing was in flight"

    assert slow_response.status_code == 200, f"the in-flight login got {slow_response.status_code} {slow_response.text}"
    assert slow_response.json()["token_type"] == "Bearer"
    assert returncode == 0, f"{auth_drain} exited with {returncode}" + stack.explain(auth_drain)
    messages = [r.get("message", "") for r in stack.records(auth_drain)]
    assert any(m.startswith("received SIGTERM: draining") for m in messages), stack.explain(auth_drain)
    assert "drain period over: no longer accepting connections" in messages, stack.explain(auth_drain)


def _probe_until_refused(base: str, sigterm_at: float, stack: harness.Stack, name: str) -> tuple[list[object], float]:
    """GET /health/ready on fresh connections every 0.1 s until a connection is refused; returns
    (responses and boundary errors seen, when refused). A probe that hangs fails the test."""
    probes: list[object] = []
    deadline = sigterm_at + DRAIN_SECONDS + 5
    while time.monotonic() < deadline:
        try:
            probes.append(httpx.get(f"{base}/health/ready", timeout=2))
        except httpx.ConnectError:
            return probes, time.monotonic()
        except httpx.TimeoutException as error:
            raise AssertionError(f"a request after SIGTERM hung instead of being answered or refused: {error!r}" + stack.explain(name)) from None
        except httpx.TransportError as error:
            # Accepted by the kernel in the very instant the listener closed: reset, not answered. Keep probing.
            probes.append(f"{type(error).__name__}: {error}")
        time.sleep(0.1)
    raise AssertionError(f"still accepting connections {DRAIN_SECONDS + 5:g} s after SIGTERM: {probes[-3:]}" + stack.explain(name))
