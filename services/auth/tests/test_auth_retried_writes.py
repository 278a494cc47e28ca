"""Writes DynamoDB applied but answered with a 500: botocore retries them, and the retry must not fail its
condition against its own first attempt (409 for a new account) or apply twice (a failure counted twice)."""

from __future__ import annotations

import pytest
from auth_service.accounts import Accounts
from auth_service.errors import InvalidCredentials, LoginThrottled
from auth_service.passwords import Passwords
from auth_service.throttle import DAY_SECONDS

THRESHOLD = 3  # conftest POLICY
LOCK_SECONDS = 60
TABLE = "mf-auth"  # conftest TABLE
PASSWORD = "correct horse battery"
WRONG = "wrong password!!"
MALLORY_AT = "198.51.100.66"
# Request bodies to match: the put that creates alice, an address's failure count, its lock, the username's day count.
CREATE_ALICE = '"USER#alice"'
COUNT_FAILURE = "locked_until <= :now) AND NOT contains(failure_ids"
LOCK = "locked_until = :until"
COUNT_DAY = "failures < :cap"
TAKE_BACK = "failures - :one"  # a failure a concurrent lock refused, taken back out of the day


@pytest.fixture
def accounts(store, fast_argon2, throttle, clock):
    return Accounts(store, Passwords(**fast_argon2), throttle, clock=clock)


def fail_login(accounts):
    with pytest.raises(InvalidCredentials):
        accounts.authenticate("alice", WRONG, MALLORY_AT)


def item(dynamodb, sk):
    return dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "USER#alice"}, "sk": {"S": sk}}, ConsistentRead=True).get("Item", {})


def address_record(dynamodb):
    return item(dynamodb, f"FROM#{MALLORY_AT}")


def failure_ids(dynamodb):
    return address_record(dynamodb).get("failure_ids", {}).get("SS", [])


def test_a_registration_whose_answer_was_lost_creates_the_account_without_a_409(client, store, lose_answer):
    lost = lose_answer("PutItem", CREATE_ALICE)
    created = client.post("/v1/users", json={"username": "alice", "password": PASSWORD})
    assert (lost.lost, lost.sent) == (1, 2)  # applied, answered 500, sent again
    assert created.status_code == 201, created.json()
    assert created.json()["user_id"] == store.get("alice").user_id
    assert client.post("/v1/tokens", json={"username": "alice", "password": PASSWORD}).status_code == 200
    # A name someone else holds is still taken.
    assert client.post("/v1/users", json={"username": "ALICE", "password": PASSWORD}).status_code == 409


def test_a_failure_whose_answer_was_lost_counts_once(accounts, dynamodb, clock, lose_answer):
    accounts.register("alice", PASSWORD)
    for attempt in range(1, THRESHOLD):
        lost = lose_answer("UpdateItem", COUNT_FAILURE)
        fail_login(accounts)
        assert (lost.lost, lost.sent) == (1, 2)
        assert address_record(dynamodb)["failures"]["N"] == str(attempt)
    assert "locked_until" not in address_record(dynamodb)
    # The failure that reaches the threshold locks, also when its count's answer was lost.
    lose_answer("UpdateItem", COUNT_FAILURE)
    fail_login(accounts)
    with pytest.raises(LoginThrottled):
        accounts.authenticate("alice", PASSWORD, MALLORY_AT)
    assert item(dynamodb, f"FAILURES#{int(clock()) // DAY_SECONDS}")["failures"]["N"] == str(THRESHOLD)


def test_a_failure_whose_day_count_answer_was_lost_counts_once_for_the_username(accounts, dynamodb, clock, lose_answer):
    accounts.register("alice", PASSWORD)
    lost = lose_answer("UpdateItem", COUNT_DAY)
    fail_login(accounts)
    assert (lost.lost, lost.sent) == (1, 2)
    day = item(dynamodb, f"FAILURES#{int(clock()) // DAY_SECONDS}")
    assert (day["failures"]["N"], len(day["failure_ids"]["SS"])) == ("1", 1)


