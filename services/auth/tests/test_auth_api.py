"""The auth HTTP API end to end in-process: moto behind it, a settable clock for lockout and expiry."""

from __future__ import annotations

import io

import boto3
import jwt
import pytest
from auth_service.app import AuthClients, create_app
from auth_service.settings import AuthSettings
from botocore.config import Config
from fastapi.testclient import TestClient
from servicekit.logging import configure_logging

PASSWORD = "correct horse battery"
WRONG = "wrong password!!"
THRESHOLD = 3  # conftest POLICY
LOCK_SECONDS = 60
MAX_LOCK_SECONDS = 600
ALICE_AT = "192.0.2.10"
MALLORY_AT = "198.51.100.66"


def register(client, username="alice", password=PASSWORD, prefix=""):
    return client.post(f"{prefix}/v1/users", json={"username": username, "password": password})


def login(client, username="alice", password=PASSWORD, address=ALICE_AT):
    # The app trusts one proxy (conftest API_SETTINGS), as behind the load balancer: the last entry is the caller.
    return client.post("/v1/tokens", json={"username": username, "password": password}, headers={"X-Forwarded-For": address})


def error_of(resp):
    body = resp.json()
    assert body["error"]["correlation_id"] == resp.headers["X-Correlation-Id"]
    return body["error"]


def test_register_returns_the_new_user_under_both_paths(client):
    resp = register(client, "Alice")
    assert resp.status_code == 201
    assert resp.json()["username"] == "alice" and resp.json()["user_id"]
    # The ALB forwards /api/auth/... unchanged; the app answers there too.
    assert register(client, "bob", prefix="/api/auth").status_code == 201


def test_duplicate_username_in_any_case_is_409(client):
    register(client, "alice")
    resp = register(client, "ALICE", "another long password")
    assert resp.status_code == 409
    assert error_of(resp)["code"] == "username_taken"


@pytest.mark.parametrize(
    ("username", "password", "field"),
    [
        ("alice", "short pass!", "password"),  # 11 characters
        ("alice", "x" * 129, "password"),
        ("al", PASSWORD, "username"),
        ("alice smith", PASSWORD, "username"),
    ],
)
def test_weak_password_or_bad_username_is_422_without_echoing_input(client, username, password, field):
    resp = register(client, username, password)
    assert resp.status_code == 422
    err = error_of(resp)
    assert err["code"] == "validation_error" and field in err["message"]
    assert password not in resp.text


def test_login_issues_a_bearer_token_with_the_spec_claims(client, clock):
    user_id = register(client).json()["user_id"]
    resp = login(client, "ALICE")
    assert resp.status_code == 200
    body = resp.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["iss"] == "mf-auth" and claims["aud"] == "mf-services"
    assert claims["sub"] == user_id and claims["username"] == "alice"
    assert claims["iat"] == int(clock()) and claims["exp"] == claims["iat"] + 900 and claims["jti"]


def test_wrong_password_and_unknown_user_get_the_same_401(client):
    register(client)
    wrong, unknown = login(client, password=WRONG), login(client, username="mallory")
    assert wrong.status_code == unknown.status_code == 401
    assert error_of(wrong)["code"] == error_of(unknown)["code"] == "invalid_credentials"
    assert error_of(wrong)["message"] == error_of(unknown)["message"]


def test_a_locked_address_gets_429_with_retry_after_then_recovers_after_the_lock(client, clock):
    register(client)
    for _ in range(THRESHOLD):
        assert login(client, password=WRONG).status_code == 401
    locked = login(client)  # even the right password
    assert locked.status_code == 429
    assert error_of(locked)["code"] == "too_many_failed_logins"
    assert locked.headers["Retry-After"] == str(LOCK_SECONDS) and error_of(locked)["details"] == {"retry_after_seconds": LOCK_SECONDS}
    clock.advance(LOCK_SECONDS - 10)
    assert login(client).headers["Retry-After"] == "10"
    clock.advance(10)
    assert login(client).status_code == 200


