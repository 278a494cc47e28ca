"""Writes DynamoDB applied but answered with a 500: botocore retries them, and the retry must not fail its
condition against its own first attempt (409 for a new account) or apply twice (a failure counted twice)."""

from __future__ import annotations

import pytest
from auth_service.accounts import Accounts
from auth_service.errors import AccountLocked, InvalidCredentials
from auth_service.passwords import Passwords

THRESHOLD = 3
LOCK_SECONDS = 600  # also conftest API_SETTINGS
TABLE = "mf-auth"  # conftest TABLE
PASSWORD = "correct horse battery"
WRONG = "wrong password!!"
# Request bodies to match: the put that creates alice, the failure count, the lock.
CREATE_ALICE = '"USER#alice"'
COUNT_FAILURE = "if_not_exists(failed_attempts, :zero) + :one"
LOCK = "locked_until = :until"


@pytest.fixture
def accounts(store, fast_argon2, clock):
    return Accounts(store, Passwords(**fast_argon2), lockout_threshold=THRESHOLD, lockout_seconds=LOCK_SECONDS, clock=clock)


def fail_login(accounts):
    with pytest.raises(InvalidCredentials):
        accounts.authenticate("alice", WRONG)


def test_a_registration_whose_answer_was_lost_creates_the_account_without_a_409(client, store, lose_answer):
    lost = lose_answer("PutItem", CREATE_ALICE)
    created = client.post("/v1/users", json={"username": "alice", "password": PASSWORD})
    assert (lost.lost, lost.sent) == (1, 2)  # applied, answered 500, sent again
    assert created.status_code == 201, created.json()
    assert created.json()["user_id"] == store.get("alice").user_id
    assert client.post("/v1/tokens", json={"username": "alice", "password": PASSWORD}).status_code == 200
    # A name someone else holds is still taken.
    assert client.post("/v1/users", json={"username": "ALICE", "password": PASSWORD}).status_code == 409


def test_a_failure_whose_answer_was_lost_counts_once(accounts, store, lose_answer):
    accounts.register("alice", PASSWORD)
    for attempt in range(1, THRESHOLD):
        lost = lose_answer("UpdateItem", COUNT_FAILURE)
        fail_login(accounts)
        assert (lost.lost, lost.sent) == (1, 2)
        assert store.get("alice").failed_attempts == attempt
    assert store.get("alice").locked_until == 0
    # The failure that reaches the threshold locks, also when its count's answer was lost.
    lose_answer("UpdateItem", COUNT_FAILURE)
    fail_login(accounts)
    with pytest.raises(AccountLocked):
        accounts.authenticate("alice", PASSWORD)


def test_the_failure_that_locks_answers_401_when_the_lock_write_answer_was_lost(client, store, clock, lose_answer):
    assert client.post("/v1/users", json={"username": "alice", "password": PASSWORD}).status_code == 201
    for _ in range(THRESHOLD - 1):
        assert client.post("/v1/tokens", json={"username": "alice", "password": WRONG}).status_code == 401
    lost = lose_answer("UpdateItem", LOCK)
    locking = client.post("/v1/tokens", json={"username": "alice", "password": WRONG})
    assert (lost.lost, lost.sent) == (1, 2)
    assert locking.status_code == 401, locking.json()  # as without a lost answer: 423 comes from then on
    assert store.get("alice").locked_until == int(clock()) + LOCK_SECONDS
    refused = client.post("/v1/tokens", json={"username": "alice", "password": PASSWORD})
    assert (refused.status_code, refused.headers["Retry-After"]) == (423, str(LOCK_SECONDS))


def failure_ids(dynamodb):
    item = dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "USER#alice"}, "sk": {"S": "PROFILE"}})["Item"]
    return item.get("failure_ids", {}).get("SS", [])


def test_concurrent_failures_between_a_lost_answer_and_its_retry_count_and_lock_as_usual(accounts, store, dynamodb, lose_answer):
    """A concurrent failure landing between the first attempt and the retry is counted too, the retry still
    counts once; and a retry that finds the account locked by them meanwhile is refused like any other."""
    accounts.register("alice", PASSWORD)
    lose_answer("UpdateItem", COUNT_FAILURE, meanwhile=lambda: fail_login(accounts))
    fail_login(accounts)
    assert store.get("alice").failed_attempts == 2
    assert len(failure_ids(dynamodb)) == 2
    assert accounts.authenticate("alice", PASSWORD)  # below the threshold; resets the count
    assert failure_ids(dynamodb) == []  # the ids end with the run of failures: the item does not grow

    def lock_it():
        for _ in range(THRESHOLD - 1):
            fail_login(accounts)  # the last of these reaches the threshold and locks

    lose_answer("UpdateItem", COUNT_FAILURE, meanwhile=lock_it)
    with pytest.raises(AccountLocked):
        accounts.authenticate("alice", WRONG)
    locked = store.get("alice")
    assert (locked.failed_attempts, locked.locked_until > 0, failure_ids(dynamodb)) == (0, True, [])
