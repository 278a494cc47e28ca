"""The request half of the saga, step by step: the real store and publisher on moto, a fake persona."""

from __future__ import annotations

import uuid
import pytest
from vc_start.models import SessionStatus
from vc_start.persona import NoSlotAvailableError, PersonaNotFoundError, PersonaUnavailableError, ReservationStatus, SlotReservation
from vc_start.saga import SessionConflictError, StartSessionSaga

TOKEN = "caller-token"


def saga(persona, publisher, store) -> StartSessionSaga:
    return StartSessionSaga(persona=persona, publisher=publisher, store=store)


async def test_happy_path_leaves_session_pending_and_publishes_session_started(persona, publisher, store, persona_events, validate_event):
    session = await saga(persona, publisher, store).start(persona_id="p-1", user_id="user-1", token=TOKEN, session_id=str(uuid.uuid4()))

    assert session.status is SessionStatus.PENDING and session.reason is None
    assert (await store.get(session.session_id)).status is SessionStatus.PENDING
    # The caller's token travels with both persona calls; the slot is held for this very session.
    assert persona.called("reserve_slot") == [("reserve_slot", "p-1", session.session_id, TOKEN)]
    [(detail_type, detail)] = persona_events()
    assert detail_type == "SessionStarted"
    validate_event(detail_type, detail)
    assert detail["data"] == {"session_id": session.session_id, "persona_id": "p-1", "user_id": "user-1"}


@pytest.mark.parametrize(
    ("error", "expected"),
    [(PersonaNotFoundError("gone"), PersonaNotFoundError), (PersonaUnavailableError("down"), PersonaUnavailableError)],
)
async def test_persona_read_failure_writes_and_reserves_nothing(persona, publisher, store, session_items, persona_events, error, expected):
    persona.errors["get_persona"] = error

    with pytest.raises(expected):
        await saga(persona, publisher, store).start(persona_id="p-1", user_id="user-1", token=TOKEN, session_id=str(uuid.uuid4()))

    assert session_items() == []
    assert persona.called("reserve_slot") == []
    assert persona_events() == []


async def test_reservation_refused_cancels_without_compensation(persona, publisher, store, persona_events):
    persona.errors["reserve_slot"] = NoSlotAvailableError("all slots taken")

    session = await saga(persona, publisher, store).start(persona_id="p-1", user_id="user-1", token=TOKEN, session_id=str(uuid.uuid4()))

    assert (session.status, session.reason) == (SessionStatus.CANCELLED, "no_slot_available")
    assert (await store.get(session.session_id)).reason == "no_slot_available"
    assert persona_events() == []  # persona holds nothing: nothing to undo
    assert persona.called("release_slot") == []


async def test_reservation_timeout_cancels_and_publishes_session_cancelled(persona, publisher, store, persona_events, validate_event):
    persona.errors["reserve_slot"] = PersonaUnavailableError("ReserveSlot: DEADLINE_EXCEEDED")

    session = await saga(persona, publisher, store).start(persona_id="p-1", user_id="user-1", token=TOKEN, session_id=str(uuid.uuid4()))

    assert (session.status, session.reason) == (SessionStatus.CANCELLED, "persona_unavailable")
    assert (await store.get(session.session_id)).status is SessionStatus.CANCELLED
    # The hold may exist: persona is told to release it, and SessionStarted never goes out.
    [(detail_type, detail)] = persona_events()
    assert detail_type == "SessionCancelled"
    validate_event(detail_type, detail)
    assert detail["data"] == {"session_id": session.session_id, "persona_id": "p-1", "reason": "persona_unavailable"}


async def test_persona_deleted_between_read_and_reserve_cancels_without_compensation(persona, publisher, store, persona_events):
    persona.errors["reserve_slot"] = PersonaNotFoundError("ReserveSlot: not found")

    session = await saga(persona, publisher, store).start(persona_id="p-1", user_id="user-1", token=TOKEN, session_id=str(uuid.uuid4()))

    assert (session.status, session.reason) == (SessionStatus.CANCELLED, "persona_not_found")
    assert persona_events() == []


async def test_publish_failure_cancels_and_releases_the_slot(persona, broken_publisher, store):
    session = await saga(persona, broken_publisher, store).start(persona_id="p-1", user_id="user-1", token=TOKEN,
        session_id=str(uuid.uuid4()))

    assert (session.status, session.reason) == (SessionStatus.CANCELLED, "event_publish_failed")
    assert (await store.get(session.session_id)).status is SessionStatus.CANCELLED
    assert persona.called("release_slot") == [("release_slot", "p-1", session.session_id, "event_publish_failed", TOKEN)]


