"""The request half of the session saga (POST /v1/sessions), see README.md for the sequence diagram.

1. read the persona (NOT_FOUND -> 404, no answer -> 503; nothing written yet)
2. store the session PENDING, under the idempotency run's id
3. reserve a slot on persona; refused -> CANCELLED no_slot_available; ambiguous -> CANCELLED persona_unavailable
   and publish SessionCancelled so persona drops any hold it made
4. publish SessionStarted; failure -> CANCELLED event_publish_failed and release the slot over gRPC
A retry that takes over an unfinished run resumes its session instead: settled or overdue, it is answered
(timed out first if overdue); PENDING, steps 3 and 4 run again, and ReserveSlot's answer (the session's own
reservation) decides what is left to do.
The rest (SlotConfirmed / SlotReleased) happens in the worker (handlers.py); a session nothing settles is
timed out at its deadline (timeouts.py, sweeper.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from servicekit.events import EventPublishError
from servicekit.logging import get_logger

from vc_start import events
from vc_start.compensation import send_session_cancelled
from vc_start.events import Publisher
from vc_start.models import CancelReason, Session, SessionStatus
from vc_start.persona import NoSlotAvailableError, PersonaClient, PersonaError, PersonaNotFoundError, ReservationStatus
from vc_start.store import SessionExistsError, SessionStore
from vc_start.timeouts import time_out_if_overdue

log = get_logger(__name__)

# A compensation: gives persona's slot back for a session this request cancelled.
Undo = Callable[[Session], Awaitable[None]]


class SessionConflictError(Exception):
    """The run's session id holds another user's or persona's session (run ids are per user, key and body: a bug)."""


class StartSessionSaga:
    def __init__(self, *, persona: PersonaClient, publisher: Publisher, store: SessionStore) -> None:
        self._persona = persona
        self._publisher = publisher
        self._store = store

    async def start(self, *, persona_id: str, user_id: str, token: str, session_id: str, resume: bool = False) -> Session:
        """Run the synchronous steps; returns the session PENDING (or CANCELLED with a reason).

        ``session_id``: the idempotency run's id; ``resume``: the run was taken over from an earlier request,
        which may have stored the session already.
        Raises PersonaNotFoundError / PersonaUnavailableError / PersonaRejectedTokenError before anything is written.
        """
        if resume:
            earlier = await self._store.get(session_id)
            if earlier is not None:
                return await self._resume(earlier, persona_id, user_id, token)
        await self._persona.get_persona(persona_id, token=token)
        try:
            session = await self._store.create(session_id, persona_id, user_id)
        except SessionExistsError:
            # Stored meanwhile by the earlier request of a taken-over run (it outlived its lease), or by this very
            # put: botocore retried it (after a 5xx or a timeout) when DynamoDB had applied it. Session ids are
            # fresh per run, so a session of this persona and user is this run's own; another's is a conflict.
            # (A first request cannot meet its own takeover's session here: it reaches this put within the
            # persona call's budget, seconds, and a takeover waits for the 60 s idempotency lease.)
            return await self._resume(await self._store.get(session_id), persona_id, user_id, token)
        log.info("session created", extra={"session_id": session_id, "persona_id": persona_id})
        return await self._reserve_and_announce(session, token)

    async def _resume(self, session: Session, persona_id: str, user_id: str, token: str) -> Session:
        if (session.persona_id, session.user_id) != (persona_id, user_id):
            raise SessionConflictError(f"session {session.session_id} belongs to another request")
        log.warning("resuming the session already stored under this run's id",
                    extra={"session_id": session.session_id, "status": session.status})
        if session.status is not SessionStatus.PENDING:
            return session
        if self._store.is_overdue(session):
            return await time_out_if_overdue(session, store=self._store, publisher=self._publisher)
        return await self._reserve_and_announce(session, token)

    async def _reserve_and_announce(self, session: Session, token: str) -> Session:
        """Steps 3 and 4 for a PENDING session."""
        extra = {"session_id": session.session_id, "persona_id": session.persona_id}
        try:
            reservation = await self._persona.reserve_slot(session.persona_id, session.session_id, token=token)
        except NoSlotAvailableError:
            return await self._cancel(session, CancelReason.NO_SLOT_AVAILABLE)
        except PersonaNotFoundError:
            # Deleted since step 1: persona holds nothing for us.
            return await self._cancel(session, CancelReason.PERSONA_NOT_FOUND)
        except PersonaError as exc:
            # Ambiguous: the hold may exist. Cancel, and tell persona to drop it (the sweeper retries it; the hold's
            # expiry is the last resort).
            log.warning("slot reservation failed, compensating", extra={**extra, "error": str(exc)})
            return await self._cancel(session, CancelReason.PERSONA_UNAVAILABLE, undo=self._publish_cancelled)

        # Only a resumed run finds the reservation past HELD.
        if reservation.status is ReservationStatus.RELEASED:  # the hold expired, or a compensation released it
            return await self._cancel(session, reservation.reason or CancelReason.RESERVATION_EXPIRED)
        if reservation.status is ReservationStatus.CONFIRMED:  # SessionStarted went out: the worker activates it
            log.info("slot already confirmed: SessionStarted not sent again", extra=extra)
            return await self._store.get(session.session_id) or session

        try:
            started = events.session_started(session.session_id, session.persona_id, session.user_id)
            await self._publisher.publish(events.SESSION_STARTED, started)
        except EventPublishError as exc:
            # The event may have gone out all the same (a call that timed out after the bus took it), and the
            # workers may have confirmed the slot and activated the session since: then the cancel does not
            # apply, and the slot belongs to an ACTIVE session. Undo only what this request cancelled.
            log.error("SessionStarted not published, compensating", extra={**extra, "error": str(exc)})
            return await self._cancel(session, CancelReason.EVENT_PUBLISH_FAILED, undo=lambda cancelled: self._release(cancelled, token))

        log.info("session started", extra=extra)
        return session

    async def _cancel(self, session: Session, reason: CancelReason | str, *, undo: Undo | None = None) -> Session:
        """PENDING -> CANCELLED; returns the session's state after it. ``undo(cancelled)`` gives persona's slot
        back, and runs only when this call cancelled the session (one settled meanwhile, by the workers or a
        timeout, belongs to whoever settled it). Until an undo succeeds the session stays in the sweep index,
        so the sweeper sends SessionCancelled in its place."""
        transition = await self._store.cancel(session.session_id, str(reason), compensate=undo is not None)
        current = transition.session or session
        if not transition.applied:
            log.warning("session settled meanwhile: not cancelled, nothing to compensate",
                        extra={"session_id": session.session_id, "reason": str(reason), "status": current.status})
            return current
        log.info("session cancelled", extra={"session_id": session.session_id, "reason": str(reason)})
        if undo is not None:
            await undo(current)
        return current

    async def _publish_cancelled(self, session: Session) -> None:
        try:
            await send_session_cancelled(session, store=self._store, publisher=self._publisher)
        except EventPublishError as exc:
            # The worker's sweeper publishes it after the grace period (and persona's hold expires meanwhile anyway).
            log.error("SessionCancelled not published; the sweeper retries", extra={"session_id": session.session_id, "error": str(exc)})

    async def _release(self, session: Session, token: str) -> None:
        try:
            await self._persona.release_slot(session.persona_id, session.session_id, session.reason, token=token)
        except PersonaError as exc:
            log.error("ReleaseSlot failed; the sweeper sends SessionCancelled", extra={"session_id": session.session_id, "error": str(exc)})
        else:
            await self._store.clear_sweep(session.session_id)
