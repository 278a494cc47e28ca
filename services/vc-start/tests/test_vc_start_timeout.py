"""A session never stays PENDING forever: past SESSION_PENDING_TIMEOUT_SECONDS it is CANCELLED `timed_out` when
read or when a late SlotConfirmed arrives, and persona is told to release any slot it holds for it."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from servicekit import aws
from servicekit.events import QueueConsumer
from vc_start.app import create_app
from vc_start.handlers import SessionEventHandlers
from vc_start.models import SessionStatus
from vc_start.settings import VcStartSettings
from vc_start.worker import build_consumer

SESSION_ID = "3f2a1c9e-8b7d-4e6f-9a0b-1c2d3e4f5a6b"
TIMEOUT = 180.0  # the documented default: persona's 120 s hold plus a margin


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def pending(store):
    # As if vc-start died right after storing the session: no event will ever finish it.
    return await store.create(SESSION_ID, "p-1", "user-1")


@pytest.fixture
def worker(settings, store, publisher):
    """The real consumer with handlers on the test clock."""
    handlers = SessionEventHandlers(store=store, publisher=publisher)
    return QueueConsumer(settings, handlers.handlers(), table_name=settings.table_name)


def test_the_timeout_defaults_to_the_persona_hold_plus_a_margin(monkeypatch):
    from persona_service.settings import PersonaSettings

    # A session must not time out while persona may still hold its slot (the hold is confirmed or expired by then).
    assert VcStartSettings().session_pending_timeout_seconds > PersonaSettings().reservation_hold_seconds
    assert VcStartSettings().session_pending_timeout_seconds == TIMEOUT  # documented (vc-start/README.md)
    monkeypatch.setenv("SESSION_PENDING_TIMEOUT_SECONDS", "300")
    assert VcStartSettings().session_pending_timeout_seconds == 300


async def test_get_answers_pending_until_the_timeout(http, make_token, clock, pending, persona_events):
    clock.advance(TIMEOUT - 1)

    response = await http.get(f"/v1/sessions/{SESSION_ID}", headers=bearer(make_token()))

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["reason"]) == ("PENDING", None)
    assert persona_events() == []


async def test_get_times_out_an_overdue_session_and_releases_its_slot(
    http, make_token, clock, store, pending, persona_events, validate_event
):
    clock.advance(TIMEOUT)

    response = await http.get(f"/v1/sessions/{SESSION_ID}", headers=bearer(make_token()))

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["reason"]) == ("CANCELLED", "timed_out")
    assert body["updated_at"] > body["created_at"]
    stored = await store.get(SESSION_ID)
    assert (stored.status, stored.reason) == (SessionStatus.CANCELLED, "timed_out")
    # Compensation: persona releases any hold or confirmed slot of this session.
    [(detail_type, detail)] = persona_events()
    assert detail_type == "SessionCancelled"
    validate_event(detail_type, detail)
    assert detail["data"] == {"session_id": SESSION_ID, "persona_id": "p-1", "reason": "timed_out"}

    again = await http.get(f"/v1/sessions/{SESSION_ID}", headers=bearer(make_token()))
    assert again.json() == body
    assert persona_events() == []  # timed out (and compensated) once


async def test_concurrent_reads_time_out_the_session_once(http, make_token, clock, pending, persona_events, atomic_moto):
    clock.advance(TIMEOUT + 60)

    responses = await asyncio.gather(*(http.get(f"/v1/sessions/{SESSION_ID}", headers=bearer(make_token())) for _ in range(4)))

    assert {(r.json()["status"], r.json()["reason"]) for r in responses} == {("CANCELLED", "timed_out")}
    assert [t for t, _ in persona_events()] == ["SessionCancelled"]


async def test_another_users_read_does_not_touch_the_session(http, make_token, clock, store, pending, persona_events):
    clock.advance(TIMEOUT)

    response = await http.get(f"/v1/sessions/{SESSION_ID}", headers=bearer(make_token("user-2")))

    assert response.status_code == 404
    assert (await store.get(SESSION_ID)).status is SessionStatus.PENDING
    assert persona_events() == []


@pytest.mark.parametrize("decided", ["activate", "cancel"])
async def test_decided_sessions_never_time_out(http, make_token, clock, store, pending, persona_events, decided):
    if decided == "activate":
        await store.activate(SESSION_ID)
    else:
        await store.cancel(SESSION_ID, "no_slot_available")
    before = await store.get(SESSION_ID)
    clock.advance(TIMEOUT * 10)

    response = await http.get(f"/v1/sessions/{SESSION_ID}", headers=bearer(make_token()))

    assert (response.json()["status"], response.json()["reason"]) == (before.status.value, before.reason)
    assert (await store.time_out(SESSION_ID)).applied is False
    assert await store.get(SESSION_ID) == before
    assert persona_events() == []


async def test_time_out_is_refused_while_the_session_is_not_overdue(clock, store, pending):
    # The update itself re-checks the age: a reader with a stale view cannot cancel a session that is still in time.
    clock.advance(TIMEOUT - 0.5)

    transition = await store.time_out(SESSION_ID)

    assert transition.applied is False
    assert transition.session.status is SessionStatus.PENDING


async def test_get_still_answers_when_the_compensation_cannot_be_published(
    settings, make_clients, broken_publisher, make_token, clock, pending
):
    # The session is cancelled all the same; a confirmed slot is released when its late SlotConfirmed arrives,
    # and a hold (shorter than the timeout) has expired and is reclaimed by persona.
    app = create_app(settings, clients=make_clients(publisher=broken_publisher))
    clock.advance(TIMEOUT)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://vc") as c:
        response = await c.get(f"/v1/sessions/{SESSION_ID}", headers=bearer(make_token()))

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["reason"]) == ("CANCELLED", "timed_out")


async def test_slot_confirmed_in_time_activates(worker, clock, store, pending, deliver, persona_events):
    clock.advance(TIMEOUT - 1)
    deliver("SlotConfirmed", {"session_id": SESSION_ID, "persona_id": "p-1"})

    await worker.poll_once()

    assert (await store.get(SESSION_ID)).status is SessionStatus.ACTIVE
    assert persona_events() == []


async def test_late_slot_confirmed_times_out_the_session_and_releases_the_slot(
    worker, clock, store, pending, deliver, persona_events, validate_event
):
    clock.advance(TIMEOUT)
    deliver("SlotConfirmed", {"session_id": SESSION_ID, "persona_id": "p-1"})

    stats = await worker.poll_once()

    assert stats["handled"] == 1
    session = await store.get(SESSION_ID)
    assert (session.status, session.reason) == (SessionStatus.CANCELLED, "timed_out")  # never activated
    [(detail_type, detail)] = persona_events()
    validate_event(detail_type, detail)
    assert (detail_type, detail["data"]) == ("SessionCancelled", {"session_id": SESSION_ID, "persona_id": "p-1", "reason": "timed_out"})


async def test_slot_confirmed_after_a_read_timed_out_the_session_still_releases_the_slot(
    http, make_token, worker, clock, pending, deliver, persona_events
):
    clock.advance(TIMEOUT)
    await http.get(f"/v1/sessions/{SESSION_ID}", headers=bearer(make_token()))
    deliver("SlotConfirmed", {"session_id": SESSION_ID, "persona_id": "p-1"})

    await worker.poll_once()

    # One SessionCancelled from the read, one from the worker (persona releases idempotently).
    assert [(t, d["data"]["reason"]) for t, d in persona_events()] == [("SessionCancelled", "timed_out")] * 2


async def test_the_worker_judges_by_the_deadline_stored_with_the_session(settings, store, pending, deliver):
    # `pending` was stored with the default 180 s; a worker configured with 1 ms still activates it in time.
    settings.session_pending_timeout_seconds = 0.001
    await asyncio.sleep(0.01)
    deliver("SlotConfirmed", {"session_id": SESSION_ID, "persona_id": "p-1"})

    await build_consumer(settings).poll_once()

    assert (await store.get(SESSION_ID)).status is SessionStatus.ACTIVE


async def test_a_session_stored_without_a_deadline_by_an_earlier_version_is_judged_by_its_age(settings, store, clock):
    """During a rollout old API tasks still store sessions without pending_until: creation plus the timeout decides."""
    for session_id in ("old-1", "old-2"):
        await store.create(session_id, "p-1", "user-1")
        aws.client("dynamodb", settings).update_item(
            TableName=settings.table_name, Key={"pk": {"S": f"SESSION#{session_id}"}, "sk": {"S": "SESSION"}},
            UpdateExpression="REMOVE pending_until")
    clock.advance(TIMEOUT - 1)
    assert not store.is_overdue(await store.get("old-1"))
    assert (await store.time_out("old-1")).applied is False
    assert (await store.activate("old-1")).applied  # in time
    clock.advance(1)
    assert store.is_overdue(await store.get("old-2"))
    assert (await store.activate("old-2")).applied is False
    assert (await store.time_out("old-2")).applied
