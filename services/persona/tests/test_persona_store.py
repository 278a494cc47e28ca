"""Slot reservations in DynamoDB: limits, idempotency, expiry, and races between concurrent callers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from persona_service import store as st


def test_reserve_up_to_max_sessions_then_refuses(store):
    persona = store.create("user-a", "Ada", {}, 2)
    store.reserve(persona.persona_id, "s1", "user-a")
    store.reserve(persona.persona_id, "s2", "user-a")
    with pytest.raises(st.NoSlotAvailable):
        store.reserve(persona.persona_id, "s3", "user-a")
    assert store.get(persona.persona_id, "user-a").reserved == 2


def test_reserve_is_idempotent_per_session(store, clock):
    persona = store.create("user-a", "Ada", {}, 1)
    first = store.reserve(persona.persona_id, "s1", "user-a")
    clock.advance(5)
    again = store.reserve(persona.persona_id, "s1", "user-a")
    assert first == again and first.status == st.HELD and first.hold_expires_at == int(clock.now) - 5 + 120
    assert store.get(persona.persona_id, "user-a").reserved == 1


def test_release_is_idempotent_and_frees_the_slot_once(store):
    persona = store.create("user-a", "Ada", {}, 2)
    store.reserve(persona.persona_id, "s1", "user-a")
    store.reserve(persona.persona_id, "s2", "user-a")
    for _ in range(3):
        released = store.release(persona.persona_id, "s1", "persona_unavailable")
        assert released.status == st.RELEASED and released.reason == "persona_unavailable"
    assert store.get(persona.persona_id, "user-a").reserved == 1


def test_release_of_unknown_reservation_blocks_a_late_reserve(store):
    # The compensation may overtake a retried ReserveSlot: the late call must not take a slot.
    persona = store.create("user-a", "Ada", {}, 1)
    assert store.release(persona.persona_id, "s1", "persona_unavailable").status == st.RELEASED
    late = store.reserve(persona.persona_id, "s1", "user-a")
    assert (late.status, late.reason) == (st.RELEASED, "persona_unavailable")  # answered as it is, nothing taken
    assert store.get(persona.persona_id, "user-a").reserved == 0


def test_reserving_again_after_the_hold_expired_answers_it_released(store, clock):
    persona = store.create("user-a", "Ada", {}, 1)
    store.reserve(persona.persona_id, "s1", "user-a")
    clock.advance(121)
    again = store.reserve(persona.persona_id, "s1", "user-a")
    assert (again.status, again.reason) == (st.RELEASED, "reservation_expired")
    assert store.get(persona.persona_id, "user-a").reserved == 0


def test_expired_hold_is_reclaimed_before_counting(store, clock):
    persona = store.create("user-a", "Ada", {}, 1)
    store.reserve(persona.persona_id, "lost", "user-a")
    with pytest.raises(st.NoSlotAvailable):
        store.reserve(persona.persona_id, "s2", "user-a")
    clock.advance(121)
    assert store.reserve(persona.persona_id, "s2", "user-a").status == st.HELD
    lost = store.get_reservation(persona.persona_id, "lost")
    assert (lost.status, lost.reason) == (st.RELEASED, "reservation_expired")
    assert store.get(persona.persona_id, "user-a").reserved == 1


def test_confirmed_slot_is_never_reclaimed(store, clock):
    persona = store.create("user-a", "Ada", {}, 1)
    store.reserve(persona.persona_id, "s1", "user-a")
    assert store.confirm(persona.persona_id, "s1").status == st.CONFIRMED
    clock.advance(10_000)
    with pytest.raises(st.NoSlotAvailable):
        store.reserve(persona.persona_id, "s2", "user-a")


def test_confirm_of_expired_hold_releases_it(store, clock):
    persona = store.create("user-a", "Ada", {}, 1)
    store.reserve(persona.persona_id, "s1", "user-a")
    clock.advance(120)
    result = store.confirm(persona.persona_id, "s1")
    assert (result.status, result.reason) == (st.RELEASED, "reservation_expired")
    assert store.get(persona.persona_id, "user-a").reserved == 0


def test_expired_holds_do_not_block_delete_or_lowering_max_sessions(store, clock):
    # A hold whose compensation was lost must not pin the persona once it has expired.
    persona = store.create("user-a", "Ada", {}, 2)
    store.reserve(persona.persona_id, "lost-1", "user-a")
    store.reserve(persona.persona_id, "lost-2", "user-a")
    with pytest.raises(st.PersonaInUse):
        store.delete(persona.persona_id, "user-a")
    clock.advance(121)
    assert store.update(persona.persona_id, "user-a", max_sessions=1).reserved == 0
    store.delete(persona.persona_id, "user-a")
    with pytest.raises(st.PersonaNotFound):
        store.get(persona.persona_id, "user-a")


def test_reserve_on_another_owners_persona_is_not_found(store):
    persona = store.create("user-a", "Ada", {}, 1)
    with pytest.raises(st.PersonaNotFound):
        store.reserve(persona.persona_id, "s1", "user-b")
    with pytest.raises(st.PersonaNotFound):
        store.release(persona.persona_id, "s1", "x", owner="user-b")


def test_listing_uses_the_owner_index_not_a_scan(store, dynamodb, monkeypatch, clock):
    mine = []
    for i in range(3):
        mine.append(store.create("user-a", f"P{i}", {}, 1).persona_id)
        clock.advance(1)
    store.create("user-b", "Other", {}, 1)

    def no_scan(**kwargs):
        raise AssertionError("Scan in a request path")

    monkeypatch.setattr(dynamodb, "scan", no_scan)
    assert [p.persona_id for p in store.list("user-a")] == mine  # oldest first


def test_concurrent_reserves_never_exceed_max_sessions(store, atomic_moto):
    persona = store.create("user-a", "Ada", {}, 3)

    def attempt(i: int) -> str:
        try:
            store.reserve(persona.persona_id, f"s{i}", "user-a")
            return "held"
        except st.NoSlotAvailable:
            return "full"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(attempt, range(12)))
    assert outcomes.count("held") == 3 and outcomes.count("full") == 9
    assert store.get(persona.persona_id, "user-a").reserved == 3


def test_a_reservation_for_an_id_with_a_trailing_line_break_is_refused(store):
    """Ids are matched whole: ``$`` alone would let "<id>\n" through to DynamoDB as a key of its own."""
    persona = store.create("user-a", "Ada", {}, 2)
    with pytest.raises(st.PersonaNotFound):
        store.reserve(persona.persona_id + "\n", "s1", "user-a")
    with pytest.raises(ValueError, match="session_id"):
        store.reserve(persona.persona_id, "s1\n", "user-a")
    assert store.reserve(persona.persona_id, "s1", "user-a").session_id == "s1"


def test_a_delete_succeeds_when_dynamodb_leaves_released_tombstones_for_their_expiry(store, monkeypatch, caplog):
    persona = store.create("user-a", "Ada", {}, 1)
    store.reserve(persona.persona_id, "s1", "user-a")
    store.release(persona.persona_id, "s1", "done")  # a RELEASED tombstone, deleted with the persona
    monkeypatch.setattr(store._db, "batch_write_item", lambda RequestItems: {"UnprocessedItems": RequestItems})

    store.delete(persona.persona_id, "user-a")

    with pytest.raises(st.PersonaNotFound):
        store.get(persona.persona_id, "user-a")
    assert "released reservations left to expire" in caplog.text