def test_an_attacker_who_sends_wrong_passwords_for_a_user_without_end_does_not_lock_her_out(client, clock):
    """The audit's "lockout as DoS": wrong passwords for alice from one address, hour after hour. That address is
    locked out, for ever longer up to the longest lock, and gets its guesses tested only between locks; alice, from
    her own address, logs in at once throughout."""
    register(client)
    tested = 0
    for _ in range(12):  # 12 rounds of 10 wrong passwords, 5 minutes apart: an hour
        answers = [login(client, password=WRONG, address=MALLORY_AT) for _ in range(10)]
        tested += sum(a.status_code == 401 for a in answers)
        assert {a.status_code for a in answers} <= {401, 429}
        assert all(int(a.headers["Retry-After"]) <= MAX_LOCK_SECONDS for a in answers if a.status_code == 429)
        assert login(client).status_code == 200
        clock.advance(300)
    # 120 wrong passwords sent, few tested: at most 3 between two locks (1 once alice's day allowance of 10 failures
    # is used up), and the locks grew from 60 s to 600 s.
    assert tested <= 3 * 6, tested


def test_an_attacker_cannot_pose_as_the_users_address_by_sending_x_forwarded_for(client):
    """Only the entry the trusted proxy appended counts; what the caller wrote to its left is ignored."""
    register(client)
    for _ in range(THRESHOLD + 2):
        login(client, password=WRONG, address=f"{ALICE_AT}, {MALLORY_AT}")  # the ALB appended MALLORY_AT
    assert login(client, address=f"{ALICE_AT}, {MALLORY_AT}").status_code == 429
    assert login(client).status_code == 200


def test_an_ipv6_attacker_cannot_escape_the_lock_by_moving_within_his_slash_64(client):
    """One IPv6 subscriber gets a /64 or more: the lock covers the /64, a neighbouring /64 is somebody else."""
    register(client)
    answers = [login(client, password=WRONG, address=f"2001:db8:1:2::{n:x}").status_code for n in range(1, THRESHOLD + 3)]
    assert answers == [401] * THRESHOLD + [429] * 2
    assert login(client, address="2001:db8:1:2:ffff:ffff:ffff:ffff").status_code == 429
    assert login(client, address="2001:db8:1:3::1").status_code == 200


def test_known_and_unknown_usernames_get_the_same_answers_while_an_address_is_throttled(client):
    """Statuses, error bodies and Retry-After alike: the answers do not tell whether a username is registered."""
    register(client)

    def attack(username):
        answers = [login(client, username, WRONG, MALLORY_AT) for _ in range(THRESHOLD + 2)]
        return [(a.status_code, {k: v for k, v in a.json()["error"].items() if k != "correlation_id"}, a.headers.get("Retry-After"))
                for a in answers]

    alice = attack("alice")
    assert alice == attack("mallory")
    assert [status for status, _, _ in alice] == [401] * THRESHOLD + [429] * 2


def test_a_first_lock_longer_than_the_longest_stops_the_service_with_a_clear_error(monkeypatch):
    monkeypatch.setenv("LOCKOUT_SECONDS", "1200")
    monkeypatch.setenv("LOCKOUT_MAX_SECONDS", "900")
    with pytest.raises(ValueError, match="LOCKOUT_SECONDS=1200 is invalid: the first lock cannot be longer than LOCKOUT_MAX_SECONDS=900"):
        AuthSettings(table_name="mf-auth")


def test_jwks_publishes_current_and_previous_keys_and_verifies_issued_tokens(client):
    register(client)
    token = login(client).json()["access_token"]
    resp = client.get("/.well-known/jwks.json")
    assert resp.status_code == 200 and "max-age=300" in resp.headers["Cache-Control"]
    keys = resp.json()["keys"]
    assert [k["kid"] for k in keys] == ["key-2", "key-1"]  # current, then the rotated-out key
    assert all(k["kty"] == "RSA" and k["use"] == "sig" and k["alg"] == "RS256" for k in keys)
    kid = jwt.get_unverified_header(token)["kid"]
    assert kid == "key-2"
    jwk = next(k for k in keys if k["kid"] == kid)
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["RS256"], audience="mf-services", issuer="mf-auth",
                        options={"verify_exp": False, "verify_iat": False})
    assert claims["username"] == "alice"
    assert client.get("/api/auth/.well-known/jwks.json").json() == resp.json()


def test_verify_reports_active_tokens_and_rejects_tampered_or_expired_ones(client, clock):
    register(client)
    token = login(client).json()["access_token"]
    resp = client.post("/v1/tokens/verify", json={"token": token})
    assert resp.status_code == 200
    assert resp.json()["active"] is True and resp.json()["claims"]["username"] == "alice"
    header, payload, signature = token.split(".")
    forged = jwt.utils.base64url_encode(b'{"sub":"admin"}').decode()
    assert client.post("/v1/tokens/verify", json={"token": f"{header}.{forged}.{signature}"}).json() == {"active": False}
    clock.advance(900)
    assert client.post("/v1/tokens/verify", json={"token": token}).json() == {"active": False}


