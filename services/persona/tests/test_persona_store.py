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


@pytest.mark.parametrize("reason", ["ThrottlingError", "ProvisionedThroughputExceeded"])
def test_a_transaction_cancelled_for_throttling_is_unavailable_not_a_conflict(store, cancel_transactions, reason):
    # Retrying at once (as after a conflict) only adds load: the caller is told to come back later, after one try.
    persona = store.create("user-a", "Ada", {}, 2)
    store.reserve(persona.persona_id, "s1", "user-a")
    transactions = cancel_transactions("None", reason)
    with pytest.raises(st.StoreUnavailable):
        store.reserve(persona.persona_id, "s2", "user-a")
    with pytest.raises(st.StoreUnavailable):  # not "someone else released it": nothing was released
        store.release(persona.persona_id, "s1", "done")
    assert transactions.sent == 2
    assert store.get(persona.persona_id, "user-a").reserved == 1


def test_a_transaction_conflict_is_still_retried(store, cancel_transactions):
    persona = store.create("user-a", "Ada", {}, 1)
    conflict = cancel_transactions("None", "TransactionConflict", times=1)
    assert store.reserve(persona.persona_id, "s1", "user-a").status == st.HELD
    assert conflict.sent == 2


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
    page = store.list("user-a")
    assert [p.persona_id for p in page.items] == sorted(mine) and page.next_page_token is None  # the index's order


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


# ---- work per call bounded by the live holds, not the history ----------------------------------------------


def _persona_with_history(store, clock, name: str, ended_sessions: int):
    """A persona with one CONFIRMED session, one hold that has expired, and `ended_sessions` sessions that were
    confirmed and released before (RELEASED items, kept a week as tombstones)."""
    persona = store.create("user-a", name, {}, 3)
    if ended_sessions:
        # One session through the store, then copies of its item under other session ids (the store's own calls
        # would take minutes in moto for a history this long).
        store.reserve(persona.persona_id, "ended-0", "user-a")
        store.confirm(persona.persona_id, "ended-0")
        store.release(persona.persona_id, "ended-0", "session_ended")
        ended = store.get_reservation(persona.persona_id, "ended-0")
        assert (ended.status, ended.hold_expires_at) == (st.RELEASED, None)
        key = {"pk": {"S": f"PERSONA#{persona.persona_id}"}, "sk": {"S": "RESERVATION#ended-0"}}
        item = store._db.get_item(TableName=store._table, Key=key)["Item"]
        copies = [{**item, "sk": {"S": f"RESERVATION#ended-{i}"}, "session_id": {"S": f"ended-{i}"}} for i in range(1, ended_sessions)]
        for start in range(0, len(copies), 25):
            store._db.batch_write_item(RequestItems={store._table: [{"PutRequest": {"Item": c}} for c in copies[start:start + 25]]})
    store.reserve(persona.persona_id, "live", "user-a")
    store.confirm(persona.persona_id, "live")
    store.reserve(persona.persona_id, "lost", "user-a")  # its SessionStarted never comes
    clock.advance(121)
    return persona


def _reads_of(dynamodb_reads, call):
    with dynamodb_reads() as reads:
        call()
    return reads


def test_a_reserve_reads_no_more_after_a_long_history(store, clock, dynamodb_reads):
    # A session a minute is some 10,000 items a week: the reserve must not read them (it used to Query them all).
    fresh = _persona_with_history(store, clock, "Fresh", 0)
    busy = _persona_with_history(store, clock, "Busy", 300)

    fresh_reads = _reads_of(dynamodb_reads, lambda: store.reserve(fresh.persona_id, "next", "user-a"))
    busy_reads = _reads_of(dynamodb_reads, lambda: store.reserve(busy.persona_id, "next", "user-a"))

    assert busy_reads.items == fresh_reads.items <= 3  # the persona, and the one expired hold from the index
    assert busy_reads.calls == fresh_reads.calls
    assert ("Query", st.HOLDS_INDEX) in busy_reads.calls and ("Query", None) not in busy_reads.calls
    for persona in (fresh, busy):  # and the expired hold was still given back, the confirmed one kept
        assert store.get_reservation(persona.persona_id, "lost").reason == st.REASON_EXPIRED
        assert store.get_reservation(persona.persona_id, "live").status == st.CONFIRMED
        assert store.get(persona.persona_id, "user-a").reserved == 2


