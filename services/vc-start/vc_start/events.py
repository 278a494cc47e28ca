"""The events of the session saga: their detail-type names, the data vc-start publishes, and the publisher it
needs (servicekit's EventPublisher, or a fake in tests). Schemas: services/contracts/events/<DetailType>.schema.json.
"""

from __future__ import annotations

from typing import Protocol

# Published by vc-start (source <prefix>.vc-start).
SESSION_STARTED = "SessionStarted"
SESSION_CANCELLED = "SessionCancelled"
# Published by persona (source <prefix>.persona), consumed by vc-start's worker.
SLOT_CONFIRMED = "SlotConfirmed"
SLOT_RELEASED = "SlotReleased"


class Publisher(Protocol):
    async def publish(self, detail_type: str, data: dict) -> str:
        """Publish one event; return its event_id; raise servicekit.events.EventPublishError on failure."""
        ...


def session_started(session_id: str, persona_id: str, user_id: str) -> dict:
    return {"session_id": session_id, "persona_id": persona_id, "user_id": user_id}


def session_cancelled(session_id: str, persona_id: str, reason: str) -> dict:
    return {"session_id": session_id, "persona_id": persona_id, "reason": reason}
