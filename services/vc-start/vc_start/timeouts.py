"""The saga's backstop: a session must not stay PENDING forever.

If vc-start dies between storing a session and publishing SessionStarted, or persona's answer is lost, no event
will ever finish the session. A session still PENDING at its deadline (`SESSION_PENDING_TIMEOUT_SECONDS` after its
creation) is overdue and is CANCELLED with reason `timed_out`: when it is read (here), when a late SlotConfirmed for
it reaches the worker (handlers.py, which then compensates like for any cancelled session), when a retry resumes its
request (saga.py), or when the worker's sweeper finds it (sweeper.py), whichever comes first.
"""

from __future__ import annotations

from servicekit.events import EventPublishError
from servicekit.logging import get_logger

from vc_start.compensation import send_session_cancelled
from vc_start.events import Publisher
from vc_start.models import Session
from vc_start.store import SessionStore

log = get_logger(__name__)


async def time_out_if_overdue(session: Session, *, store: SessionStore, publisher: Publisher) -> Session:
    """The session as it stands once an overdue PENDING session has been timed out.

    The caller that times it out also publishes SessionCancelled, so persona releases any slot it still holds
    for the session. If that fails, the sweeper publishes it later (the session stays in the sweep index until
    a SessionCancelled has gone out).
    """
    if not store.is_overdue(session):
        return session
    transition = await store.time_out(session.session_id)
    current = transition.session or session
    if not transition.applied:
        return current  # decided meanwhile (ACTIVE, CANCELLED, or timed out by another reader)
    extra = {"session_id": session.session_id, "persona_id": session.persona_id, "created_at": session.created_at}
    log.warning("session timed out while PENDING", extra=extra)
    try:
        await send_session_cancelled(current, store=store, publisher=publisher)
    except EventPublishError as exc:
        log.error("SessionCancelled for a timed-out session not published; the sweeper retries", extra={**extra, "error": str(exc)})
    return current
