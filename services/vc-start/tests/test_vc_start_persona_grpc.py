"""The real persona gRPC client against an in-process gRPC server playing persona: status mapping, token
forwarding, per-attempt deadlines, retries, the breaker, and the saga outcome when ReserveSlot times out."""

from __future__ import annotations

import uuid
import asyncio

import grpc
import pytest
from mf.persona.v1 import persona_pb2, persona_pb2_grpc
from servicekit.correlation import correlation_scope
from vc_start.persona import GrpcPersonaClient, NoSlotAvailableError, PersonaNotFoundError, PersonaUnavailableError, ReservationStatus, SlotReservation
from vc_start.saga import StartSessionSaga


class PersonaServicer(persona_pb2_grpc.PersonaServiceServicer):
    """Answers from `behaviour[method]`: None (success), a StatusCode (abort with it) or "hang"."""

    def __init__(self) -> None:
        self.behaviour: dict[str, object] = {}
        self.seen: list[tuple[str, dict[str, str], float | None]] = []  # (method, metadata, time remaining)
        self.reservation = (persona_pb2.RESERVATION_STATUS_HELD, "")  # what ReserveSlot answers: (status, reason)

    async def _answer(self, method: str, context: grpc.aio.ServicerContext) -> None:
        self.seen.append((method, dict(context.invocation_metadata()), context.time_remaining()))
        behaviour = self.behaviour.get(method)
        if behaviour == "hang":
            await asyncio.sleep(5)
        elif isinstance(behaviour, grpc.StatusCode):
            await context.abort(behaviour, f"{method} says {behaviour.name}")

    async def GetPersona(self, request, context):  # noqa: N802 (generated names)
        await self._answer("GetPersona", context)
        return persona_pb2.Persona(persona_id=request.persona_id, display_name="Ada", max_sessions=2, reserved=1)

    async def ReserveSlot(self, request, context):  # noqa: N802
        await self._answer("ReserveSlot", context)
        status, reason = self.reservation
        return persona_pb2.Reservation(persona_id=request.persona_id, session_id=request.session_id, status=status, reason=reason)

    async def ReleaseSlot(self, request, context):  # noqa: N802
        await self._answer("ReleaseSlot", context)
        return persona_pb2.Reservation(
            persona_id=request.persona_id, session_id=request.session_id, status=persona_pb2.RESERVATION_STATUS_RELEASED
        )


@pytest.fixture
async def servicer():
    servicer = PersonaServicer()
    server = grpc.aio.server()
    persona_pb2_grpc.add_PersonaServiceServicer_to_server(servicer, server)
    servicer.port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer
    await server.stop(0)


@pytest.fixture
async def client(servicer, settings):
    client = GrpcPersonaClient(f"127.0.0.1:{servicer.port}", settings)
    yield client
    await client.close()


async def test_get_persona_forwards_the_callers_token_and_correlation_id(client, servicer):
    with correlation_scope("cid-42"):
        persona = await client.get_persona("p-1", token="tok-123")

    assert (persona.persona_id, persona.max_sessions, persona.reserved) == ("p-1", 2, 1)
    [(method, metadata, _)] = servicer.seen
    assert (method, metadata["authorization"], metadata["x-correlation-id"]) == ("GetPersona", "Bearer tok-123", "cid-42")


@pytest.mark.parametrize(
    ("method", "code", "error"),
    [
        ("GetPersona", grpc.StatusCode.NOT_FOUND, PersonaNotFoundError),
        ("ReserveSlot", grpc.StatusCode.FAILED_PRECONDITION, NoSlotAvailableError),
        ("ReserveSlot", grpc.StatusCode.UNAVAILABLE, PersonaUnavailableError),
    ],
)
async def test_status_codes_become_the_sagas_errors(client, servicer, method, code, error):
    servicer.behaviour[method] = code

    with pytest.raises(error):
        if method == "GetPersona":
            await client.get_persona("p-1", token="t")
        else:
            await client.reserve_slot("p-1", "s-1", token="t")

    # Answers (NOT_FOUND, FAILED_PRECONDITION) are final; only UNAVAILABLE is retried (RETRY_ATTEMPTS = 2).
    assert len(servicer.seen) == (2 if code == grpc.StatusCode.UNAVAILABLE else 1)


@pytest.mark.parametrize(("status", "reason", "expected"), [
    (persona_pb2.RESERVATION_STATUS_HELD, "", SlotReservation(ReservationStatus.HELD)),
    (persona_pb2.RESERVATION_STATUS_CONFIRMED, "", SlotReservation(ReservationStatus.CONFIRMED)),
    (persona_pb2.RESERVATION_STATUS_RELEASED, "persona_unavailable", SlotReservation(ReservationStatus.RELEASED, "persona_unavailable")),
])
async def test_reserve_slot_answers_the_reservation_persona_holds_for_the_session(client, servicer, status, reason, expected):
    servicer.reservation = (status, reason)
    assert await client.reserve_slot("p-1", "s-1", token="t") == expected


async def test_each_attempt_gets_the_per_attempt_deadline_and_a_hang_is_unavailable(client, servicer, settings):
    # The channel is connected first, so no attempt spends its deadline on TCP and HTTP/2 set-up, and the deadline
    # leaves half a second for an attempt to reach the servicer on a loaded machine.
    await client.get_persona("p-1", token="t")
    settings.http_timeout_seconds = 0.5
    servicer.behaviour["ReserveSlot"] = "hang"

    with pytest.raises(PersonaUnavailableError):
        await client.reserve_slot("p-1", "s-1", token="t")

    attempts = [seen for seen in servicer.seen if seen[0] == "ReserveSlot"]
    assert len(attempts) == settings.retry_attempts
    for _, _, remaining in attempts:
        # gRPC carries the deadline as a timeout header (in whole units, rounded) and the server counts it
        # from the header's arrival: the server's remaining time can exceed the per-attempt timeout by a
        # fraction of a millisecond (seen: 0.150136 s of 0.15 s). 2 ms still tells a per-attempt deadline
        # from the whole call's budget.
        assert 0 < remaining <= settings.http_timeout_seconds + 0.002


async def test_open_breaker_fails_fast_without_calling_persona(client, servicer, settings):
    settings.breaker_failure_threshold = 2
    servicer.behaviour["GetPersona"] = grpc.StatusCode.UNAVAILABLE
    with pytest.raises(PersonaUnavailableError):
        await client.get_persona("p-1", token="t")  # two failed attempts: the breaker opens
    calls = len(servicer.seen)

    with pytest.raises(PersonaUnavailableError, match="circuit"):
        await client.get_persona("p-1", token="t")

    assert len(servicer.seen) == calls


async def test_reservation_timeout_cancels_the_session_and_publishes_session_cancelled(
    client, servicer, settings, store, publisher, persona_events
):
    settings.http_timeout_seconds = 0.15
    servicer.behaviour["ReserveSlot"] = "hang"

    session = await StartSessionSaga(persona=client, publisher=publisher, store=store).start(persona_id="p-1", user_id="user-1", token="t",
        session_id=str(uuid.uuid4()))

    assert (session.status, session.reason) == ("CANCELLED", "persona_unavailable")
    assert [(t, d["data"]["reason"]) for t, d in persona_events()] == [("SessionCancelled", "persona_unavailable")]


async def test_a_reservation_status_this_client_does_not_know_is_an_unavailable_answer(client, servicer):
    servicer.reservation = (persona_pb2.RESERVATION_STATUS_UNSPECIFIED, "")
    with pytest.raises(PersonaUnavailableError, match="status 0"):
        await client.reserve_slot("p-1", "s-1", token="t")
