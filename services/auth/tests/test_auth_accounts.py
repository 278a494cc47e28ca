"""Registration, login and login throttling against a moto DynamoDB table."""

from __future__ import annotations

import pytest
from auth_service.accounts import Accounts
from auth_service.errors import HashingBusy, InvalidCredentials, LoginThrottled, UsernameTaken
from auth_service.passwords import HashGate, Passwords
from auth_service.throttle import DAY_SECONDS, LoginThrottle, ThrottlePolicy

THRESHOLD = 3  # conftest POLICY
LOCK_SECONDS = 60
MAX_LOCK_SECONDS = 600
ACCOUNT_THRESHOLD = 10
TABLE = "mf-auth"  # conftest TABLE
PASSWORD = "correct horse battery"
WRONG = "wrong password!!"
ALICE_AT = "192.0.2.10"  # where the user logs in from
MALLORY_AT = "198.51.100.66"  # where an attacker who knows her username sends from
BOTNET = [f"203.0.113.{n}" for n in range(1, 31)]


class CountingPasswords(Passwords):
    """Counts Argon2 verifications: each one is a password guess tested."""

    verifications = 0

    def verify(self, password_hash: str, password: str) -> bool:
        self.verifications += 1
        return super().verify(password_hash, password)


@pytest.fixture
def passwords(fast_argon2):
    return CountingPasswords(**fast_argon2)


@pytest.fixture
def make_accounts(store, dynamodb, passwords, clock, policy):
    """make_accounts(**policy changes) -> Accounts on the test table with the tests' policy (conftest POLICY)."""

    def make(**changes) -> Accounts:
        throttle = LoginThrottle(dynamodb, TABLE, ThrottlePolicy(**{**policy.__dict__, **changes}))
        return Accounts(store, passwords, throttle, clock=clock)

    return make


@pytest.fixture
def accounts(store, passwords, throttle, clock):
    return Accounts(store, passwords, throttle, clock=clock)


def outcome(accounts, username, password, address):
    """What a login got: "ok", "401", or "429 <Retry-After>"."""
    try:
        accounts.authenticate(username, password, address)
        return "ok"
    except InvalidCredentials:
        return "401"
    except LoginThrottled as throttled:
        return f"429 {throttled.retry_after}"


def address_record(dynamodb, username, address):
    key = {"pk": {"S": f"USER#{username}"}, "sk": {"S": f"FROM#{address}"}}
    return dynamodb.get_item(TableName=TABLE, Key=key, ConsistentRead=True).get("Item")


def test_register_stores_an_argon2id_hash_not_the_password(accounts, store):
    user = accounts.register("Alice", PASSWORD)
    stored = store.get("alice")
    assert stored.user_id == user.user_id and stored.username == "alice"
    assert stored.password_hash.startswith("$argon2id$") and PASSWORD not in stored.password_hash


def test_usernames_are_case_insensitive(accounts):
    accounts.register("alice", PASSWORD)
    with pytest.raises(UsernameTaken):
        accounts.register("ALICE", "another long password")
    assert accounts.authenticate("AlIcE", PASSWORD, ALICE_AT).username == "alice"


def test_an_unknown_username_takes_the_same_path_as_a_wrong_password(accounts, passwords, dynamodb, store, clock):
    """One Argon2 verification and the same DynamoDB calls, in the same order, on the same kinds of items, for the
    login that fails and the one that locks: neither the work nor its timing tells which usernames exist."""
    accounts.register("alice", PASSWORD)
    calls = []

    def record(params, model, **_):
        calls.append((model.name, params["Key"]["sk"]["S"].split("#")[0] if "Key" in params else None))

    dynamodb.meta.events.register("before-parameter-build.dynamodb", record)
    try:
        paths = {}
        for name in ("alice", "nobody"):
            calls.clear()
            before = passwords.verifications
            answers = [outcome(accounts, name, WRONG, MALLORY_AT) for _ in range(THRESHOLD + 1)]
            paths[name] = (answers, passwords.verifications - before, list(calls))
    finally:
        dynamodb.meta.events.unregister("before-parameter-build.dynamodb", record)
    assert paths["alice"] == paths["nobody"]
    answers, verifications, dynamodb_calls = paths["nobody"]
    assert answers == ["401"] * THRESHOLD + [f"429 {LOCK_SECONDS}"] and verifications == THRESHOLD
    assert dynamodb_calls[:5] == [("GetItem", "FROM"), ("GetItem", "PROFILE"), ("UpdateItem", "FROM"),
                                  ("UpdateItem", "FAILURES"), ("GetItem", "FROM")]  # the next attempt's read
    assert store.get("nobody") is None  # the throttle's items are not a user