def test_malformed_json_is_422_json_error(client):
    resp = client.post("/v1/users", content=b'{"username": "alice", ', headers={"Content-Type": "application/json"})
    assert resp.status_code == 422
    assert error_of(resp)["code"] == "validation_error"


def test_unknown_route_is_404_json_error(client):
    resp = client.get("/v1/nothing-here")
    assert resp.status_code == 404
    assert error_of(resp)["code"] == "not_found"


def test_ready_when_the_table_is_reachable(client):
    resp = client.get("/api/auth/health/ready")
    assert resp.status_code == 200
    assert resp.json()["checks"] == {"dynamodb": "ok"}


def test_not_ready_when_the_table_is_missing(make_client):
    resp = make_client(table_name="mf-auth-missing").get("/health/ready")
    assert resp.status_code == 503
    assert resp.json()["error"]["details"]["checks"]["dynamodb"] == "failing"
    assert "ResourceNotFoundException" not in resp.text  # the reason is logged, not answered


def test_still_ready_but_token_routes_answer_503_while_the_signing_key_secret_is_missing(make_client):
    # Every task lacks the key alike (e.g. before it is first stored): readiness stays up so ECS
    # does not roll the deployment back; the routes that need the key say what is wrong.
    client = make_client(jwt_signing_secret_id="mf/auth/missing")
    assert client.get("/health/ready").status_code == 200
    register(client)
    resp = login(client)
    assert resp.status_code == 503 and error_of(resp)["code"] == "signing_key_unavailable"
    resp = client.get("/.well-known/jwks.json")
    assert resp.status_code == 503 and error_of(resp)["code"] == "signing_key_unavailable"
    assert "mf/auth/missing" not in resp.text and resp.headers["Retry-After"]  # the secret's name is logged only


