"""The saga's compensation on the bus: SessionCancelled tells persona to give back any slot it holds for a
cancelled session. Whoever cancels a session that may hold a slot sends it (the request, a read or the worker
that times a session out, the worker on a late SlotConfirmed); the sweeper sends what they could not."""

from __future__ import annotations

from vc_start import events
from vc_start.events import Publisher
from vc_start.models import Session
from vc_start.store import SessionStore

# For a cancelled session stored without a reason (should not happen).
DEFAULT_COMPENSATION_REASON = "session_cancelled"


async def send_session_cancelled(session: Session, *, store: SessionStore, publisher: Publisher) -> None:
    """Publish SessionCancelled with the session's reason, then take the session out of the sweep index.
    Raises EventPublishError; the session then stays in the index, and the sweeper sends it later."""
    reason = session.reason or DEFAULT_COMPENSATION_REASON
    await publisher.publish(events.SESSION_CANCELLED, events.session_cancelled(session.session_id, session.persona_id, reason))
    await store.clear_sweep(session.session_id)
