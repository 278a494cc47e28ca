"""The worker's sweeper settles what nothing else will: a PENDING session nobody reads is timed out once overdue,
and a SessionCancelled that could not be published when the session was cancelled is published later. The real
store, index and publisher on moto; the test clock decides what is overdue."""

from __future__ import annotations

import uuid
import asyncio
import logging

import pytest

from botocore.exceptions import ClientError
from servicekit import aws
from servicekit.events import QueueConsumer
from servicekit.worker import serve_worker
from vc_start.handlers import SessionEventHandlers
from vc_start.models import SessionStatus
from vc_start.persona import PersonaUnavailableError
from vc_start.saga import StartSessionSaga
from vc_start.store import COMPENSATION_GRACE_SECONDS, SWEEP_SHARDS, SessionStore
from vc_start.sweeper import SessionSweeper
from vc_start.worker import build_consumer, build_sweeper

SESSION_ID = "3f2a1c9e-8b7d-4e6f-9a0b-1c2d3e4f5a6b"
KEY = {"pk": {"S": f"SESSION#{SESSION_ID}"}, "sk": {"S": "SESSION"}}
TIMEOUT = 180.0
A_DAY = 86_400


def sweeper(store, publisher) -> SessionSweeper:
    return SessionSweeper(store=store, publisher=publisher, interval_seconds=1)


async def due(store: SessionStore) -> list[str]:
    return [sid for shard in range(SWEEP_SHARDS) for sid in await store.due_for_sweep(shard, limit=100)]


async def later_due(store: SessionStore, clock, seconds: float) -> list[str]:
    """The sessions due for a sweep ``seconds`` from now (the clock is put back after)."""
    clock.advance(seconds)
    try:
        return await due(store)
    finally:
        clock.advance(-seconds)


async def test_a_pending_session_nobody_reads_is_timed_out_and_compensated_once_overdue(
    store, publisher, clock, persona_events, validate_event
):
    await store.create(SESSION_ID, "p-1", "user-1")  # as if vc-start died before SessionStarted went out

    clock.advance(TIMEOUT - 1)
    assert await sweeper(store, publisher).sweep() == 0
    assert (await store.get(SESSION_ID)).status is SessionStatus.PENDING

    clock.advance(1)
    assert await sweeper(store, publisher).sweep() == 1

    session = await store.get(SESSION_ID)
    assert (session.status, session.reason) == (SessionStatus.CANCELLED, "timed_out")
    [(detail_type, detail)] = persona_events()
    validate_event(detail_type, detail)
    assert (detail_type, detail["data"]) == ("SessionCancelled", {"session_id": SESSION_ID, "persona_id": "p-1", "reason": "timed_out"})
    assert detail["correlation_id"]
    # Settled and compensated: it leaves the index, so no later pass sends anything again.
    assert await later_due(store, clock, A_DAY) == []
    assert await sweeper(store, publisher).sweep() == 0
    assert persona_events() == []


async def test_sessions_settled_in_time_leave_the_index(store, publisher, clock, persona_events):
    for session_id, settle in (("a" * 8, store.activate), ("b" * 8, lambda sid: store.cancel(sid, "reservation_expired"))):
        await store.create(session_id, "p-1", "user-1")
        assert (await settle(session_id)).applied

    assert await later_due(store, clock, A_DAY) == []
    clock.advance(A_DAY)
    assert await sweeper(store, publisher).sweep() == 0
    assert persona_events() == []


async def test_a_timeout_whose_compensation_failed_is_compensated_by_a_later_sweep(
    store, publisher, broken_publisher, clock, persona_events
):
    await store.create(SESSION_ID, "p-1", "user-1")
    clock.advance(TIMEOUT)
    await sweeper(store, broken_publisher).sweep()  # the bus is down: timed out, SessionCancelled not sent
    assert (await store.get(SESSION_ID)).reason == "timed_out"
    assert persona_events() == []

    # Within the grace period the session is left to whoever cancelled it.
    clock.advance(COMPENSATION_GRACE_SECONDS - 1)
    assert await sweeper(store, publisher).sweep() == 0
    clock.advance(1)
    assert await sweeper(store, publisher).sweep() == 1

    assert [(t, d["data"]["reason"]) for t, d in persona_events()] == [("SessionCancelled", "timed_out")]
    assert await later_due(store, clock, A_DAY) == []