async def test_a_session_started_event_eventbridge_throttled_once_is_put_again_and_the_session_goes_on(
    persona, publisher, store, persona_events, answer_instead
):
    # PutEvents answers 200 with the entry rejected (botocore does not retry that); ThrottlingException may pass later.
    throttled = {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "ThrottlingException", "ErrorMessage": "Rate exceeded"}]}
    put_events = answer_instead("PutEvents", throttled, status=200, times=1)

    session = await saga(persona, publisher, store).start(persona_id="p-1", user_id="user-1", token=TOKEN, session_id=str(uuid.uuid4()))

    assert (session.status, session.reason) == (SessionStatus.PENDING, None)
    assert put_events.sent == 2
    [(detail_type, detail)] = persona_events()
    assert detail_type == "SessionStarted" and detail["data"]["session_id"] == session.session_id
    assert persona.called("release_slot") == []


async def test_a_cancel_whose_answer_was_lost_and_retried_still_releases_the_slot_at_once(persona, broken_publisher, store, lose_answer):
    """DynamoDB applied the cancel but answered 500; botocore's retry then fails the PENDING condition. The saga
    must see its own write, or it leaves the slot to the sweeper a minute later."""
    lost = lose_answer("UpdateItem", '"CANCELLED"')

    session = await saga(persona, broken_publisher, store).start(persona_id="p-1", user_id="user-1", token=TOKEN,
        session_id=str(uuid.uuid4()))

    assert lost.lost == 1 and lost.sent == 2  # applied, answered 500, sent again
    assert (session.status, session.reason) == (SessionStatus.CANCELLED, "event_publish_failed")
    assert persona.called("release_slot") == [("release_slot", "p-1", session.session_id, "event_publish_failed", TOKEN)]


async def test_a_cancel_that_lost_the_race_is_not_taken_for_a_retried_one(store):
    """Only the write that moved the session out of PENDING counts as applied: a second cancel does not."""
    session = await store.create("s-1", "p-1", "user-1")
    first = await store.cancel(session.session_id, "first")
    second = await store.cancel(session.session_id, "second")

    assert first.applied and not second.applied
    assert (second.session.status, second.session.reason) == (SessionStatus.CANCELLED, "first")


async def test_a_publish_error_after_the_event_went_out_and_the_session_went_active_releases_nothing(persona, store):
    """PutEvents may fail on the caller's side after the bus took the event (a timeout): if the workers confirmed
    and activated the session meanwhile, the saga's cancel does not apply, and the ACTIVE session keeps its slot."""
    from servicekit.events import EventPublishError

    class ActivatedThenFailed:
        async def publish(self, detail_type, data):
            await store.activate(data["session_id"])  # what the workers do with the event that got through
            raise EventPublishError("PutEvents: read timeout")

    session = await saga(persona, ActivatedThenFailed(), store).start(persona_id="p-1", user_id="user-1", token=TOKEN,
        session_id=str(uuid.uuid4()))

    assert (session.status, session.reason) == (SessionStatus.ACTIVE, None)
    assert (await store.get(session.session_id)).status is SessionStatus.ACTIVE
    assert persona.called("release_slot") == []


async def test_publish_failure_still_cancels_when_release_fails_too(persona, broken_publisher, store):
    # The sweeper sends SessionCancelled in its place (test_vc_start_sweeper.py).
    persona.errors["release_slot"] = PersonaUnavailableError("ReleaseSlot: UNAVAILABLE")

    session = await saga(persona, broken_publisher, store).start(persona_id="p-1", user_id="user-1", token=TOKEN,
        session_id=str(uuid.uuid4()))

    assert (session.status, session.reason) == (SessionStatus.CANCELLED, "event_publish_failed")
    assert len(persona.called("release_slot")) == 1


async def test_reservation_timeout_still_cancels_when_compensation_cannot_be_published(persona, broken_publisher, store):
    persona.errors["reserve_slot"] = PersonaUnavailableError("ReserveSlot: UNAVAILABLE")

    session = await saga(persona, broken_publisher, store).start(persona_id="p-1", user_id="user-1", token=TOKEN,
        session_id=str(uuid.uuid4()))

    assert (session.status, session.reason) == (SessionStatus.CANCELLED, "persona_unavailable")
    assert (await store.get(session.session_id)).status is SessionStatus.CANCELLED


async def test_resuming_a_session_that_became_overdue_times_it_out_instead_of_reserving(persona, publisher, store, clock, persona_events):
    await store.create("s-1", "p-1", "user-1")  # an earlier run stored it and died
    clock.advance(180)

    session = await saga(persona, publisher, store).start(persona_id="p-1", user_id="user-1", token=TOKEN, session_id="s-1", resume=True)

    assert (session.status, session.reason) == (SessionStatus.CANCELLED, "timed_out")
    assert persona.called("reserve_slot") == []
    assert [t for t, _ in persona_events()] == ["SessionCancelled"]


