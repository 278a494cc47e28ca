"""The worker half of the saga: persona's events on vc-start's queue, consumed by the real QueueConsumer."""

from __future__ import annotations

import pytest
from servicekit import aws
from servicekit.events import EventPublisher
from vc_start.models import SessionStatus
from vc_start.worker import build_consumer


@pytest.fixture
def consumer(settings):
    return build_consumer(settings)


@pytest.fixture
async def pending(store):
    return await store.create("3f2a1c9e-8b7d-4e6f-9a0b-1c2d3e4f5a6b", "p-1", "user-1")


async def test_slot_confirmed_activates_a_pending_session(settings, consumer, store, pending, persona_events):
    # The whole path: persona publishes on the bus, the rule routes it to vc-start's queue, the worker consumes it.
    await EventPublisher(settings, source="mf.persona").publish("SlotConfirmed", {"session_id": pending.session_id, "persona_id": "p-1"})

    stats = await consumer.poll_once()

    assert stats["handled"] == 1
    session = await store.get(pending.session_id)
    assert (session.status, session.reason) == (SessionStatus.ACTIVE, None)
    assert persona_events() == []


async def test_slot_confirmed_for_a_cancelled_session_releases_the_slot(consumer, store, pending, deliver, persona_events, validate_event):
    await store.cancel(pending.session_id, "persona_unavailable")
    deliver("SlotConfirmed", {"session_id": pending.session_id, "persona_id": "p-1"})

    await consumer.poll_once()

    assert (await store.get(pending.session_id)).status is SessionStatus.CANCELLED  # never resurrected
    [(detail_type, detail)] = persona_events()
    assert detail_type == "SessionCancelled"
    validate_event(detail_type, detail)
    assert detail["data"] == {"session_id": pending.session_id, "persona_id": "p-1", "reason": "persona_unavailable"}


async def test_slot_released_cancels_a_pending_session_with_the_reason(consumer, store, pending, deliver):
    deliver("SlotReleased", {"session_id": pending.session_id, "persona_id": "p-1", "reason": "reservation_expired"})

    await consumer.poll_once()

    session = await store.get(pending.session_id)
    assert (session.status, session.reason) == (SessionStatus.CANCELLED, "reservation_expired")


async def test_slot_released_leaves_an_active_session_active(consumer, store, pending, deliver):
    await store.activate(pending.session_id)
    deliver("SlotReleased", {"session_id": pending.session_id, "persona_id": "p-1", "reason": "reservation_expired"})

    stats = await consumer.poll_once()

    assert stats["handled"] == 1  # consumed, not left to bounce into the DLQ
    assert (await store.get(pending.session_id)).status is SessionStatus.ACTIVE


async def test_slot_released_keeps_the_first_cancel_reason(consumer, store, pending, deliver):
    # vc-start cancelled first (persona_unavailable); persona's answer to the compensation must not rewrite why.
    await store.cancel(pending.session_id, "persona_unavailable")
    deliver("SlotReleased", {"session_id": pending.session_id, "persona_id": "p-1", "reason": "persona_unavailable_compensation"})

    await consumer.poll_once()

    assert (await store.get(pending.session_id)).reason == "persona_unavailable"


async def test_duplicate_event_is_processed_once(consumer, store, pending, deliver, persona_events):
    await store.cancel(pending.session_id, "persona_unavailable")
    deliver("SlotConfirmed", {"session_id": pending.session_id, "persona_id": "p-1"}, times=2)

    first = await consumer.poll_once()
    second = await consumer.poll_once()

    assert first["handled"] + second["handled"] == 1
    assert first["duplicate"] + second["duplicate"] == 1
    assert [t for t, _ in persona_events()] == ["SessionCancelled"]  # one compensation, not two


async def test_events_for_unknown_sessions_are_consumed_and_change_nothing(settings, consumer, deliver, session_items):
    deliver("SlotConfirmed", {"session_id": "00000000-0000-4000-8000-000000000000", "persona_id": "p-1"})
    deliver("SlotReleased", {"session_id": "00000000-0000-4000-8000-000000000001", "persona_id": "p-1", "reason": "reservation_expired"})

    stats = await consumer.poll_once()

    assert stats["handled"] == 2
    assert session_items() == []


async def test_failed_compensation_leaves_the_message_for_redelivery(settings, store, pending, deliver):
    # The bus is gone: the SessionCancelled cannot go out, so the SlotConfirmed must be retried later.
    await store.cancel(pending.session_id, "persona_unavailable")
    settings.event_bus_name = "no-such-bus"
    consumer = build_consumer(settings)
    deliver("SlotConfirmed", {"session_id": pending.session_id, "persona_id": "p-1"})

    stats = await consumer.poll_once()

    assert stats["failed"] == 1
    sqs = aws.client("sqs", settings)
    attributes = sqs.get_queue_attributes(QueueUrl=settings.queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
    assert attributes["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "1"  # not deleted: SQS redelivers it
