"""The worker half of the saga: react to persona's SlotConfirmed / SlotReleased.

Handlers are safe to run twice (the consumer dedupes on event_id, and every state change is conditional), and
raise only when a retry could help: the consumer then leaves the message for SQS to redeliver.
"""

from __future__ import annotations

from servicekit.logging import get_logger

from vc_start import events
from vc_start.compensation import send_session_cancelled
from vc_start.events import Publisher
from vc_start.models import SessionStatus
from vc_start.store import SessionStore

log = get_logger(__name__)


class SessionUndecidedError(Exception):
    """A SlotConfirmed found its session PENDING but could not settle it; a redelivery retries."""


class SessionEventHandlers:
    def __init__(self, *, store: SessionStore, publisher: Publisher) -> None:
        self._store = store
        self._publisher = publisher

    def handlers(self) -> dict:
        """The QueueConsumer's handler table: detail-type -> async fn(data, envelope)."""
        return {events.SLOT_CONFIRMED: self.on_slot_confirmed, events.SLOT_RELEASED: self.on_slot_released}

    async def on_slot_confirmed(self, data: dict, envelope: dict) -> None:
        session_id = data["session_id"]
        transition = await self._store.activate(session_id)
        session = transition.session
        if transition.applied:
            log.info("session active", extra={"session_id": session_id})
            return
        if session is None:
            log.warning("SlotConfirmed for an unknown session ignored", extra={"session_id": session_id})
            return
        if session.status is SessionStatus.PENDING:
            # Not activated, so overdue: the confirmation came too late. Time it out, then give the slot back below.
            timed_out = await self._store.time_out(session_id)
            session = timed_out.session or session
            if timed_out.applied:
                log.warning("session timed out before its slot was confirmed", extra={"session_id": session_id})
        if session.status is SessionStatus.CANCELLED:
            # The session gave up (e.g. it timed out) but persona confirmed the slot: give it back. A failed publish
            # raises, so the message comes back.
            await send_session_cancelled(session, store=self._store, publisher=self._publisher)
            log.info("confirmed slot of a cancelled session released", extra={"session_id": session_id, "reason": session.reason})
        elif session.status is SessionStatus.ACTIVE:
            log.info("SlotConfirmed for an active session ignored", extra={"session_id": session_id})
        else:
            # Still PENDING yet not activatable: the clocks disagree. Leave the event for redelivery.
            raise SessionUndecidedError(f"session {session_id} is PENDING but could be neither activated nor timed out")

    async def on_slot_released(self, data: dict, envelope: dict) -> None:
        session_id = data["session_id"]
        reason = data.get("reason") or "slot_released"
        transition = await self._store.cancel(session_id, reason)
        if transition.applied:
            log.info("session cancelled by persona", extra={"session_id": session_id, "reason": reason})
        elif transition.session is None:
            log.warning("SlotReleased for an unknown session ignored", extra={"session_id": session_id})
        elif transition.session.status is SessionStatus.ACTIVE:
            log.warning("SlotReleased for an active session ignored", extra={"session_id": session_id, "reason": reason})
        else:
            log.info("SlotReleased for a cancelled session ignored", extra={"session_id": session_id})
