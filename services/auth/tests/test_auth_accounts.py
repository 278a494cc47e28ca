"""Registration, login and lockout against a moto DynamoDB table."""

from __future__ import annotations

import pytest
from auth_service.accounts import Accounts
from auth_service.errors import AccountLocked, HashingBusy, InvalidCredentials, UsernameTaken
from auth_service.passwords import HashGate, Passwords

THRESHOLD = 3
LOCK_SECONDS = 600
PASSWORD = "correct horse battery"


class CountingPasswords(Passwords):
    """Counts Argon2 verifications, to prove unknown users cost the same work as known ones."""

    verifications = 0

    def verify(self, password_hash: str, password: str) -> bool:
        self.verifications += 1
        return super().verify(password_hash, password)


@pytest.fixture
def passwords(fast_argon2):
    return CountingPasswords(**fast_argon2)


@pytest.fixture
def accounts(store, passwords, clock):
    return Accounts(store, passwords, lockout_threshold=THRESHOLD, lockout_seconds=LOCK_SECONDS, clock=clock)


def test_register_stores_an_argon2id_hash_not_the_password(accounts, store):
    user = accounts.register("Alice", PASSWORD)
    stored = store.get("alice")
    assert stored.user_id == user.user_id and stored.username == "alice"
    assert stored.password_hash.startswith("$argon2id$") and PASSWORD not in stored.password_hash


def test_usernames_are_case_insensitive(accounts):
    accounts.register("alice", PASSWORD)
    with pytest.raises(UsernameTaken):
        accounts.register("ALICE", "another long password")
    assert accounts.authenticate("AlIcE", PASSWORD).username == "alice"


def test_unknown_user_costs_the_same_work_as_a_wrong_password(accounts, passwords, dynamodb, store):
    """One Argon2 verification and one DynamoDB write either way: timing cannot enumerate usernames."""
    accounts.register("alice", PASSWORD)
    writes = []
    count_write = lambda **kwargs: writes.append(kwargs["model"].name)  # noqa: E731
    dynamodb.meta.events.register("before-call.dynamodb.UpdateItem", count_write)
    try:
        with pytest.raises(InvalidCredentials):
            accounts.authenticate("nobody", PASSWORD)
        assert (passwords.verifications, writes) == (1, ["UpdateItem"])
        with pytest.raises(InvalidCredentials):
            accounts.authenticate("alice", "wrong password!!")
        assert (passwords.verifications, writes) == (2, ["UpdateItem", "UpdateItem"])
    finally:
        dynamodb.meta.events.unregister("before-call.dynamodb.UpdateItem", count_write)
    assert store.get("nobody") is None  # the unknown user's write created nothing


def test_a_full_hashing_line_refuses_unknown_users_and_wrong_passwords_alike_before_any_write(store, dynamodb, clock, fast_argon2):
    gate = HashGate(running=1, waiting=0)
    accounts = Accounts(store, Passwords(**fast_argon2, gate=gate), lockout_threshold=THRESHOLD, lockout_seconds=LOCK_SECONDS, clock=clock)
    accounts.register("alice", PASSWORD)
    writes = []
    count_write = lambda **kwargs: writes.append(kwargs["model"].name)  # noqa: E731
    dynamodb.meta.events.register("before-call.dynamodb.UpdateItem", count_write)
    try:
        with gate.slot():  # the one slot is taken and nobody may wait
            for username, password in (("nobody", PASSWORD), ("alice", "wrong password!!"), ("alice", PASSWORD)):
                with pytest.raises(HashingBusy):
                    accounts.authenticate(username, password)
            with pytest.raises(HashingBusy):
                accounts.register("bob", PASSWORD)
    finally:
        dynamodb.meta.events.unregister("before-call.dynamodb.UpdateItem", count_write)
    assert writes == [] and store.get("alice").failed_attempts == 0 and store.get("bob") is None
    assert accounts.authenticate("alice", PASSWORD).username == "alice"  # the slot is free again


def test_lockout_after_threshold_failures_then_recovery(accounts, clock):
    accounts.register("alice", PASSWORD)
    for _ in range(THRESHOLD):
        with pytest.raises(InvalidCredentials):
            accounts.authenticate("alice", "wrong password!!")
    # Locked: even the right password is refused, with the remaining lock time.
    with pytest.raises(AccountLocked) as locked:
        accounts.authenticate("alice", PASSWORD)
    assert locked.value.retry_after == LOCK_SECONDS
    clock.advance(LOCK_SECONDS - 1)
    with pytest.raises(AccountLocked) as locked:
        accounts.authenticate("alice", PASSWORD)
    assert locked.value.retry_after == 1
    clock.advance(1)
    assert accounts.authenticate("alice", PASSWORD).username == "alice"