def test_a_failure_taken_back_out_of_the_day_whose_answer_was_lost_is_taken_back_once(accounts, dynamodb, clock, lose_answer,
                                                                                    before_lock_write):
    accounts.register("alice", PASSWORD)
    for _ in range(THRESHOLD - 1):
        fail_login(accounts)
    before_lock_write(lambda: fail_login(accounts))  # a concurrent failure locks first: this one gets 429
    lost = lose_answer("UpdateItem", TAKE_BACK)
    with pytest.raises(LoginThrottled):
        accounts.authenticate("alice", WRONG, MALLORY_AT)
    assert (lost.lost, lost.sent) == (1, 2)
    day = item(dynamodb, f"FAILURES#{int(clock()) // DAY_SECONDS}")
    assert (day["failures"]["N"], len(day["failure_ids"]["SS"])) == (str(THRESHOLD), THRESHOLD)  # the 401s


def test_the_failure_that_locks_answers_401_when_the_lock_write_answer_was_lost(client, dynamodb, clock, lose_answer):
    at_mallory = {"X-Forwarded-For": MALLORY_AT}
    assert client.post("/v1/users", json={"username": "alice", "password": PASSWORD}).status_code == 201
    for _ in range(THRESHOLD - 1):
        assert client.post("/v1/tokens", json={"username": "alice", "password": WRONG}, headers=at_mallory).status_code == 401
    lost = lose_answer("UpdateItem", LOCK)
    locking = client.post("/v1/tokens", json={"username": "alice", "password": WRONG}, headers=at_mallory)
    assert (lost.lost, lost.sent) == (1, 2)
    assert locking.status_code == 401, locking.json()  # as without a lost answer: 429 comes from then on
    record = address_record(dynamodb)
    assert (float(record["locked_until"]["N"]), record["lock_count"]["N"]) == (clock() + LOCK_SECONDS, "1")  # one lock, not two
    refused = client.post("/v1/tokens", json={"username": "alice", "password": PASSWORD}, headers=at_mallory)
    assert (refused.status_code, refused.headers["Retry-After"]) == (429, str(LOCK_SECONDS))


def test_concurrent_failures_between_a_lost_answer_and_its_retry_count_and_lock_as_usual(accounts, dynamodb, lose_answer):
    """A concurrent failure landing between the first attempt and the retry is counted too, the retry still
    counts once; and a retry that finds the address locked by them meanwhile is refused like any other."""
    accounts.register("alice", PASSWORD)
    lose_answer("UpdateItem", COUNT_FAILURE, meanwhile=lambda: fail_login(accounts))
    fail_login(accounts)
    assert address_record(dynamodb)["failures"]["N"] == "2"
    assert len(failure_ids(dynamodb)) == 2
    assert accounts.authenticate("alice", PASSWORD, MALLORY_AT)  # below the threshold; resets the count
    assert failure_ids(dynamodb) == []  # the ids end with the run of failures: the item does not grow

    def lock_it():
        for _ in range(THRESHOLD - 1):
            fail_login(accounts)  # the last of these reaches the threshold and locks

    lose_answer("UpdateItem", COUNT_FAILURE, meanwhile=lock_it)
    with pytest.raises(LoginThrottled):
        accounts.authenticate("alice", WRONG, MALLORY_AT)
    locked = address_record(dynamodb)
    assert (locked["failures"]["N"], float(locked["locked_until"]["N"]) > 0, failure_ids(dynamodb)) == ("0", True, [])


def test_a_success_whose_answer_was_lost_still_logs_in(accounts, dynamodb, lose_answer):
    accounts.register("alice", PASSWORD)
    fail_login(accounts)
    lost = lose_answer("UpdateItem", "attribute_exists(pk) AND (attribute_not_exists(locked_until)")
    assert accounts.authenticate("alice", PASSWORD, MALLORY_AT).username == "alice"
    assert (lost.lost, lost.sent) == (1, 2)  # the retry sets the same values again
    assert address_record(dynamodb)["failures"]["N"] == "0"