def test_lowering_max_sessions_and_deleting_read_no_more_after_a_long_history(store, clock, dynamodb_reads):
    fresh = _persona_with_history(store, clock, "Fresh", 0)
    busy = _persona_with_history(store, clock, "Busy", 300)

    # The expired hold must not block lowering max_sessions to the one live session.
    shrink = [_reads_of(dynamodb_reads, lambda p=p: store.update(p.persona_id, "user-a", max_sessions=1)) for p in (fresh, busy)]
    assert shrink[0].items == shrink[1].items and shrink[0].calls == shrink[1].calls
    assert ("Query", None) not in shrink[1].calls

    for persona in (fresh, busy):
        store.release(persona.persona_id, "live", "session_ended")
    delete = [_reads_of(dynamodb_reads, lambda p=p: store.delete(p.persona_id, "user-a")) for p in (fresh, busy)]
    assert delete[0].items == delete[1].items <= 2 and delete[0].calls == delete[1].calls
    assert not any(operation in ("Query", "BatchWriteItem") for operation, _ in delete[1].calls)


def test_a_deleted_personas_released_reservations_are_left_to_their_ttl(store, dynamodb, clock, table_name):
    persona = store.create("user-a", "Ada", {}, 1)
    store.reserve(persona.persona_id, "s1", "user-a")
    store.release(persona.persona_id, "s1", "session_ended")
    store.delete(persona.persona_id, "user-a")

    with pytest.raises(st.PersonaNotFound):
        store.get(persona.persona_id, "user-a")
    item = dynamodb.get_item(TableName=table_name, Key={"pk": {"S": f"PERSONA#{persona.persona_id}"}, "sk": {"S": "RESERVATION#s1"}})["Item"]
    # DynamoDB deletes it by the table's TTL attribute, a week after the release, like every tombstone.
    assert int(item["expires_at"]["N"]) == int(clock.now) + st.RELEASED_RETENTION_SECONDS


def test_a_hold_written_before_the_index_existed_is_reclaimed(store, dynamodb, clock, table_name):
    """The index's keys are attributes every HELD reservation already had, so the holds of a deployed table are in it
    (DynamoDB backfills a new index): an expired one written by the previous version is given back too."""
    persona = store.create("user-a", "Ada", {}, 1)
    # Exactly what the version before the index wrote for a hold, with its slot counted on the persona.
    dynamodb.put_item(TableName=table_name, Item={
        "pk": {"S": f"PERSONA#{persona.persona_id}"}, "sk": {"S": "RESERVATION#old"}, "persona_id": {"S": persona.persona_id},
        "session_id": {"S": "old"}, "status": {"S": "HELD"}, "hold_expires_at": {"N": str(int(clock.now) + 120)},
        "created_at": {"S": "2026-01-01T00:00:00.000Z"}})
    dynamodb.update_item(TableName=table_name, Key={"pk": {"S": f"PERSONA#{persona.persona_id}"}, "sk": {"S": "PROFILE"}},
                         UpdateExpression="SET reserved = :one", ExpressionAttributeValues={":one": {"N": "1"}})
    with pytest.raises(st.NoSlotAvailable):
        store.reserve(persona.persona_id, "new", "user-a")
    clock.advance(121)
    assert store.reserve(persona.persona_id, "new", "user-a").status == st.HELD
    assert store.get_reservation(persona.persona_id, "old").reason == st.REASON_EXPIRED