def test_no_password_guessing_while_locked(accounts, passwords, clock):
    accounts.register("alice", PASSWORD)
    for _ in range(THRESHOLD):
        with pytest.raises(InvalidCredentials):
            accounts.authenticate("alice", "wrong password!!")
    before = passwords.verifications
    with pytest.raises(AccountLocked):
        accounts.authenticate("alice", "another guess!!!")
    assert passwords.verifications == before
    # After the lock the user has a fresh set of attempts, not one.
    clock.advance(LOCK_SECONDS)
    for _ in range(THRESHOLD - 1):
        with pytest.raises(InvalidCredentials):
            accounts.authenticate("alice", "wrong password!!")
    assert accounts.authenticate("alice", PASSWORD)


def test_success_resets_the_consecutive_failure_count(accounts, store):
    accounts.register("alice", PASSWORD)
    for _ in range(THRESHOLD - 1):
        with pytest.raises(InvalidCredentials):
            accounts.authenticate("alice", "wrong password!!")
    accounts.authenticate("alice", PASSWORD)
    assert store.get("alice").failed_attempts == 0
    for _ in range(THRESHOLD - 1):
        with pytest.raises(InvalidCredentials):
            accounts.authenticate("alice", "wrong password!!")
    assert accounts.authenticate("alice", PASSWORD)


def test_a_lock_set_by_a_concurrent_request_wins_over_a_stale_read(accounts, store, clock):
    """A login that read the user before another request locked it must not succeed or reset the counter."""
    accounts.register("alice", PASSWORD)
    for _ in range(THRESHOLD - 1):
        with pytest.raises(InvalidCredentials):
            accounts.authenticate("alice", "wrong password!!")
    stale = store.get("alice")
    with pytest.raises(InvalidCredentials):
        accounts.authenticate("alice", "wrong password!!")  # this one locks the account
    # The next login reads the pre-lock item (as if it had read just before the lock was written).
    reads = iter([stale])
    real_get = store.get
    store.get = lambda name: next(reads, None) or real_get(name)
    with pytest.raises(AccountLocked):
        accounts.authenticate("alice", PASSWORD)
    assert real_get("alice").locked_until == int(clock()) + LOCK_SECONDS


def test_a_correct_guess_read_with_no_failures_is_refused_once_a_concurrent_burst_has_locked_the_account(accounts, store, clock):
    """Locking resets the count to 0: a login that read the account clean (e.g. just after a lock expired) while
    wrong guesses sent with it lock it again must be refused, or a burst tests a password per request in flight."""
    accounts.register("alice", PASSWORD)
    clean = store.get("alice")
    assert clean.failed_attempts == 0 and clean.locked_until == 0
    for _ in range(THRESHOLD):
        with pytest.raises(InvalidCredentials):
            accounts.authenticate("alice", "wrong password!!")  # the burst: the last one locks, the count back to 0
    locked = store.get("alice")
    assert locked.failed_attempts == 0 and locked.locked_until > clock()
    reads = iter([clean])
    real_get = store.get
    store.get = lambda name: next(reads, None) or real_get(name)
    with pytest.raises(AccountLocked):
        accounts.authenticate("alice", PASSWORD)


def test_hash_is_upgraded_when_costs_change(store, clock):
    weak = Accounts(store, Passwords(time_cost=1, memory_kib=1024), lockout_threshold=3, lockout_seconds=60, clock=clock)
    weak.register("alice", PASSWORD)
    stronger = Accounts(store, Passwords(time_cost=2, memory_kib=2048), lockout_threshold=3, lockout_seconds=60, clock=clock)
    stronger.authenticate("alice", PASSWORD)
    assert "m=2048,t=2" in store.get("alice").password_hash
    assert stronger.authenticate("alice", PASSWORD)


def test_a_hash_upgrade_that_finds_hashing_busy_is_skipped_and_the_login_succeeds(store, clock):
    Accounts(store, Passwords(time_cost=1, memory_kib=1024), lockout_threshold=3, lockout_seconds=60, clock=clock).register("alice", PASSWORD)

    class BusyHashing(Passwords):
        def hash(self, password: str) -> str:
            raise HashingBusy()

    stronger = Accounts(store, BusyHashing(time_cost=2, memory_kib=2048), lockout_threshold=3, lockout_seconds=60, clock=clock)
    assert stronger.authenticate("alice", PASSWORD).username == "alice"
    assert "m=1024,t=1" in store.get("alice").password_hash  # still the old costs: a later login upgrades them
