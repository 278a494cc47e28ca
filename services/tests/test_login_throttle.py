"""auth's login throttling over real HTTP: auth on uvicorn, its table on a moto server, requests as they arrive
behind the edge (X-Forwarded-For as CloudFront and the load balancer write it), the real clock.

The attack from the audit ("auth lockout as DoS"): whoever knows a username sends wrong passwords for it without
end, from one address or many. It must not keep the user out, must not get more guesses tested, and the answers
must not tell whether the username exists. The unit tests in auth/tests show the same with a settable clock.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from auth_service.app import create_app
from auth_service.settings import AuthSettings
from faultproxy import FAST_ARGON2, UvicornThread, settings_for

PASSWORD = "correct horse battery staple"
WRONG = "not the password at all"
THRESHOLD = 3
LOCK_SECONDS = 1
MAX_LOCK_SECONDS = 2
ACCOUNT_THRESHOLD = 6
CLOUDFRONT = "198.51.100.20"  # the edge, as the load balancer saw it
VICTIM_AT = "192.0.2.10"
ATTACKERS = [f"203.0.113.{n}" for n in range(1, 9)]


def _serve(env, lock_seconds, max_lock_seconds):
    """auth as the services stack runs it behind the edge (TRUSTED_PROXY_HOPS=2)."""
    settings = settings_for(AuthSettings, env["auth"], **FAST_ARGON2, log_level="WARNING", trusted_proxy_hops=2,
                            lockout_threshold=THRESHOLD, lockout_seconds=lock_seconds, lockout_max_seconds=max_lock_seconds,
                            lockout_account_threshold=ACCOUNT_THRESHOLD)
    return UvicornThread(create_app(settings), name="auth-throttled")


@pytest.fixture(scope="module")
def auth(env):
    """With locks short enough to wait for."""
    server = _serve(env, LOCK_SECONDS, MAX_LOCK_SECONDS)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def auth_long_locks(env):
    """With locks that outlast a test's whole attack, so that every guess tested is counted against its lock."""
    server = _serve(env, 60, 600)
    yield server
    server.stop()


@pytest.fixture
def http(auth):
    with httpx.Client(base_url=auth.url, timeout=30) as client:
        yield client


@pytest.fixture
def http_long_locks(auth_long_locks):
    with httpx.Client(base_url=auth_long_locks.url, timeout=30) as client:
        yield client


def login(http, username, password, viewer, *, sent=""):
    """A login as it reaches auth through the edge: whatever the viewer sent in X-Forwarded-For (`sent`), the viewer's
    address that CloudFront appends, CloudFront's that the load balancer appends."""
    forwarded = ", ".join(part for part in (sent, viewer, CLOUDFRONT) if part)
    return http.post("/api/auth/v1/tokens", json={"username": username, "password": password}, headers={"X-Forwarded-For": forwarded})


def register(http):
    username = f"v{uuid.uuid4().hex[:10]}"
    assert http.post("/api/auth/v1/users", json={"username": username, "password": PASSWORD}).status_code == 201
    return username


def test_an_attack_from_many_addresses_neither_keeps_the_user_out_nor_gets_more_guesses_tested(http_long_locks):
    """Round after round, every attacking address sends a wrong password naming the victim's address in
    X-Forwarded-For; the victim logs in between the rounds. (One request at a time: moto's server, unlike DynamoDB,
    does not apply concurrent updates of one item atomically.)"""
    http = http_long_locks
    victim = register(http)
    answers = {address: [] for address in ATTACKERS}
    for _ in range(6):  # every address is locked after its second round at the latest: 4 more rounds show the locks hold
        for address in ATTACKERS:
            answers[address].append(login(http, victim, WRONG, address, sent=VICTIM_AT))
        assert login(http, victim, PASSWORD, VICTIM_AT).status_code == 200
    assert {answer.status_code for sent in answers.values() for answer in sent} == {401, 429}
    # Guessing stays throttled: once the username has had ACCOUNT_THRESHOLD failures (the first five addresses' first
    # guesses and the sixth's), each address is locked by its next failure: 13 guesses tested out of 48.
    tested = [sum(answer.status_code == 401 for answer in answers[address]) for address in ATTACKERS]
    assert tested == [2] * (ACCOUNT_THRESHOLD - 1) + [1] * (len(ATTACKERS) - ACCOUNT_THRESHOLD + 1)
    # The right password from a locked address is refused untested.
    assert {login(http, victim, PASSWORD, address).status_code for address in ATTACKERS} == {429}


def test_the_user_who_mistypes_during_the_attack_gets_in_within_the_longest_lock(http):
    victim = register(http)
    for address in ATTACKERS:  # the username's day allowance is used up: every failure locks its address
        for _ in range(THRESHOLD):
            login(http, victim, WRONG, address)
    assert login(http, victim, WRONG, VICTIM_AT).status_code == 401  # her typo
    started = time.monotonic()
    refused = login(http, victim, PASSWORD, VICTIM_AT)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) <= MAX_LOCK_SECONDS
    while (answer := login(http, victim, PASSWORD, VICTIM_AT)).status_code == 429:
        login(http, victim, WRONG, ATTACKERS[0])  # the attack goes on
        time.sleep(0.2)
    assert answer.status_code == 200
    assert time.monotonic() - started <= MAX_LOCK_SECONDS + 1


def test_the_answers_to_the_attack_do_not_tell_whether_the_username_exists(http):
    registered, unknown = register(http), f"n{uuid.uuid4().hex[:10]}"

    def answers(username, address):
        seen = []
        for _ in range(THRESHOLD + 2):
            answer = login(http, username, WRONG, address)
            error = {key: value for key, value in answer.json()["error"].items() if key != "correlation_id"}
            seen.append((answer.status_code, error, answer.headers.get("Retry-After")))
        return seen

    # Both from fresh addresses at once, so the locks' Retry-After are the same too.
    with ThreadPoolExecutor(2) as pool:
        known, nobody = pool.map(answers, (registered, unknown), ("192.0.2.101", "192.0.2.102"))
    assert known == nobody
    assert [status for status, _, _ in known] == [401] * THRESHOLD + [429] * 2
