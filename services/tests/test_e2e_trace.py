"""One user journey across all three services over real HTTP, gRPC and the event bus, traced end to end.

register + log in (auth) -> create a persona (persona HTTP) -> POST /v1/sessions (vc-start: verifies the
JWT with auth's JWKS, GetPersona + ReserveSlot over gRPC, publishes SessionStarted) -> the workers confirm
the slot and activate the session. The client's W3C traceparent and X-Correlation-Id must reach the logs of
every process that took part, which is what lets one trace/ID find a request in CloudWatch and X-Ray.

The pytest process itself may have httpx instrumented (any earlier test that ran a service in-process
configured telemetry here): the journey runs with it instrumented on purpose, so the result does not
depend on which tests ran before, and the harness's client must still send the test's traceparent as is.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import harness
import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from servicekit import tracing
from servicekit.settings import ServiceSettings

# Every process the journey goes through, and the log line that proves it took part in *this* request.
# The entry point first: a traceparent lost before vc-start is reported there, not at the first hop after it.
TAKES_PART = {
    "vc-start-e2e": "ran the request",
    "auth": "served the JWKS to vc-start (its cache was cold)",
    "persona": "answered GetPersona/ReserveSlot over gRPC",
    "persona-worker": "handled SessionStarted (trace continued from the event)",
    "vc-start-worker": "handled SlotConfirmed (trace continued from the event)",
}


@pytest.fixture
def instrumented_pytest_process() -> Iterator[None]:
    """This process as it is after a test that ran a service in-process: httpx instrumented process-wide and a
    live tracer (so an instrumented request starts a trace of its own). Restores the previous telemetry after."""
    previous = tracing._latest
    telemetry = tracing.configure_telemetry(
        ServiceSettings(service_name="pytest", instrumentation=True, otel_exporter_otlp_endpoint=None),
        span_exporter=InMemorySpanExporter())
    try:
        yield
    finally:
        telemetry.shutdown()
        tracing._latest = previous


class _EchoTraceparent(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        body = json.dumps({"traceparent": self.headers.get("traceparent")}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_harness_client_sends_the_callers_traceparent_in_an_instrumented_process(instrumented_pytest_process: None) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoTraceparent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    try:
        # The hazard is real: a plain client in this process replaces the caller's traceparent with its own trace.
        with httpx.Client(timeout=5) as plain:
            received = plain.get(url, headers={"traceparent": traceparent}).json()["traceparent"]
        assert received and received != traceparent, f"expected the instrumented client to inject its own trace, got {received}"
        with harness.CallerClient(timeout=5) as caller:
            assert caller.get(url, headers={"traceparent": traceparent}).json()["traceparent"] == traceparent
    finally:
        server.shutdown()
        server.server_close()


def test_trace_and_correlation_id_cross_every_service(stack: harness.Stack, api: harness.Api, vc_start_e2e: str,
                                                      instrumented_pytest_process: None) -> None:
    _, token = api.sign_up()
    persona = api.create_persona(token, max_sessions=2)
    # X-Ray-compatible id (8 hex epoch seconds first), as an ALB would start it.
    trace_id = f"{int(time.time()):08x}{secrets.token_hex(12)}"
    correlation_id = f"e2e-{uuid.uuid4()}"
    headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01", "X-Correlation-Id": correlation_id}

    response = api.start_session(token, persona["persona_id"], vc_start=vc_start_e2e, headers=headers)

    assert response.status_code == 201, f"{response.status_code} {response.text}" + stack.explain(vc_start_e2e, "persona", "auth")
    assert response.headers.get("x-correlation-id") == correlation_id
    session = response.json()
    assert session["status"] == "PENDING", session
    active = api.wait_session(token, session["session_id"], "ACTIVE")
    assert active["reason"] is None
    assert api.persona(token, persona["persona_id"])["reserved"] == 1

    def in_trace(name: str) -> list[dict]:
        return harness.logged(stack, name, lambda r: r.get("trace_id") == trace_id)

    for name, why in TAKES_PART.items():
        records = stack.wait_for(f"trace {trace_id} in the logs of {name}, which {why}", lambda n=name: in_trace(n),
                                 timeout=5, logs=(name,))
        # The same request, the same correlation id, however it travelled (HTTP header, gRPC metadata, event).
        assert {r.get("correlation_id") for r in records} == {correlation_id}, (
            f"{name}: records of trace {trace_id} carry correlation ids {sorted({str(r.get('correlation_id')) for r in records})}, "
            f"expected only {correlation_id}" + stack.explain(name))
        # X-Ray's form of the same id (what CloudWatch ServiceLens joins on).
        assert {r.get("xray_trace_id") for r in records} == {f"1-{trace_id[:8]}-{trace_id[8:]}"}

    # The specific hops, not just any line: auth served the JWKS, persona reserved the slot.
    assert any(r.get("route") == "/.well-known/jwks.json" and r.get("status") == 200 for r in in_trace("auth")), stack.explain("auth")
    assert any(r.get("message") == "slot reserved" and r.get("session_id") == session["session_id"] for r in in_trace("persona")), (
        stack.explain("persona"))
    access = [r for r in in_trace(vc_start_e2e) if r.get("route") == "/v1/sessions" and r.get("method") == "POST"]
    assert [r.get("status") for r in access] == [201], stack.explain(vc_start_e2e)
