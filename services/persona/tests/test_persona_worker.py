"""persona's saga worker: SessionStarted confirms (or reports the slot gone), SessionCancelled releases."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import jsonschema
import pytest
from persona_service import store as st
from persona_service.worker import SlotEventHandlers, build_consumer

REGION = "us-east-1"  # conftest's moto region
CONTRACTS = Path(__file__).resolve().parents[2] / "contracts" / "events"


class RecordingPublisher:
    """Stands in for EventBridge; checks every event against the published contract."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    async def publish(self, detail_type: str, data: dict) -> str:
        schema = json.loads((CONTRACTS / f"{detail_type}.schema.json").read_text())
        jsonschema.validate(data, schema, format_checker=jsonschema.FormatChecker())
        self.events.append((detail_type, data))
        return str(uuid.uuid4())


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def handlers(store, publisher) -> SlotEventHandlers:
    return SlotEventHandlers(store, publisher)


@pytest.fixture
def held(store):
    """A persona with one slot held for a fresh session: (persona_id, session_id)."""
    persona = store.create("user-a", "Ada", {}, 1)
    session_id = str(uuid.uuid4())
    store.reserve(persona.persona_id, session_id, "user-a")
    return persona.persona_id, session_id


async def test_session_started_confirms_the_hold(handlers, publisher, store, held, clock):
    persona_id, session_id = held
    await handlers.session_started({"session_id": session_id, "persona_id": persona_id, "user_id": "user-a"})
    assert publisher.events == [("SlotConfirmed", {"session_id": session_id, "persona_id": persona_id})]
    assert store.get_reservation(persona_id, session_id).status == st.CONFIRMED
    clock.advance(3600)  # confirmed slots do not expire
    assert store.get(persona_id, "user-a").reserved == 1


async def test_session_started_after_the_hold_expired_reports_it_released(handlers, publisher, store, held, clock):
    persona_id, session_id = held
    clock.advance(121)
    await handlers.session_started({"session_id": session_id, "persona_id": persona_id, "user_id": "user-a"})
    assert publisher.events == [("SlotReleased", {"session_id": session_id, "persona_id": persona_id, "reason": "reservation_expired"})]
    assert store.get(persona_id, "user-a").reserved == 0


async def test_session_started_after_a_cancel_reports_the_cancels_reason(handlers, publisher, store, held):
    persona_id, session_id = held
    cancel = {"session_id": session_id, "persona_id": persona_id, "reason": "persona_unavailable"}
    await handlers.session_cancelled(cancel)
    await handlers.session_started({"session_id": session_id, "persona_id": persona_id, "user_id": "user-a"})  # arrives late
    assert publisher.events == [("SlotReleased", cancel)] * 2
    assert store.get_reservation(persona_id, session_id).status == st.RELEASED


async def test_session_started_without_a_reservation_reports_it_not_found(handlers, publisher, store):
    persona = store.create("user-a", "Ada", {}, 1)
    ids = {"session_id": str(uuid.uuid4()), "persona_id": persona.persona_id}
    await handlers.session_started({**ids, "user_id": "user-a"})
    assert publisher.events == [("SlotReleased", {**ids, "reason": "reservation_not_found"})]
    assert store.get(persona.persona_id, "user-a").reserved == 0


async def test_session_cancelled_releases_with_its_reason(handlers, publisher, store, held):
    persona_id, session_id = held
    await handlers.session_started({"session_id": session_id, "persona_id": persona_id, "user_id": "user-a"})
    cancel = {"session_id": session_id, "persona_id": persona_id, "reason": "persona_unavailable"}
    await handlers.session_cancelled(cancel)
    await handlers.session_cancelled(cancel)  # redelivered compensation: nothing more to free
    assert publisher.events[1:] == [("SlotReleased", cancel)] * 2
    assert store.get(persona_id, "user-a").reserved == 0


async def test_event_without_ids_is_left_for_the_dlq(handlers, publisher):
    with pytest.raises(ValueError, match="persona_id and session_id"):
        await handlers.session_started({"session_id": str(uuid.uuid4())})
    assert publisher.events == []


async def test_duplicate_delivery_is_handled_once(settings, dynamodb, sqs, store, held, publisher, clock):
    """The same SessionStarted delivered twice (SQS at-least-once) through the real queue consumer."""
    persona_id, session_id = held
    queue_url = sqs.create_queue(QueueName="mf-persona-events-test")["QueueUrl"]
    consumer = build_consumer(
        settings.model_copy(update={"queue_url": queue_url, "queue_wait_seconds": 0}), dynamodb=dynamodb, publisher=publisher, clock=clock
    )

    envelope = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "SessionStarted",
        "source": "mf.vc-start",
        "account": "123456789012",
        "time": "2024-01-01T00:00:00Z",
        "region": REGION,
        "resources": [],
        "detail": {
            "event_id": str(uuid.uuid4()),
            "occurred_at": "2024-01-01T00:00:00Z",
            "correlation_id": "corr-1",
            "traceparent": None,
            "data": {"session_id": session_id, "persona_id": persona_id, "user_id": "user-a"},
        },
    }
    for _ in range(2):
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(envelope))
    stats = [await consumer.poll_once() for _ in range(2)]
    assert (stats[0]["handled"] + stats[1]["handled"], stats[0]["duplicate"] + stats[1]["duplicate"]) == (1, 1)

    assert publisher.events == [("SlotConfirmed", {"session_id": session_id, "persona_id": persona_id})]
    assert sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"] == {
        "ApproximateNumberOfMessages": "0"
    }
