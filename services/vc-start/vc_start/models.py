"""The session resource: its states, the stored record and the HTTP request/response models."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

# Persona ids become part of persona's DynamoDB keys; keep them to a safe alphabet.
PERSONA_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"


class SessionStatus(StrEnum):
    """PENDING until the saga settles, then ACTIVE or CANCELLED (both final; see README.md for every transition).
    A session PENDING for SESSION_PENDING_TIMEOUT_SECONDS is CANCELLED `timed_out` (timeouts.py)."""

    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    CANCELLED = "CANCELLED"


class CancelReason(StrEnum):
    """Reasons vc-start itself cancels a session for (persona's SlotReleased may carry others)."""

    NO_SLOT_AVAILABLE = "no_slot_available"
    PERSONA_UNAVAILABLE = "persona_unavailable"
    PERSONA_NOT_FOUND = "persona_not_found"
    EVENT_PUBLISH_FAILED = "event_publish_failed"
    # PENDING for longer than SESSION_PENDING_TIMEOUT_SECONDS (e.g. vc-start died mid-saga, a compensation was lost).
    TIMED_OUT = "timed_out"
    # A resumed run found the session's reservation released without a reason (persona's word for an expired hold).
    RESERVATION_EXPIRED = "reservation_expired"


@dataclass(frozen=True)
class Session:
    session_id: str
    persona_id: str
    user_id: str
    status: SessionStatus
    reason: str | None
    created_at: str
    updated_at: str
    pending_until: str  # past it, a session still PENDING is overdue (store.py)


class CreateSessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    persona_id: str = Field(pattern=PERSONA_ID_PATTERN, description="The caller's persona the session runs as.")


class SessionResponse(BaseModel):
    session_id: str
    persona_id: str
    status: SessionStatus
    reason: str | None = Field(description="Why the session was cancelled; null unless CANCELLED.")
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, session: Session) -> SessionResponse:
        return cls(
            session_id=session.session_id,
            persona_id=session.persona_id,
            status=session.status,
            reason=session.reason,
            created_at=session.created_at,
            updated_at=session.updated_at,
        )
