"""persona's saga worker: SessionStarted confirms (or reports the slot gone), SessionCancelled releases.

Events go out through servicekit's real EventPublisher to moto's EventBridge; a rule copies persona's events to a
queue (as the bus routes them to vc-start's), where the tests read them."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import jsonschema
import pytest
from persona_service import store as st
from persona_service.worker import SlotEventHandlers, build_consumer
from servicekit import aws
from servicekit.events import EventPublisher

REGION = "us-east-1"  # conftest's moto region
CONTRACTS = Path(__file__).resolve().parents[2] / "contracts" / "events"
PERSONA_EVENTS = ["SlotConfirmed", "SlotReleased"]

# Building a boto3 client takes ~0.1 s; moto intercepts it whichever test's mock_aws() is active.
_SHARED_EVENTS_CLIENT: dict = {}


def _contract(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((CONTRACTS / f"{name}.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


@pytest.fixture
def published(settings, dynamodb, sqs):
    """The bus (moto) with a queue tapping persona's events; published() -> [(detail_type, data)] since the last
    call, each checked against the published contract."""
    settings._aws_clients.update(_SHARED_EVENTS_CLIENT)
    events = _SHARED_EVENTS_CLIENT[("client", "events")] = aws.client("events", settings)
    events.create_event_bus(Name=settings.event_bus_name)
    tap = sqs.create_queue(QueueName="persona-events-tap")["QueueUrl"]
    tap_arn = sqs.get_queue_attributes(QueueUrl=tap, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    pattern = {"source": [settings.event_source], "detail-type": PERSONA_EVENTS}
    events.put_rule(Name="persona-tap", EventBusName=settings.event_bus_name, EventPattern=json.dumps(pattern))
    events.put_targets(Rule="persona-tap", EventBusName=settings.event_bus_name, Targets=[{"Id": "tap", "Arn": tap_arn}])
    envelope = _contract("envelope")
    contracts = {name: _contract(name) for name in PERSONA_EVENTS}

    def read() -> list[tuple[str, dict]]:
        found = []
        while messages := sqs.receive_message(QueueUrl=tap, MaxNumberOfMessages=10).get("Messages", []):
            for message in messages:
                body = json.loads(message["Body"])
                envelope.validate(body["detail"])
                contracts[body["detail-type"]].validate(body["detail"]["data"])
                found.append((body["detail-type"], body["detail"]["data"]))
                sqs.delete_message(QueueUrl=tap, ReceiptHandle=message["ReceiptHandle"])
        return found

    return read


@pytest.fixture
def publisher(settings, published) -> EventPublisher:
    return EventPublisher(settings)


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


async def test_session_started_confirms_the_hold(handlers, published, store, held, clock):
    persona_id, session_id = held
    await handlers.session_started({"session_id": session_id, "persona_id": persona_id, "user_id": "user-a"})
    assert published() == [("SlotConfirmed", {"session_id": session_id, "persona_id": persona_id})]
    assert store.get_reservation(persona_id, session_id).status == st.CONFIRMED
    clock.advance(3600)  # confirmed slots do not expire
    assert store.get(persona_id, "user-a").reserved == 1


async def test_session_started_after_the_hold_expired_reports_it_released(handlers, published, store, held, clock):
    persona_id, session_id = held
    clock.advance(121)
    await handlers.session_started({"session_id": session_id, "persona_id": persona_id, "user_id": "user-a"})
    assert published() == [("SlotReleased", {"session_id": session_id, "persona_id": persona_id, "reason": "reservation_expired"})]
    assert store.get(persona_id, "user-a").reserved == 0


async def test_session_started_after_a_cancel_reports_the_cancels_reason(handlers, published, store, held):
    persona_id, session_id = held
    cancel = {"session_id": session_id, "persona_id": persona_id, "reason": "persona_unavailable"}
    await handlers.session_cancelled(cancel)
    await handlers.session_started({"session_id": session_id, "persona_id": persona_id, "user_id": "user-a"})  # arrives late
    assert published() == [("SlotReleased", cancel)] * 2
    assert store.get_reservation(persona_id, session_id).status == st.RELEASED


async def test_session_started_without_a_reservation_reports_it_not_found(handlers, published, store):
    persona = store.create("user-a", "Ada", {}, 1)
    ids = {"session_id": str(uuid.uuid4()), "persona_id": persona.persona_id}
    await handlers.session_started({**ids, "user_id": "user-a"})
    assert published() == [("SlotReleased", {**ids, "reason": "reservation_not_found"})]
    assert store.get(persona.persona_id, "user-a").reserved == 0


async def test_session_cancelled_releases_with_its_reason(handlers, published, store, held):
    persona_id, session_id = held
    await handlers.session_started({"session_id": session_id, "persona_id": persona_id, "user_id": "user-a"})
    published()  # the SlotConfirmed
    cancel = {"session_id": session_id, "persona_id": persona_id, "reason": "persona_unavailable"}
    await handlers.session_cancelled(cancel)
    await handlers.session_cancelled(cancel)  # redelivered compensation: nothing more to free
    assert published() == [("SlotReleased", cancel)] * 2
    assert store.get(persona_id, "user-a").reserved == 0


async def test_event_without_ids_is_left_for_the_dlq(handlers, published):
    with pytest.raises(ValueError, match="persona_id and session_id"):
        await handlers.session_started({"session_id": str(uuid.uuid4())})
    assert published() == []


def _delivery(detail_type: str, data: dict) -> str:
    """An SQS message body as the bus delivers vc-start's event to persona's queue."""
    return json.dumps({
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
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
            "data": data,
        },
    })


@pytest.fixture
def queue(settings, sqs):
    """persona's queue; the settings the worker runs with (failed messages come back at once: no backoff)."""
    queue_url = sqs.create_queue(QueueName="mf-persona-events-test")["QueueUrl"]
    return queue_url, settings.model_copy(update={"queue_url": queue_url, "queue_wait_seconds": 0, "event_retry_backoff_seconds": 0})


