"""`python -m persona_service.worker`: persona's part of the session saga, driven by vc-start's events.

- SessionStarted {session_id, persona_id, user_id}: HELD -> CONFIRMED, publish SlotConfirmed; if the
  hold expired or was released, publish SlotReleased with the release's reason (reservation_expired, the
  SessionCancelled's reason, or a ReleaseSlot call's) instead, and reservation_not_found if there is none.
- SessionCancelled {session_id, persona_id, reason}: release the slot (idempotent), publish SlotReleased.

servicekit's QueueConsumer dedupes deliveries by event id; the handlers are idempotent anyway, so a
redelivery after a crash between the store write and the publish only repeats the publish.
"""

from __future__ import annotations

from typing import Any

from servicekit.aws import run_sync
from servicekit.logging import get_logger

from . import store as st

log = get_logger(__name__)

SESSION_STARTED = "SessionStarted"
SESSION_CANCELLED = "SessionCancelled"
SLOT_CONFIRMED = "SlotConfirmed"
SLOT_RELEASED = "SlotReleased"
DEFAULT_CANCEL_REASON = "session_cancelled"


def _ids(data: dict[str, Any]) -> tuple[str, str]:
    persona_id, session_id = data.get("persona_id"), data.get("session_id")
    if not isinstance(persona_id, str) or not isinstance(session_id, str) or not persona_id or not session_id:
        # Raising leaves the message on the queue; after maxReceiveCount it lands in the DLQ for a human.
        raise ValueError(f"event data needs string persona_id and session_id, got keys {sorted(data)}")
    return persona_id, session_id


class SlotEventHandlers:
    def __init__(self, store: st.PersonaStore, publisher: Any) -> None:
        self._store = store
        self._publisher = publisher  # `await publish(detail_type, data)`, e.g. servicekit.events.EventPublisher

    def handlers(self) -> dict[str, Any]:
        return {SESSION_STARTED: self.session_started, SESSION_CANCELLED: self.session_cancelled}

    async def session_started(self, data: dict[str, Any], envelope: Any = None) -> None:
        persona_id, session_id = _ids(data)
        reservation = await run_sync(self._store.confirm, persona_id, session_id)
        ids = {"session_id": session_id, "persona_id": persona_id}
        if reservation is not None and reservation.status == st.CONFIRMED:
            await self._publisher.publish(SLOT_CONFIRMED, ids)
            log.info("slot confirmed", extra=ids)
            return
        # The session started too late (or was cancelled meanwhile): vc-start must cancel it, and learns why.
        reason = (reservation.reason or st.REASON_EXPIRED) if reservation is not None else st.REASON_NOT_FOUND
        await self._publisher.publish(SLOT_RELEASED, {**ids, "reason": reason})
        log.info("slot not confirmable", extra={**ids, "status": reservation.status if reservation else None, "reason": reason})

    async def session_cancelled(self, data: dict[str, Any], envelope: Any = None) -> None:
        persona_id, session_id = _ids(data)
        reason = data.get("reason")
        if not isinstance(reason, str) or not st.REASON_PATTERN.fullmatch(reason):
            reason = DEFAULT_CANCEL_REASON  # SlotReleased's schema demands a snake_case reason
        await run_sync(self._store.release, persona_id, session_id, reason)
        ids = {"session_id": session_id, "persona_id": persona_id}
        await self._publisher.publish(SLOT_RELEASED, {**ids, "reason": reason})
        log.info("slot released", extra={**ids, "reason": reason})


def build_consumer(settings: Any, *, dynamodb: Any = None, publisher: Any = None, clock: Any = None) -> Any:
    """The QueueConsumer for persona's queue (dependencies injectable for tests)."""
    from servicekit import aws
    from servicekit.events import EventPublisher, QueueConsumer

    if not settings.table_name:
        raise ValueError("TABLE_NAME is not set: the persona worker needs its DynamoDB table")
    extra = {"clock": clock} if clock is not None else {}
    store = st.PersonaStore(
        dynamodb or aws.client("dynamodb", settings), settings.table_name, hold_seconds=settings.reservation_hold_seconds, **extra
    )
    handlers = SlotEventHandlers(store, publisher or EventPublisher(settings))
    return QueueConsumer(settings, handlers.handlers(), table_name=settings.table_name)


def main() -> None:
    from servicekit.worker import run_worker

    from .settings import PersonaSettings

    settings = PersonaSettings()
    # A factory: run_worker sets up logging and telemetry first, so the clients built are instrumented.
    run_worker(settings, lambda: build_consumer(settings))


if __name__ == "__main__":
    main()