def test_a_full_hashing_line_refuses_unknown_users_and_wrong_passwords_alike_before_any_write(store, dynamodb, clock, fast_argon2, throttle):
    gate = HashGate(running=1, waiting=0)
    accounts = Accounts(store, Passwords(**fast_argon2, gate=gate), throttle, clock=clock)
    accounts.register("alice", PASSWORD)
    writes = []
    count_write = lambda **kwargs: writes.append(kwargs["model"].name)  # noqa: E731
    dynamodb.meta.events.register("before-call.dynamodb.UpdateItem", count_write)
    try:
        with gate.slot():  # the one slot is taken and nobody may wait
            for username, password in (("nobody", PASSWORD), ("alice", WRONG), ("alice", PASSWORD)):
                with pytest.raises(HashingBusy):
                    accounts.authenticate(username, password, MALLORY_AT)
            with pytest.raises(HashingBusy):
                accounts.register("bob", PASSWORD)
    finally:
        dynamodb.meta.events.unregister("before-call.dynamodb.UpdateItem", count_write)
    assert writes == [] and address_record(dynamodb, "alice", MALLORY_AT) is None and store.get("bob") is None
    assert accounts.authenticate("alice", PASSWORD, MALLORY_AT).username == "alice"  # the slot is free again


def test_an_address_is_locked_out_for_exponentially_longer_up_to_the_longest_lock(make_accounts, clock):
    accounts = make_accounts(account_threshold=100)  # one address only: the guard stays off
    accounts.register("alice", PASSWORD)
    for lock in (60, 120, 240, 480, 600, 600):
        assert [outcome(accounts, "alice", WRONG, MALLORY_AT) for _ in range(THRESHOLD)] == ["401"] * THRESHOLD
        # Locked: even the right password is refused, with the remaining lock time.
        assert outcome(accounts, "alice", PASSWORD, MALLORY_AT) == f"429 {lock}"
        clock.advance(lock - 1)
        assert outcome(accounts, "alice", PASSWORD, MALLORY_AT) == "429 1"
        clock.advance(1)
    assert outcome(accounts, "alice", PASSWORD, MALLORY_AT) == "ok"


def test_no_password_is_checked_while_the_address_is_locked(accounts, passwords, clock):
    accounts.register("alice", PASSWORD)
    for _ in range(THRESHOLD):
        assert outcome(accounts, "alice", WRONG, MALLORY_AT) == "401"
    before = passwords.verifications
    assert [outcome(accounts, "alice", guess, MALLORY_AT) for guess in ("another guess!!!", PASSWORD)] == [f"429 {LOCK_SECONDS}"] * 2
    assert passwords.verifications == before
    # After the lock the address has a fresh set of attempts, not one.
    clock.advance(LOCK_SECONDS)
    assert [outcome(accounts, "alice", WRONG, MALLORY_AT) for _ in range(THRESHOLD - 1)] == ["401"] * (THRESHOLD - 1)
    assert outcome(accounts, "alice", PASSWORD, MALLORY_AT) == "ok"


def test_a_success_from_the_address_forgets_its_failures_and_locks(accounts, clock, dynamodb):
    accounts.register("alice", PASSWORD)
    for _ in range(THRESHOLD):
        outcome(accounts, "alice", WRONG, ALICE_AT)
    clock.advance(LOCK_SECONDS)
    for _ in range(THRESHOLD - 1):
        assert outcome(accounts, "alice", WRONG, ALICE_AT) == "401"
    assert outcome(accounts, "alice", PASSWORD, ALICE_AT) == "ok"
    record = address_record(dynamodb, "alice", ALICE_AT)
    assert (record["failures"]["N"], record["lock_count"]["N"], "locked_until" in record) == ("0", "0", False)
    # The next lock is a first lock again, not a second one.
    assert [outcome(accounts, "alice", WRONG, ALICE_AT) for _ in range(THRESHOLD + 1)] == ["401"] * THRESHOLD + [f"429 {LOCK_SECONDS}"]


def test_an_attacker_who_names_the_user_locks_out_only_his_own_address(accounts, passwords):
    """The audit's attack: anyone who knows a username sends wrong passwords for it without end. It costs the
    user nothing: she logs in at once from her own address."""
    accounts.register("alice", PASSWORD)
    answers = [outcome(accounts, "alice", WRONG, MALLORY_AT) for _ in range(50)]
    assert answers == ["401"] * THRESHOLD + [f"429 {LOCK_SECONDS}"] * (50 - THRESHOLD)
    assert passwords.verifications == THRESHOLD  # guessing is throttled: 47 of the 50 guesses were never tested
    assert outcome(accounts, "alice", PASSWORD, ALICE_AT) == "ok"