async def test_a_session_id_taken_by_another_users_session_is_never_resumed(persona, publisher, store):
    await store.create("s-1", "p-1", "someone-else")

    with pytest.raises(SessionConflictError):
        await saga(persona, publisher, store).start(persona_id="p-1", user_id="user-1", token=TOKEN, session_id="s-1", resume=True)
    assert persona.called("reserve_slot") == []


@pytest.mark.parametrize(("persona_reason", "cancelled_as"), [("persona_unavailable", "persona_unavailable"), ("", "reservation_expired")])
async def test_resuming_into_a_released_reservation_cancels_with_personas_reason(
    persona, publisher, store, persona_events, persona_reason, cancelled_as
):
    await store.create("s-1", "p-1", "user-1")
    persona.reservations["s-1"] = SlotReservation(ReservationStatus.RELEASED, persona_reason)  # the hold expired, or was released

    session = await saga(persona, publisher, store).start(persona_id="p-1", user_id="user-1", token=TOKEN, session_id="s-1", resume=True)

    assert (session.status, session.reason) == (SessionStatus.CANCELLED, cancelled_as)
    assert persona_events() == []  # persona holds nothing for it: no SessionStarted, no compensation


async def test_resuming_into_a_confirmed_reservation_does_not_send_session_started_again(persona, publisher, store, persona_events):
    await store.create("s-1", "p-1", "user-1")
    persona.reservations["s-1"] = SlotReservation(ReservationStatus.CONFIRMED)  # the earlier run's SessionStarted was confirmed

    session = await saga(persona, publisher, store).start(persona_id="p-1", user_id="user-1", token=TOKEN, session_id="s-1", resume=True)

    assert session.status is SessionStatus.PENDING  # the worker's SlotConfirmed activates it
    assert persona_events() == []


@pytest.mark.parametrize("error", [PersonaNotFoundError("deleted since"), PersonaUnavailableError("down")])
async def test_resuming_a_settled_session_needs_nothing_from_persona(persona, publisher, store, error):
    await store.create("s-1", "p-1", "user-1")
    await store.cancel("s-1", "no_slot_available")
    persona.errors["get_persona"] = error

    session = await saga(persona, publisher, store).start(persona_id="p-1", user_id="user-1", token=TOKEN, session_id="s-1", resume=True)

    assert (session.status, session.reason) == (SessionStatus.CANCELLED, "no_slot_available")
    with pytest.raises(type(error)):  # a taken-over run that finds no session still needs persona
        await saga(persona, publisher, store).start(persona_id="p-1", user_id="user-1", token=TOKEN, session_id="s-2", resume=True)


async def test_a_taken_over_run_whose_holder_stores_the_session_meanwhile_resumes_that_session(
    persona, publisher, store, persona_events, monkeypatch
):
    """The retry finds no session, and the earlier request, still running past its lease, stores it just
    before the retry would: the retry resumes that session instead of failing on the taken id."""
    read_persona = persona.get_persona

    async def holder_stores_the_session_meanwhile(persona_id: str, *, token: str):
        answer = await read_persona(persona_id, token=token)
        await store.create("s-1", "p-1", "user-1")  # the holder's own step 2, between the retry's read and write
        return answer

    monkeypatch.setattr(persona, "get_persona", holder_stores_the_session_meanwhile)

    session = await saga(persona, publisher, store).start(persona_id="p-1", user_id="user-1", token=TOKEN, session_id="s-1", resume=True)

    assert (session.session_id, session.status) == ("s-1", SessionStatus.PENDING)
    assert persona.called("reserve_slot") == [("reserve_slot", "p-1", "s-1", TOKEN)]  # the hold is for that one session
    assert [t for t, _ in persona_events()] == ["SessionStarted"]


async def test_a_fresh_run_that_finds_its_session_id_taken_goes_on_only_with_a_session_of_its_own_persona_and_user(
    persona, publisher, store, persona_events
):
    """Run ids are fresh, so a fresh run meets a stored session only when its own put was retried after DynamoDB
    applied it (tests/test_vc_start_api.py loses that answer); another user's or persona's is still a conflict."""
    await store.create("s-1", "p-1", "user-1")  # the put's first attempt, whose answer was lost
    await store.create("s-2", "p-1", "someone-else")
    await store.create("s-3", "p-2", "user-1")

    session = await saga(persona, publisher, store).start(persona_id="p-1", user_id="user-1", token=TOKEN, session_id="s-1")

    assert (session.session_id, session.status) == ("s-1", SessionStatus.PENDING)
    assert [t for t, _ in persona_events()] == ["SessionStarted"]
    for taken in ("s-2", "s-3"):
        with pytest.raises(SessionConflictError):
            await saga(persona, publisher, store).start(persona_id="p-1", user_id="user-1", token=TOKEN, session_id=taken)
    assert persona.called("reserve_slot") == [("reserve_slot", "p-1", "s-1", TOKEN)]
