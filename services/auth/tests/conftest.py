"""Fixtures for auth's tests: moto-backed DynamoDB and Secrets Manager, RSA keys, a settable clock."""

from __future__ import annotations

import json

import boto3
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from moto import mock_aws

REGION = "eu-west-1"
TABLE = "mf-auth"
SECRET_ID = "mf/auth/jwt-signing-key"
# Cheap Argon2 costs keep the suite fast; production defaults are OWASP's t=2, m=19456.
FAST_ARGON2 = {"time_cost": 1, "memory_kib": 1024}


class Clock:
    """Wall-clock stand-in the tests move forward explicitly."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@pytest.fixture(scope="session")
def rsa_keys() -> list[rsa.RSAPrivateKey]:
    # Generated once per run: RSA key generation is the slowest thing these tests do.
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]


def secret_json(current: tuple[str, rsa.RSAPrivateKey], previous: list[tuple[str, rsa.RSAPrivateKey]] = ()) -> str:
    kid, key = current
    return json.dumps(
        {
            "current": {"kid": kid, "private_key_pem": _private_pem(key)},
            "previous": [{"kid": k, "public_key_pem": _public_pem(p)} for k, p in previous],
        }
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def aws():
    """moto in-process AWS per test module (per test is needlessly slow; per session would leak into
    other services' tests); no real credentials or endpoint can leak in. The per-test fixtures below
    create and delete their own resources."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("AWS_ENDPOINT_URL", raising=False)
        mp.delenv("AWS_PROFILE", raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", REGION)
        mp.setenv("AWS_REGION", REGION)
        with mock_aws():
            yield


@pytest.fixture(scope="module")
def dynamodb_client(aws):
    return boto3.client("dynamodb", region_name=REGION)


@pytest.fixture(scope="module")
def secrets_client(aws):
    return boto3.client("secretsmanager", region_name=REGION)


@pytest.fixture
def dynamodb(dynamodb_client):
    """A fresh, empty auth table for each test."""
    dynamodb_client.create_table(
        TableName=TABLE,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )
    yield dynamodb_client
    dynamodb_client.delete_table(TableName=TABLE)


@pytest.fixture
def secrets(secrets_client, rsa_keys):
    """Secrets Manager holding key-2 as current and key-1 as a previous (rotated-out) key."""
    secrets_client.create_secret(Name=SECRET_ID, SecretString=secret_json(("key-2", rsa_keys[1]), [("key-1", rsa_keys[0])]))
    yield secrets_client
    secrets_client.delete_secret(SecretId=SECRET_ID, ForceDeleteWithoutRecovery=True)


@pytest.fixture
def make_secret():
    """secret_json(current=(kid, key), previous=[(kid, key), ...]) -> SecretString."""
    return secret_json


@pytest.fixture
def fast_argon2() -> dict[str, int]:
    return dict(FAST_ARGON2)


@pytest.fixture
def store(dynamodb):
    from auth_service.users import UserStore

    return UserStore(dynamodb, TABLE)


# The tests' throttle: 3 failures in a row lock an address out of a username for 60 s, then 120, 240, 480, and at
# most 600 s; from 10 failures a UTC day on one username, 1 failure per lock.
POLICY = {"lockout_threshold": 3, "lockout_seconds": 60, "lockout_max_seconds": 600, "lockout_account_threshold": 10}


@pytest.fixture
def policy():
    from auth_service.throttle import ThrottlePolicy

    return ThrottlePolicy(threshold=POLICY["lockout_threshold"], lock_seconds=POLICY["lockout_seconds"],
                          max_lock_seconds=POLICY["lockout_max_seconds"], account_threshold=POLICY["lockout_account_threshold"])


@pytest.fixture
def before_lock_write(dynamodb):
    """before_lock_write(run) -> results: `run()` runs to its end just before the next address lock is written, as a
    concurrent request that gets there first (its result is appended to `results`); then that lock write goes ahead."""
    event, results = "before-parameter-build.dynamodb.UpdateItem", []

    def arm(run):
        def hook(params, **_):
            if params.get("UpdateExpression", "").startswith("SET locked_until"):
                dynamodb.meta.events.unregister(event, unique_id="before_lock_write")  # once; run's own lock write is not held up
                results.append(run())

        dynamodb.meta.events.register(event, hook, unique_id="before_lock_write")
        return results

    yield arm
    dynamodb.meta.events.unregister(event, unique_id="before_lock_write")  # the client outlives the test


@pytest.fixture
def throttle(dynamodb, policy):
    from auth_service.throttle import LoginThrottle

    return LoginThrottle(dynamodb, TABLE, policy)


API_SETTINGS = {
    "table_name": TABLE,
    "jwt_signing_secret_id": SECRET_ID,
    "argon2_time_cost": FAST_ARGON2["time_cost"],
    "argon2_memory_kib": FAST_ARGON2["memory_kib"],
    **POLICY,
    # As behind the load balancer alone: the caller is the last X-Forwarded-For entry (tests set it per request).
    "trusted_proxy_hops": 1,
    "public_path": "/api/auth",
}


@pytest.fixture
def make_client(dynamodb, secrets, clock):
    """make_client(**settings overrides) -> TestClient for an auth app on moto, driven by `clock`."""
    from auth_service.app import AuthClients, create_app
    from auth_service.settings import AuthSettings
    from fastapi.testclient import TestClient

    opened = []

    def make(**overrides):
        settings = AuthSettings(**{**API_SETTINGS, **overrides})
        app = create_app(settings, clients=AuthClients(dynamodb=dynamodb, secretsmanager=secrets), clock=clock)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