def test_under_attack_from_many_addresses_each_gets_one_guess_per_lock_and_the_user_still_logs_in_at_once(accounts, passwords, clock):
    accounts.register("alice", PASSWORD)
    botnet = BOTNET[:12]  # 3 to use up the day allowance, 9 to show what every further address gets
    for attacker in botnet:
        for _ in range(THRESHOLD):
            outcome(accounts, "alice", WRONG, attacker)
    # Three addresses use up the username's day allowance (3 x 3 = 9, the tenth failure turns the guard on); from
    # then on each address is locked by its first failure.
    assert passwords.verifications == 3 * THRESHOLD + (len(botnet) - 3)
    clock.advance(LOCK_SECONDS)
    before = passwords.verifications
    assert {outcome(accounts, "alice", WRONG, attacker) for attacker in botnet[3:]} == {"401"}
    assert {outcome(accounts, "alice", WRONG, attacker) for attacker in botnet[3:]} == {f"429 {2 * LOCK_SECONDS}"}
    assert passwords.verifications - before == len(botnet) - 3  # one guess per address per lock
    # The user, at an address that has not failed, is not refused.
    assert outcome(accounts, "alice", PASSWORD, ALICE_AT) == "ok"


def test_under_attack_the_user_who_mistypes_waits_at_most_the_longest_lock_after_her_last_failure(accounts, clock):
    accounts.register("alice", PASSWORD)
    botnet = BOTNET[:12]
    for attacker in botnet:  # the tenth failure turns the guard on: from then on every failure locks its address
        outcome(accounts, "alice", WRONG, attacker)
    waits = []
    for _ in range(6):  # she keeps getting it wrong, each time as soon as she may try again
        assert outcome(accounts, "alice", WRONG, ALICE_AT) == "401"
        for attacker in botnet:  # the attack goes on meanwhile
            outcome(accounts, "alice", WRONG, attacker)
        refused = outcome(accounts, "alice", PASSWORD, ALICE_AT)
        waits.append(int(refused.removeprefix("429 ")))
        clock.advance(waits[-1])
    # Her locks double up to LOCKOUT_MAX_SECONDS and stay there (the fifth lock would be 960 s uncapped).
    assert waits == [60, 120, 240, 480, 600, 600]
    assert outcome(accounts, "alice", PASSWORD, ALICE_AT) == "ok"


def test_the_guard_ends_with_the_utc_day(accounts, clock):
    accounts.register("alice", PASSWORD)
    for attacker in BOTNET[:4]:
        for _ in range(THRESHOLD):
            outcome(accounts, "alice", WRONG, attacker)
    assert outcome(accounts, "alice", WRONG, ALICE_AT) == "401"
    assert outcome(accounts, "alice", PASSWORD, ALICE_AT) == f"429 {LOCK_SECONDS}"  # one failure locked her address
    clock.advance(DAY_SECONDS)
    assert [outcome(accounts, "alice", WRONG, BOTNET[-1]) for _ in range(THRESHOLD)] == ["401"] * THRESHOLD
    assert outcome(accounts, "alice", PASSWORD, BOTNET[-2]) == "ok"


def test_unknown_and_registered_usernames_get_the_same_answers_to_the_same_attack(accounts, clock):
    """Locks, their lengths and the guard behave alike whether or not the username exists."""
    accounts.register("alice", PASSWORD)
    start = clock.now

    def attack(username):
        clock.now = start
        answers = []
        for step in range(40):
            address = MALLORY_AT if step % 3 else BOTNET[step % len(BOTNET)]
            answers.append(outcome(accounts, username, WRONG, address))
            clock.advance(17)
        return answers

    alice, nobody = attack("alice"), attack("nobody")
    assert alice == nobody
    assert "401" in alice and any(answer.startswith("429 ") for answer in alice)


@pytest.fixture
def stale_read(throttle):
    """stale_read(): the next login reads its address as not locked, as if it had read before a concurrent lock
    was written (its later reads, e.g. for the Retry-After of a lock it ran into, see the table as it is)."""
    armed = []
    real_read = throttle.locked_until
    throttle.locked_until = lambda *args: armed.pop() if armed else real_read(*args)
    return lambda: armed.append(0)


def test_a_lock_set_by_a_concurrent_request_wins_over_a_stale_read(accounts, throttle, stale_read, clock, dynamodb):
    """A login that read the address unlocked before another request locked it must not succeed or reset the count."""
    accounts.register("alice", PASSWORD)
    for _ in range(THRESHOLD):
        outcome(accounts, "alice", WRONG, MALLORY_AT)  # the last one locks the address
    stale_read()
    assert outcome(accounts, "alice", PASSWORD, MALLORY_AT) == f"429 {LOCK_SECONDS}"
    assert float(address_record(dynamodb, "alice", MALLORY_AT)["locked_until"]["N"]) == clock() + LOCK_SECONDS


