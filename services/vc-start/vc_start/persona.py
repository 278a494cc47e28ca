"""vc-start's view of persona: the three calls the saga makes, their failures, and the gRPC client.

The saga only sees `PersonaClient` and the errors below; how gRPC status codes map onto them lives here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import grpc
from mf.persona.v1 import persona_pb2, persona_pb2_grpc
from servicekit.logging import get_logger
from servicekit.resilience import CircuitOpenError, grpc_channel, resilient_grpc_call
from servicekit.settings import ServiceSettings

log = get_logger(__name__)

BREAKER_NAME = "persona-grpc"


class PersonaError(Exception):
    """Base of every failure talking to persona."""


class PersonaNotFoundError(PersonaError):
    """The persona does not exist or belongs to someone else."""


class NoSlotAvailableError(PersonaError):
    """Every session slot of the persona is taken."""


class PersonaUnavailableError(PersonaError):
    """Persona did not answer (down, timed out, breaker open, or an unexpected error): the outcome is unknown."""


class PersonaRejectedTokenError(PersonaError):
    """Persona refused the caller's token."""


@dataclass(frozen=True)
class PersonaInfo:
    persona_id: str
    display_name: str
    max_sessions: int
    reserved: int


class ReservationStatus(StrEnum):
    HELD = "HELD"
    CONFIRMED = "CONFIRMED"
    RELEASED = "RELEASED"


@dataclass(frozen=True)
class SlotReservation:
    """What ReserveSlot answered for the session: HELD, CONFIRMED, or RELEASED with a reason (the reservation of a
    session that a compensation or the hold's expiry released before this call; only a resumed run meets it)."""

    status: ReservationStatus
    reason: str = ""


class PersonaClient(Protocol):
    async def get_persona(self, persona_id: str, *, token: str) -> PersonaInfo: ...

    async def reserve_slot(self, persona_id: str, session_id: str, *, token: str) -> SlotReservation: ...

    async def release_slot(self, persona_id: str, session_id: str, reason: str, *, token: str) -> None: ...


def _translate(exc: BaseException, call: str) -> PersonaError:
    if isinstance(exc, grpc.aio.AioRpcError):
        code = exc.code()
        if code == grpc.StatusCode.NOT_FOUND:
            return PersonaNotFoundError(f"{call}: persona not found")
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            return NoSlotAvailableError(f"{call}: {exc.details() or 'no slot available'}")
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return PersonaRejectedTokenError(f"{call}: persona rejected the token")
        return PersonaUnavailableError(f"{call}: persona answered {code.name}: {exc.details()}")
    if isinstance(exc, CircuitOpenError):
        return PersonaUnavailableError(f"{call}: circuit to persona is open")
    return PersonaUnavailableError(f"{call}: {type(exc).__name__}: {exc}")


class GrpcPersonaClient:
    """PersonaClient over gRPC with retries, a per-attempt deadline, a call budget and a circuit breaker."""

    def __init__(self, target: str, settings: ServiceSettings) -> None:
        self._target = target
        self._settings = settings
        self._channel: grpc.aio.Channel | None = None
        self._stub: persona_pb2_grpc.PersonaServiceStub | None = None

    def _persona(self) -> persona_pb2_grpc.PersonaServiceStub:
        # Opened on first use: inside the running event loop, and after telemetry instrumented grpc.aio.
        if self._stub is None:
            self._channel = grpc_channel(self._target, self._settings)
            self._stub = persona_pb2_grpc.PersonaServiceStub(self._channel)
        return self._stub

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None

    async def _call(self, name: str, method, request, token: str):
        metadata = (("authorization", f"Bearer {token}"),)

        def attempt(timeout: float):
            # servicekit passes the per-attempt deadline: HTTP_TIMEOUT_SECONDS, cut short by what is left of the budget.
            return method(request, timeout=timeout, metadata=metadata)

        try:
            return await resilient_grpc_call(BREAKER_NAME, attempt, settings=self._settings)
        except Exception as exc:  # every failure becomes one of the saga's errors (mapped above)
            raise _translate(exc, name) from exc

    async def get_persona(self, persona_id: str, *, token: str) -> PersonaInfo:
        persona = await self._call("GetPersona", self._persona().GetPersona, persona_pb2.GetPersonaRequest(persona_id=persona_id), token)
        return PersonaInfo(persona.persona_id, persona.display_name, persona.max_sessions, persona.reserved)

    async def reserve_slot(self, persona_id: str, session_id: str, *, token: str) -> SlotReservation:
        # ReserveSlot is idempotent per session_id, so retrying an attempt that timed out is safe.
        request = persona_pb2.ReserveSlotRequest(persona_id=persona_id, session_id=session_id)
        reservation = await self._call("ReserveSlot", self._persona().ReserveSlot, request, token)
        try:
            name = persona_pb2.ReservationStatus.Name(reservation.status).removeprefix("RESERVATION_STATUS_")
            status = ReservationStatus(name)
        except ValueError:  # UNSPECIFIED, or a status newer than this client: an answer it cannot act on
            raise PersonaUnavailableError(f"ReserveSlot: persona answered status {reservation.status}") from None
        return SlotReservation(status, reservation.reason)

    async def release_slot(self, persona_id: str, session_id: str, reason: str, *, token: str) -> None:
        request = persona_pb2.ReleaseSlotRequest(persona_id=persona_id, session_id=session_id, reason=reason)
        await self._call("ReleaseSlot", self._persona().ReleaseSlot, request, token)
