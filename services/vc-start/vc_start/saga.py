"""The request half of the session saga (POST /v1/sessions), see README.md for the sequence diagram.

1. read the persona (NOT_FOUND -> 404, no answer -> 503; nothing written yet)
2. store the session PENDING
3. reserve a slot on persona; refused -> CANCELLED no_slot_available; ambiguous -> CANCELLED persona_unavailable
   and publish SessionCancelled so persona drops any hold it made
4. publish SessionStarted; failure -> CANCELLED event_publish_failed and release the slot over gRPC
The rest (SlotConfirmed / SlotReleased) happens in the worker (handlers.py); a session nothing settles is
timed out after SESSION_PENDING_TIMEOUT_SECONDS (timeouts.py, sweeper.py).
"""

from __future__ import annotations

import uuid

from servicekit.events import EventPublishError
from servicekit.logging import get_logger

from vc_start import events
from vc_start.events import Publisher
from vc_start.models import CancelReason, Session, SessionStatus
from vc_start.persona import NoSlotAvailableError, PersonaClient, PersonaError, PersonaNotFoundError, PersonaUnavailableError
from vc_start.store import SessionExistsError, SessionStore
from vc_start.timeouts import time_out_if_overdue

log = get_logger(__name__)


class StartSessionSaga:
    def __init__(self, *, persona: PersonaClient, publisher: Publisher, store: SessionStore) -> None:
        self._persona = persona
        self._publisher = publisher
        self._store = store

    async def start(self, *, persona_id: str, user_id: str, token: str, session_id: str | None = None) -> Session:
        """Run the synchronous steps; returns the session PENDING (or CANCELLED with a reason).

        ``session_id``: the idempotency run's id. A retry that takes over a run which already stored its
        session resumes it: a settled session is answered as it is, a PENDING one goes through steps 3 and 4
        again (ReserveSlot returns the hold it already has; a second SessionStarted is confirmed once).
        Raises PersonaNotFoundError / PersonaUnavailableError / PersonaRejectedTokenError before anything is written.
        """
        session_id = session_id or str(uuid.uuid4())
        try:
            await self._persona.get_persona(persona_id, token=token)
        except (PersonaNotFoundError, PersonaUnavailableError):
            # A resumed run whose session has settled needs nothing from persona (which may have deleted the persona since).
            earlier = await self._earlier_session(session_id, persona_id, user_id)
            if earlier is not None and earlier.status is not SessionStatus.PENDING:
                return earlier
            raise

        try:
            session = await self._store.create(session_id, persona_id, user_id)
            log.info("session created", extra={"session_id": session_id, "persona_id": persona_id})
        except SessionExistsError:
            session = await self._earlier_session(session_id, persona_id, user_id)
            if session is None:
                raise
            log.warning("resuming the session of an earlier run of this request", extra={"session_id": session_id, "status": session.status})
            if session.status is not SessionStatus.PENDING or self._store.is_overdue(session):
                return await time_out_if_overdue(session, store=self._store, publisher=self._publisher)
        extra = {"session_id": session.session_id, "persona_id": persona_id}

        try:
            reservation = await self._persona.reserve_slot(persona_id, session.session_id, token=token)
        except NoSlotAvailableError:
            return (await self._cancel(session, CancelReason.NO_SLOT_AVAILABLE))[0]
        except PersonaNotFoundError:
            # Deleted since step 1: persona holds nothing for us.
            return (await self._cancel(session, CancelReason.PERSONA_NOT_FOUND))[0]
        except PersonaError as exc:
            # Ambiguous: the hold may exist. Cancel, and tell persona to drop it (the hold's expiry is the backstop).
            log.warning("slot reservation failed, compensating", extra={**extra, "error": str(exc)})
            cancelled, applied = await self._cancel(session, CancelReason.PERSONA_UNAVAILABLE, compensate=True)
            if applied:
                await self._publish_cancelled(cancelled)
            return cancelled

        # Only a resumed run finds the reservation past HELD.
        if reservation.status == "RELEASED":  # the hold expired, or a compensation released it: nothing to undo
            return (await self._cancel(session, reservation.reason or CancelReason.RESERVATION_EXPIRED))[0]
        if reservation.status == "CONFIRMED":  # SessionStarted went out and persona confirmed: the worker activates it
            log.info("slot already confirmed: SessionStarted not sent again", extra=extra)
            return await self._store.get(session.session_id) or session

        try:
            await self._publisher.publish(events.SESSION_STARTED, events.session_started(session.session_id, persona_id, user_id))
        except EventPublishError as exc:
            # The event may have gone out all the same (a call that timed out after the bus took it), and the
            # workers may have confirmed the slot and activated the session since: then the cancel does not
            # apply, and the slot belongs to an ACTIVE session. Undo only what this request cancelled.
            log.error("SessionStarted not published, compensating", extra={**extra, "error": str(exc)})
            cancelled, applied = await self._cancel(session, CancelReason.EVENT_PUBLISH_FAILED)
            if applied:
                await self._release(cancelled, token)
            return cancelled

        log.info("session started", extra=extra)
        return session

    async def _earlier_session(self, session_id: str, persona_id: str, user_id: str) -> Session | None:
        """The session an earlier run of the same request stored under ``session_id``, if any (run ids are per
        user and request body, so another user's or persona's session here would be a bug)."""
        session = await self._store.get(session_id)
        if session is not None and (session.persona_id, session.user_id) != (persona_id, user_id):
            raise SessionExistsError(f"session {session_id} belongs to another request")
        return session

    async def _cancel(self, session: Session, reason: CancelReason | str, *, compensate: bool = False) -> tuple[Session, bool]:
        """PENDING -> CANCELLED: the session's state after it, and whether this call cancelled it. Not applied
        when the session has settled meanwhile (the workers activated it, or it timed out): whoever settled
        it owns the slot. ``compensate``: SessionCancelled must follow (the sweeper sends it if we cannot)."""
        transition = await self._store.cancel(session.session_id, str(reason), compensate=compensate)
        if transition.applied:
            log.info("session cancelled", extra={"session_id": session.session_id, "reason": str(reason)})
        else:
            current = transition.session
            log.warning("session settled meanwhile: not cancelled, nothing to compensate",
                        extra={"session_id": session.session_id, "reason": str(reason),
                               "status": current.status.value if current else None})
        return transition.session or session, transition.applied

    async def _publish_cancelled(self, session: Session) -> None:
        data = events.session_cancelled(session.session_id, session.persona_id, session.reason or CancelReason.PERSONA_UNAVAILABLE.value)
        try:
            await self._publisher.publish(events.SESSION_CANCELLED, data)
        except EventPublishError as exc:
            # The worker's sweeper publishes it after the grace period (and persona's hold expires meanwhile anyway).
            log.error("SessionCancelled not published; the sweeper retries", extra={"session_id": session.session_id, "error": str(exc)})
        else:
            await self._store.clear_sweep(session.session_id)

    async def _release(self, session: Session, token: str) -> None:
        try:
            await self._persona.release_slot(session.persona_id, session.session_id, session.reason or "", token=token)
        except PersonaError as exc:
            # Best effort: persona's hold expires after RESERVATION_HOLD_SECONDS anyway.
            log.error("ReleaseSlot failed; the hold will expire", extra={"session_id": session.session_id, "error": str(exc)})