def test_without_the_holds_index_expired_holds_are_still_reclaimed(make_store, table_without_index, clock, caplog):
    """Until a deploy has created the index (DynamoDB backfills it before it answers Queries), reclaiming reads the
    persona's reservations as before, and says so in the log."""
    store = make_store(table_without_index)
    persona = store.create("user-a", "Ada", {}, 1)
    store.reserve(persona.persona_id, "lost", "user-a")
    clock.advance(121)
    assert store.reserve(persona.persona_id, "s2", "user-a").status == st.HELD
    assert store.get_reservation(persona.persona_id, "lost").reason == st.REASON_EXPIRED
    assert "holds index not readable" in caplog.text


@pytest.mark.parametrize(("code", "message", "not_ready"), [
    ("ValidationException", "Cannot read from backfilling global secondary index: holds", True),
    ("ValidationException", "The table does not have the specified index: holds", True),
    ("ResourceNotFoundException", "Requested resource not found", True),
    ("ValidationException", "One or more parameter values were invalid: Condition parameter type does not match schema type", False),
    ("AccessDeniedException", "not authorized to perform: dynamodb:Query on resource: .../index/holds", False),
])
def test_only_an_index_that_cannot_answer_yet_falls_back_to_the_history_read(code, message, not_ready):
    from botocore.exceptions import ClientError
    assert st.index_not_ready(ClientError({"Error": {"Code": code, "Message": message}}, "Query")) is not_ready


# ---- personas per owner -------------------------------------------------------------------------------------


def test_an_owner_cannot_create_more_personas_than_the_cap(make_store):
    store = make_store(max_personas_per_owner=3)
    mine = [store.create("user-a", f"P{i}", {}, 1) for i in range(3)]
    with pytest.raises(st.PersonaLimitReached, match="maximum of 3 personas"):
        store.create("user-a", "one too many", {}, 1)
    assert store.create("user-b", "someone else's", {}, 1)  # per owner

    store.delete(mine[0].persona_id, "user-a")
    store.create("user-a", "room again", {}, 1)
    with pytest.raises(st.PersonaLimitReached):
        store.create("user-a", "one too many", {}, 1)
    assert len(store.list("user-a").items) == 3


def test_concurrent_creates_never_pass_the_cap(make_store, atomic_moto):
    store = make_store(max_personas_per_owner=4)

    def attempt(i: int) -> str:
        try:
            store.create("user-a", f"P{i}", {}, 1)
            return "created"
        except st.PersonaLimitReached:
            return "refused"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(attempt, range(12)))
    assert (outcomes.count("created"), outcomes.count("refused")) == (4, 8)
    assert len(store.list("user-a").items) == 4


def _forget_owner_count(store, owner: str) -> None:
    """The state of an owner whose personas were created before the cap existed: no count item."""
    store._db.delete_item(TableName=store._table, Key={"pk": {"S": f"OWNER#{owner}"}, "sk": {"S": "COUNT"}})


def test_the_cap_counts_personas_created_before_it_existed(make_store):
    store = make_store(max_personas_per_owner=3)
    old = [store.create("user-a", f"Old {i}", {}, 1) for i in range(3)]
    _forget_owner_count(store, "user-a")
    with pytest.raises(st.PersonaLimitReached):
        store.create("user-a", "one too many", {}, 1)

    # Deleting one without a count works, and the count made from the owner index lets one more in, not two.
    _forget_owner_count(store, "user-a")
    store.delete(old[0].persona_id, "user-a")
    store.create("user-a", "room again", {}, 1)
    with pytest.raises(st.PersonaLimitReached):
        store.create("user-a", "one too many", {}, 1)


def test_a_count_above_the_owners_personas_does_not_refuse_them(make_store):
    # E.g. personas deleted by the version before the cap, which did not count down: the index is the truth.
    store = make_store(max_personas_per_owner=2)
    store.create("user-a", "Ada", {}, 1)
    store._db.put_item(TableName=store._table, Item={"pk": {"S": "OWNER#user-a"}, "sk": {"S": "COUNT"}, "personas": {"N": "2"}})
    store.create("user-a", "Bob", {}, 1)
    with pytest.raises(st.PersonaLimitReached):
        store.create("user-a", "one too many", {}, 1)