def test_unreachable_table_answers_503_on_register_and_login(secrets, clock, fast_argon2):
    dead = boto3.client(
        "dynamodb",
        endpoint_url="http://127.0.0.1:1",  # nothing listens there
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}, connect_timeout=0.5),
    )
    settings = AuthSettings(
        table_name="mf-auth", jwt_signing_secret_id="mf/auth/jwt-signing-key", **{f"argon2_{k}": v for k, v in fast_argon2.items()}
    )
    app = create_app(settings, clients=AuthClients(dynamodb=dead, secretsmanager=secrets), clock=clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        for resp in (register(client), login(client)):
            assert resp.status_code == 503, resp.text
            assert error_of(resp)["code"] == "storage_unavailable"
            assert resp.headers["Retry-After"]


def test_openapi_documents_every_route_with_its_error_responses(client):
    paths = client.get("/openapi.json").json()["paths"]
    expected = {
        ("/v1/users", "post"): {"201", "409", "422"},
        ("/v1/tokens", "post"): {"200", "401", "422", "429"},
        ("/v1/tokens/verify", "post"): {"200", "422"},
        ("/.well-known/jwks.json", "get"): {"200"},
    }
    for (path, method), statuses in expected.items():
        responses = paths[path][method]["responses"]
        assert statuses <= set(responses), (path, sorted(responses))
    assert "Retry-After" in paths["/v1/tokens"]["post"]["responses"]["429"]["headers"]
    error_schema = paths["/v1/tokens"]["post"]["responses"]["401"]["content"]["application/json"]["schema"]
    assert error_schema["$ref"].endswith("/ErrorResponse")


def test_logs_never_contain_passwords_or_tokens(client):
    out = io.StringIO()
    configure_logging("auth", "INFO", stream=out)  # the app's JSON log lines, into a buffer
    register(client)
    login(client, password=WRONG)
    token = login(client).json()["access_token"]
    client.post("/v1/tokens/verify", json={"token": token})
    text = out.getvalue()
    assert "login failed" in text and "login succeeded" in text  # the events are logged...
    assert PASSWORD not in text and WRONG not in text and token not in text  # ...the secrets are not


@pytest.fixture
def hash_limits(monkeypatch):
    """hash_limits(running, waiting): the hash gate of the apps made after the call."""
    from auth_service import passwords

    def limit(running: int, waiting: int) -> None:
        monkeypatch.setattr(passwords, "MAX_CONCURRENT_HASHES", running)
        monkeypatch.setattr(passwords, "MAX_WAITING_HASHES", waiting)

    return limit


@pytest.fixture
def stalled_table(monkeypatch):
    """stalled_table(prefix="") -> (entered, release): from the call on, reading a user whose name starts with
    ``prefix`` stalls in DynamoDB (a slow table) until ``release`` is set; ``entered`` counts the reads that stall."""
    import threading

    from auth_service.users import UserStore

    def stall(prefix: str = ""):
        entered, release = threading.Semaphore(0), threading.Event()
        real_get = UserStore.get

        def slow_get(self, username):
            if username.startswith(prefix):
                entered.release()
                release.wait(20)
            return real_get(self, username)

        monkeypatch.setattr(UserStore, "get", slow_get)
        return entered, release

    return stall


def test_a_burst_beyond_the_hashing_queue_is_turned_away_at_once(make_client, hash_limits, monkeypatch):
    """Logins and registrations queue for Argon2, but only so many: the rest get 503 busy with Retry-After
    instead of waiting behind an anonymous burst."""
    import threading
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from argon2 import PasswordHasher
    from argon2.exceptions import VerifyMismatchError

    hash_limits(running=1, waiting=1)
    release = threading.Event()

    def slow_verify(self, password_hash, password):  # a slow Argon2 computation (unknown users burn one)
        release.wait(10)
        raise VerifyMismatchError()

    client = make_client()
    monkeypatch.setattr(PasswordHasher, "verify", slow_verify)
    with ThreadPoolExecutor(3) as pool:
        # One hashes (and blocks), one waits; the third finds the queue full, whichever it is.
        pending = [pool.submit(login, client, f"user{n}") for n in range(3)]
        done, _ = wait(pending, timeout=10, return_when=FIRST_COMPLETED)
        release.set()
        answers = sorted((f.result() for f in pending), key=lambda r: r.status_code)
    assert done and [r.status_code for r in answers] == [401, 401, 503]  # the queued ones were served
    assert error_of(answers[2])["code"] == "busy" and answers[2].headers["Retry-After"] == "1"
    assert login(client, "user3").status_code == 401  # and the queue is open again


def test_logins_slowed_down_by_dynamodb_do_not_hold_hash_slots(make_client, hash_limits, stalled_table):
    """A slow table (throttling, retries) delays the logins that wait on it, but they hold no Argon2 slot
    and are not counted as waiting for one: other logins and registrations are still served, not 503 busy."""
    from concurrent.futures import ThreadPoolExecutor

    hash_limits(running=1, waiting=1)
    client = make_client()
    assert register(client).status_code == 201
    entered, release = stalled_table("slow")
    with ThreadPoolExecutor(3) as pool:
        # More stalled logins than the gate admits (one hashing, one waiting).
        stalled = [pool.submit(login, client, f"slow{n}") for n in range(3)]
        try:
            reached = sum(entered.acquire(timeout=5) for _ in stalled)
            served = login(client)
            registered = register(client, "bob")
        finally:
            release.set()
        stalled_answers = [f.result(timeout=30) for f in stalled]
    assert served.status_code == 200, served.text
    assert registered.status_code == 201, registered.text
    assert reached == 3  # every stalled login was in DynamoDB at once
    # Released together they are a burst for the gate (one hashes, one waits), so one may be turned away.
    assert sorted(r.status_code for r in stalled_answers) in ([401, 401, 401], [401, 401, 503])


def test_logins_beyond_the_threads_and_their_line_are_turned_away_at_once(make_client, stalled_table, monkeypatch):
    """A slow table holds every account thread; a few more logins wait for one, and the rest of a burst get
    503 busy at once instead of queueing without end."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from auth_service import routes

    monkeypatch.setattr(routes, "ACCOUNT_THREADS", 1)
    monkeypatch.setattr(routes, "MAX_WAITING_FOR_THREADS", 1)
    client = make_client()
    _, release = stalled_table()
    with ThreadPoolExecutor(5) as pool:
        # One burst: one login takes the thread (and stalls in DynamoDB), one waits for it, three are turned away.
        burst = [pool.submit(login, client, f"user{n}") for n in range(5)]
        try:
            turned_away = []
            while len(turned_away) < 3:
                done, _ = wait([f for f in burst if f not in turned_away], timeout=10, return_when=FIRST_COMPLETED)
                assert done, "the burst beyond the thread and its line was not answered while the table stalled"
                turned_away += done
        finally:
            release.set()
        answers = sorted((f.result(timeout=30) for f in burst), key=lambda r: r.status_code)
    assert [r.status_code for r in answers] == [401, 401, 503, 503, 503]
    assert all(error_of(r)["code"] == "busy" and r.headers["Retry-After"] == "1" for r in answers[2:])