async def test_an_ambiguous_reservation_whose_compensation_failed_is_compensated_by_the_sweep(
    persona, store, publisher, broken_publisher, clock, persona_events
):
    persona.errors["reserve_slot"] = PersonaUnavailableError("ReserveSlot: UNAVAILABLE")
    saga = StartSessionSaga(persona=persona, publisher=broken_publisher, store=store)
    session = await saga.start(persona_id="p-1", user_id="user-1", token="caller-token", session_id=str(uuid.uuid4()))
    assert (session.status, session.reason) == (SessionStatus.CANCELLED, "persona_unavailable")

    clock.advance(COMPENSATION_GRACE_SECONDS)
    await sweeper(store, publisher).sweep()

    # persona may hold a slot for it: it is told to release it, with the session's own reason.
    [(detail_type, detail)] = persona_events()
    assert (detail_type, detail["data"]) == (
        "SessionCancelled", {"session_id": session.session_id, "persona_id": "p-1", "reason": "persona_unavailable"})


async def test_compensations_that_went_out_at_once_are_not_sent_again(persona, store, publisher, clock, persona_events):
    persona.errors["reserve_slot"] = PersonaUnavailableError("ReserveSlot: UNAVAILABLE")
    await StartSessionSaga(persona=persona, publisher=publisher, store=store).start(persona_id="p-1", user_id="user-1", token="t",
        session_id=str(uuid.uuid4()))
    await store.create(SESSION_ID, "p-1", "user-1")
    clock.advance(TIMEOUT)
    await sweeper(store, publisher).sweep()
    assert len(persona_events()) == 2  # the saga's and the timeout's

    clock.advance(A_DAY)
    assert await sweeper(store, publisher).sweep() == 0
    assert persona_events() == []


async def test_a_late_slot_confirmed_publishes_the_compensation_a_failed_timeout_left(
    settings, store, publisher, broken_publisher, clock, deliver, persona_events
):
    await store.create(SESSION_ID, "p-1", "user-1")
    clock.advance(TIMEOUT)
    await sweeper(store, broken_publisher).sweep()
    deliver("SlotConfirmed", {"session_id": SESSION_ID, "persona_id": "p-1"})

    await QueueConsumer(settings, SessionEventHandlers(store=store, publisher=publisher).handlers(), table_name=settings.table_name).poll_once()

    assert [(t, d["data"]["reason"]) for t, d in persona_events()] == [("SessionCancelled", "timed_out")]
    assert await later_due(store, clock, A_DAY) == []  # the worker's publish counts: the sweeper sends nothing more


async def test_a_session_cancelled_after_its_publish_failed_leaves_the_index(persona, store, broken_publisher, clock):
    # SessionStarted could not be published: the saga releases the hold over gRPC, nothing is owed on the bus.
    session = await StartSessionSaga(persona=persona, publisher=broken_publisher, store=store).start(
        persona_id="p-1", user_id="user-1", token="t", session_id=SESSION_ID)
    assert (session.status, session.reason) == (SessionStatus.CANCELLED, "event_publish_failed")
    assert persona.called("release_slot")  # the ReleaseSlot went through: nothing is owed
    assert await later_due(store, clock, A_DAY) == []


async def test_when_release_slot_fails_too_the_sweeper_sends_session_cancelled_instead(
    persona, store, publisher, broken_publisher, clock, persona_events
):
    persona.errors["release_slot"] = PersonaUnavailableError("ReleaseSlot: UNAVAILABLE")
    await StartSessionSaga(persona=persona, publisher=broken_publisher, store=store).start(
        persona_id="p-1", user_id="user-1", token="t", session_id=SESSION_ID)

    clock.advance(COMPENSATION_GRACE_SECONDS)
    await sweeper(store, publisher).sweep()

    [(detail_type, detail)] = persona_events()
    assert (detail_type, detail["data"]["reason"]) == ("SessionCancelled", "event_publish_failed")
    assert await later_due(store, clock, A_DAY) == []


async def test_a_region_sweeps_only_what_it_wrote(settings, store, publisher, clock, persona_events):
    # An entry replicated from the other region's sessions (the table is global): that region sweeps it.
    await store.create(SESSION_ID, "p-1", "user-1")
    item = aws.client("dynamodb", settings).get_item(TableName=settings.table_name, Key=KEY)["Item"]
    assert item["sweep_shard"]["S"].startswith(f"{settings.aws_region}#")
    aws.client("dynamodb", settings).update_item(
        TableName=settings.table_name, Key=KEY, UpdateExpression="SET sweep_shard = :other",
        ExpressionAttributeValues={":other": {"S": "eu-west-1#0"}})

    clock.advance(A_DAY)
    assert await sweeper(store, publisher).sweep() == 0
    assert (await store.get(SESSION_ID)).status is SessionStatus.PENDING
    assert persona_events() == []