def test_a_burst_that_read_before_any_lock_gets_no_more_guesses_than_the_threshold(accounts, stale_read, passwords):
    """Every request of a burst reads the address unlocked (they were all in flight before the lock was written): the
    conditional writes still refuse all but `threshold` of them, and the right password among them."""
    accounts.register("alice", PASSWORD)
    answers = []
    for guess in [WRONG] * 10 + [PASSWORD]:
        stale_read()
        answers.append(outcome(accounts, "alice", guess, MALLORY_AT))
    assert answers == ["401"] * THRESHOLD + [f"429 {LOCK_SECONDS}"] * 8


def day_count(dynamodb, clock):
    """The username's failures today, as the guard reads them."""
    key = {"pk": {"S": "USER#alice"}, "sk": {"S": f"FAILURES#{int(clock()) // DAY_SECONDS}"}}
    item = dynamodb.get_item(TableName=TABLE, Key=key, ConsistentRead=True).get("Item")
    return int(item["failures"]["N"]) if item else 0


def test_logins_a_concurrent_lock_refused_are_no_failures_for_the_guard(accounts, stale_read, dynamodb, clock):
    """A burst from one address whose requests all read it unlocked: all but `threshold` of them run into the lock the
    others set and get its 429, like any login the lock refuses, and do not count towards the username's day either.
    So a burst from one address does not turn the guard on: the user's own mistypes still get `threshold` attempts."""
    accounts.register("alice", PASSWORD)
    burst = ACCOUNT_THRESHOLD + 2
    answers = []
    for _ in range(burst):
        stale_read()
        answers.append(outcome(accounts, "alice", WRONG, MALLORY_AT))
    assert answers == ["401"] * THRESHOLD + [f"429 {LOCK_SECONDS}"] * (burst - THRESHOLD)
    assert day_count(dynamodb, clock) == THRESHOLD
    assert [outcome(accounts, "alice", WRONG, ALICE_AT) for _ in range(THRESHOLD - 1)] == ["401"] * (THRESHOLD - 1)
    assert outcome(accounts, "alice", PASSWORD, ALICE_AT) == "ok"


def test_a_failure_that_reaches_the_threshold_after_a_concurrent_one_locked_is_no_failure_for_the_guard(accounts, dynamodb, clock,
                                                                                                      before_lock_write):
    """Two failures from one address both reach the threshold; the other one writes the lock first. This one's lock
    write then fails, and it gets that lock's 429 (its password unanswered): it is taken back out of the username's
    day, which counts only the failures that were answered 401."""
    accounts.register("alice", PASSWORD)
    for _ in range(THRESHOLD - 1):
        assert outcome(accounts, "alice", WRONG, MALLORY_AT) == "401"
    concurrent = before_lock_write(lambda: outcome(accounts, "alice", WRONG, MALLORY_AT))
    late = outcome(accounts, "alice", WRONG, MALLORY_AT)
    assert (concurrent, late) == (["401"], f"429 {LOCK_SECONDS}")
    assert day_count(dynamodb, clock) == THRESHOLD  # the 401s: not the failure the lock refused


def test_hash_is_upgraded_when_costs_change(store, throttle, clock):
    weak = Accounts(store, Passwords(time_cost=1, memory_kib=1024), throttle, clock=clock)
    weak.register("alice", PASSWORD)
    stronger = Accounts(store, Passwords(time_cost=2, memory_kib=2048), throttle, clock=clock)
    stronger.authenticate("alice", PASSWORD, ALICE_AT)
    assert "m=2048,t=2" in store.get("alice").password_hash
    assert stronger.authenticate("alice", PASSWORD, ALICE_AT)


def test_a_hash_upgrade_that_finds_hashing_busy_is_skipped_and_the_login_succeeds(store, throttle, clock):
    Accounts(store, Passwords(time_cost=1, memory_kib=1024), throttle, clock=clock).register("alice", PASSWORD)

    class BusyHashing(Passwords):
        def hash(self, password: str) -> str:
            raise HashingBusy()

    stronger = Accounts(store, BusyHashing(time_cost=2, memory_kib=2048), throttle, clock=clock)
    assert stronger.authenticate("alice", PASSWORD, ALICE_AT).username == "alice"
    assert "m=1024,t=1" in store.get("alice").password_hash  # still the old costs: a later login upgrades them