async def test_duplicate_delivery_is_handled_once(dynamodb, sqs, queue, held, publisher, published, clock):
    """The same SessionStarted delivered twice (SQS at-least-once) through the real queue consumer."""
    persona_id, session_id = held
    queue_url, worker_settings = queue
    consumer = build_consumer(worker_settings, dynamodb=dynamodb, publisher=publisher, clock=clock)

    body = _delivery("SessionStarted", {"session_id": session_id, "persona_id": persona_id, "user_id": "user-a"})
    for _ in range(2):
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    stats = [await consumer.poll_once() for _ in range(2)]
    assert (stats[0]["handled"] + stats[1]["handled"], stats[0]["duplicate"] + stats[1]["duplicate"]) == (1, 1)

    assert published() == [("SlotConfirmed", {"session_id": session_id, "persona_id": persona_id})]
    assert sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"] == {
        "ApproximateNumberOfMessages": "0"
    }


async def test_a_failed_publish_leaves_the_message_for_redelivery(dynamodb, sqs, queue, store, held, published, clock):
    """The bus refuses the SlotConfirmed: the SessionStarted stays on the queue, and its redelivery tells vc-start."""
    persona_id, session_id = held
    queue_url, worker_settings = queue
    ids = {"session_id": session_id, "persona_id": persona_id}
    sqs.send_message(QueueUrl=queue_url, MessageBody=_delivery("SessionStarted", {**ids, "user_id": "user-a"}))

    no_bus = EventPublisher(worker_settings, bus_name="no-such-bus")
    stats = await build_consumer(worker_settings, dynamodb=dynamodb, publisher=no_bus, clock=clock).poll_once()

    assert stats["failed"] == 1 and published() == []
    assert store.get_reservation(persona_id, session_id).status == st.CONFIRMED  # written before the publish failed
    # Not deleted: the redelivery (the bus is back) confirms again, idempotently, and this time vc-start hears of it.
    stats = await build_consumer(worker_settings, dynamodb=dynamodb, publisher=EventPublisher(worker_settings), clock=clock).poll_once()
    assert stats["handled"] == 1
    assert published() == [("SlotConfirmed", ids)]