async def test_one_session_that_cannot_be_swept_does_not_hold_up_the_others(settings, store, publisher, clock, persona_events, caplog):
    for session_id in (SESSION_ID, "second-session"):
        await store.create(session_id, "p-1", "user-1")
    aws.client("dynamodb", settings).update_item(  # an item the store cannot read
        TableName=settings.table_name, Key=KEY, UpdateExpression="SET #s = :bad",
        ExpressionAttributeNames={"#s": "status"}, ExpressionAttributeValues={":bad": {"S": "BROKEN"}})
    clock.advance(TIMEOUT)

    assert await sweeper(store, publisher).sweep() == 2

    assert (await store.get("second-session")).reason == "timed_out"
    assert [d["data"]["session_id"] for _, d in persona_events()] == ["second-session"]
    assert any(r.message.startswith("sweeping a session failed") for r in caplog.records)


@pytest.mark.parametrize("creators_timeout", [60, 600])
async def test_a_session_is_overdue_by_the_deadline_it_was_stored_with_not_the_sweeping_workers_setting(
    settings, store, publisher, clock, persona_events, creators_timeout
):
    # As during a rollout that changes SESSION_PENDING_TIMEOUT_SECONDS: the API that stored it had another value.
    creator = SessionStore(aws.client("dynamodb", settings), settings.table_name, pending_timeout_seconds=creators_timeout, clock=clock)
    await creator.create(SESSION_ID, "p-1", "user-1")

    clock.advance(creators_timeout - 1)
    await sweeper(store, publisher).sweep()  # this worker's store says 180 s
    assert (await store.get(SESSION_ID)).status is SessionStatus.PENDING

    clock.advance(1)
    await sweeper(store, publisher).sweep()
    assert (await store.get(SESSION_ID)).reason == "timed_out"
    assert [t for t, _ in persona_events()] == ["SessionCancelled"]


async def test_the_worker_process_sweeps_beside_its_consumer_until_stopped(settings, persona_events):
    # On the real clock: a 1 ms timeout makes the session overdue (and due in the index) at once.
    settings.session_sweep_interval_seconds = 0.05
    store = SessionStore(aws.client("dynamodb", settings), settings.table_name, pending_timeout_seconds=0.001)
    await store.create(SESSION_ID, "p-1", "user-1")
    stop = asyncio.Event()

    worker = asyncio.create_task(serve_worker(build_consumer(settings), stop, alongside=[build_sweeper(settings)]))
    for _ in range(100):
        if (await store.get(SESSION_ID)).status is SessionStatus.CANCELLED:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(worker, 5)

    assert (await store.get(SESSION_ID)).reason == "timed_out"
    assert [t for t, _ in persona_events()] == ["SessionCancelled"]


async def test_a_failed_pass_is_logged_and_the_sweeper_keeps_going(settings, publisher, caplog):
    missing = SessionStore(aws.client("dynamodb", settings), "no-such-table")
    stop = asyncio.Event()
    caplog.set_level(logging.ERROR, logger="vc_start.sweeper")

    task = asyncio.create_task(SessionSweeper(store=missing, publisher=publisher, interval_seconds=0.01).run_until(stop))
    for _ in range(200):
        if len([r for r in caplog.records if r.message.startswith("session sweep failed")]) >= 2:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)

    failures = [r for r in caplog.records if r.message.startswith("session sweep failed")]
    assert len(failures) >= 2 and "ResourceNotFoundException" in (failures[0].exc_text or "")


async def test_a_compensation_that_went_out_is_answered_even_when_the_index_cannot_be_cleared(
    settings, persona, publisher, clock, persona_events, caplog
):
    class ThrottledRemoves:
        """The real client, except that the write taking a session out of the sweep index is throttled."""

        def __init__(self, client):
            self._client = client

        def __getattr__(self, name):
            return getattr(self._client, name)

        def update_item(self, **kwargs):
            if kwargs["UpdateExpression"].startswith("REMOVE"):
                raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, "UpdateItem")
            return self._client.update_item(**kwargs)

    store = SessionStore(ThrottledRemoves(aws.client("dynamodb", settings)), settings.table_name, pending_timeout_seconds=TIMEOUT, clock=clock)
    persona.errors["reserve_slot"] = PersonaUnavailableError("ReserveSlot: UNAVAILABLE")

    session = await StartSessionSaga(persona=persona, publisher=publisher, store=store).start(
        persona_id="p-1", user_id="user-1", token="t", session_id=SESSION_ID)

    assert (session.status, session.reason) == (SessionStatus.CANCELLED, "persona_unavailable")  # answered, not a 5xx
    assert [t for t, _ in persona_events()] == ["SessionCancelled"]
    assert any(r.message == "session left in the sweep index" for r in caplog.records)
    assert await later_due(store, clock, COMPENSATION_GRACE_SECONDS) == [SESSION_ID]  # the sweeper sends it once more
