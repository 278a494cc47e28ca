"""The signing-key rotation function (constructs/service_data/rotation/handler.py) against moto's Secrets
Manager, checked with auth's own key loader: what the function writes is what auth signs and verifies with.

moto's RotateSecret runs the four steps itself (createSecret, setSecret, testSecret, finishSecret, with
the AWSPENDING version it creates); here it invokes the handler in-process instead of a Lambda container.
The handler's tests live with the services because this virtualenv has cryptography and moto.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import boto3
import jwt
import pytest
from auth_service.keys import SECRET_CACHE_SECONDS, parse_key_set
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from harness import load_module
from moto import mock_aws

HANDLER = Path(__file__).resolve().parents[2] / "constructs" / "service_data" / "rotation" / "handler.py"
SECRET = "mf/auth/jwt-signing-key"
RETENTION_SECONDS = 1800
FUNCTION_ARN = "arn:aws:lambda:eu-central-1:123456789012:function:rotate-signing-key"


rotation = load_module("signing_key_rotation_handler", HANDLER)


class _InProcessLambda:
    """What moto's RotateSecret asks of its Lambda backend: the function exists, and invoke runs it."""

    def __init__(self, steps=None):
        self.steps = steps or (lambda event: rotation.handler(event, None))
        self.events = []

    def get_function(self, arn):
        assert arn == FUNCTION_ARN
        return object()

    def invoke(self, function_name, qualifier, body, headers, response_headers):
        event = json.loads(body)
        self.events.append(event)
        self.steps(event)
        return b""


@pytest.fixture
def secrets(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("PREVIOUS_KEY_RETENTION_SECONDS", str(RETENTION_SECONDS))
    with mock_aws():
        yield boto3.client("secretsmanager")


def _lambda(monkeypatch, fake):
    import moto.awslambda.utils

    monkeypatch.setattr(moto.awslambda.utils, "get_backend", lambda account_id, region: fake)
    return fake


def _rotate(secrets):
    secrets.rotate_secret(SecretId=SECRET, RotationLambdaARN=FUNCTION_ARN, RotationRules={"AutomaticallyAfterDays": 30})
    return secrets.get_secret_value(SecretId=SECRET)["SecretString"]


def _placeholder(secrets):
    # What CloudFormation creates: Secrets Manager's generated password, not a key set.
    secrets.create_secret(Name=SECRET, SecretString=secrets.get_random_password(PasswordLength=32)["RandomPassword"])


def _pem(private_key):
    return private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def _public_pem(private_key):
    return private_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _iso(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def test_the_first_rotation_replaces_the_placeholder_with_a_key_auth_loads(secrets, monkeypatch):
    fake = _lambda(monkeypatch, _InProcessLambda())
    _placeholder(secrets)
    key_set = parse_key_set(_rotate(secrets))
    assert [event["Step"] for event in fake.events] == ["createSecret", "setSecret", "testSecret", "finishSecret"]
    assert key_set.private_key.key_size == 2048 and list(key_set.public_keys) == [key_set.kid]
    assert json.loads(secrets.get_secret_value(SecretId=SECRET)["SecretString"])["previous"] == []
    stages = secrets.describe_secret(SecretId=SECRET)["VersionIdsToStages"]
    assert "AWSCURRENT" in stages[fake.events[0]["ClientRequestToken"]]


def test_a_rotation_publishes_the_new_key_before_auth_signs_with_it_and_keeps_the_old_one_until_its_tokens_expire(secrets, monkeypatch):
    """Auth tasks re-read the secret every 300 s: a task that signed with the new key at once would send verifiers
    to fetch a JWKS that other tasks do not have yet (401s for minutes). The new key signs only from its
    sign_after, when every task publishes it; the old one signs until then and verifies its tokens after."""
    _lambda(monkeypatch, _InProcessLambda())
    _placeholder(secrets)
    old = parse_key_set(_rotate(secrets))
    token = jwt.encode({"sub": "u1", "exp": int(time.time()) + 900}, old.private_key, algorithm="RS256", headers={"kid": old.kid})

    before = time.time()
    rotated_text = _rotate(secrets)
    rotated = json.loads(rotated_text)
    new_kid = rotated["current"]["kid"]
    sign_after = time.mktime(time.strptime(rotated["current"]["sign_after"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert before + rotation.NEW_KEY_ACTIVATION_SECONDS - 2 <= sign_after <= time.time() + rotation.NEW_KEY_ACTIVATION_SECONDS + 1
    assert rotation.NEW_KEY_ACTIVATION_SECONDS > SECRET_CACHE_SECONDS  # auth's re-read of the secret

    published = parse_key_set(rotated_text)  # what every auth task loads before sign_after
    assert published.kid == old.kid and _pem(published.private_key) == _pem(old.private_key)
    assert [key["kid"] for key in published.jwks["keys"]] == [new_kid, old.kid]
    signing = parse_key_set(rotated_text, now=sign_after)
    assert signing.kid == new_kid and _pem(signing.private_key) != _pem(old.private_key)
    assert list(signing.public_keys) == [new_kid, old.kid]
    # A token the old key signed still verifies against the key set auth now publishes.
    header = jwt.get_unverified_header(token)
    assert jwt.decode(token, signing.public_keys[header["kid"]], algorithms=["RS256"])["sub"] == "u1"
    (previous,) = rotated["previous"]
    assert previous["public_key_pem"] == _public_pem(old.private_key)
    # Retired for a retention period from when it stops signing.
    retire_after = time.mktime(time.strptime(previous["retire_after"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert retire_after == sign_after + RETENTION_SECONDS


def test_a_retired_key_keeps_its_private_half_only_while_no_newer_key_signs(secrets, monkeypatch):
    _lambda(monkeypatch, _InProcessLambda())
    _placeholder(secrets)
    _rotate(secrets)
    first = json.loads(_rotate(secrets))  # the key of the first rotation still signs: its private half stays
    assert "private_key_pem" in first["previous"][0]
    second = json.loads(_rotate(secrets))  # within the activation time: neither newer key signs yet
    assert [("private_key_pem" in entry) for entry in second["previous"]] == [True, True]
    assert parse_key_set(json.dumps(second)).kid == first["previous"][0]["kid"]  # the one that signed all along
    # Once the middle key has signed (its sign_after passed), a rotation drops the oldest key's private half.
    later = time.time() + rotation.NEW_KEY_ACTIVATION_SECONDS + 1
    third = rotation.next_key_set(json.dumps(second), token="t" * 32, now=later, retention_seconds=RETENTION_SECONDS)
    assert [("private_key_pem" in entry) for entry in third["previous"]] == [True, False, False]
    rotation.check_key_set(third)


def test_previous_keys_past_their_retire_time_are_dropped_and_hand_stored_ones_get_one(secrets, monkeypatch):
    _lambda(monkeypatch, _InProcessLambda())
    now = time.time()
    current, expired, live, hand_stored = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(4))
    secrets.create_secret(Name=SECRET, SecretString=json.dumps({
        "current": {"kid": "k4", "private_key_pem": _pem(current)},
        "previous": [
            {"kid": "k3", "public_key_pem": _public_pem(live), "retire_after": _iso(now + 600)},
            {"kid": "k2", "public_key_pem": _public_pem(expired), "retire_after": _iso(now - 1)},
            {"kid": "k1", "public_key_pem": _public_pem(hand_stored)},
        ],
    }))
    rotated = json.loads(_rotate(secrets))
    assert [entry["kid"] for entry in rotated["previous"]] == ["k4", "k3", "k1"]
    by_kid = {entry["kid"]: entry for entry in rotated["previous"]}
    assert by_kid["k3"]["retire_after"] == _iso(now + 600)
    assert by_kid["k1"]["retire_after"] == by_kid["k4"]["retire_after"]  # a retention period after the new key signs
    assert set(parse_key_set(json.dumps(rotated)).public_keys) == {rotated["current"]["kid"], "k4", "k3", "k1"}


def test_a_repeated_create_step_keeps_the_key_it_made_first(secrets, monkeypatch):
    pending_values = []

    def create_twice_then_continue(event):
        rotation.handler(event, None)
        if event["Step"] == "createSecret":
            pending_values.append(secrets.get_secret_value(SecretId=SECRET, VersionStage="AWSPENDING")["SecretString"])
            rotation.handler(event, None)  # Secrets Manager retries a step whose reply it did not get
            pending_values.append(secrets.get_secret_value(SecretId=SECRET, VersionStage="AWSPENDING")["SecretString"])

    _lambda(monkeypatch, _InProcessLambda(create_twice_then_continue))
    _placeholder(secrets)
    current = _rotate(secrets)
    assert len(pending_values) == 2 and pending_values[0] == pending_values[1] == current


def test_steps_refuse_secrets_without_rotation_and_versions_that_are_not_pending(secrets, monkeypatch):
    _lambda(monkeypatch, _InProcessLambda())
    _placeholder(secrets)
    with pytest.raises(ValueError, match="not enabled for rotation"):
        rotation.handler({"SecretId": SECRET, "ClientRequestToken": "a" * 32, "Step": "createSecret"}, None)
    _rotate(secrets)
    with pytest.raises(ValueError, match="has no stage for rotation"):
        rotation.handler({"SecretId": SECRET, "ClientRequestToken": "b" * 32, "Step": "createSecret"}, None)


def test_the_test_step_rejects_a_pending_key_auth_would_refuse(secrets, monkeypatch):
    _lambda(monkeypatch, _InProcessLambda())
    _placeholder(secrets)
    _rotate(secrets)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    token = "c" * 32
    secrets.put_secret_value(SecretId=SECRET, ClientRequestToken=token, VersionStages=["AWSPENDING"],
                             SecretString=json.dumps({"current": {"kid": "weak", "private_key_pem": _pem(weak)}, "previous": []}))
    with pytest.raises(ValueError, match="at least 2048 bits"):
        rotation.handler({"SecretId": SECRET, "ClientRequestToken": token, "Step": "testSecret"}, None)
    # The weak key never became current.
    assert parse_key_set(secrets.get_secret_value(SecretId=SECRET)["SecretString"]).private_key.key_size == 2048


def test_an_unknown_step_is_an_error(secrets, monkeypatch):
    _lambda(monkeypatch, _InProcessLambda())
    _placeholder(secrets)
    _rotate(secrets)
    token = "d" * 32
    secrets.put_secret_value(SecretId=SECRET, ClientRequestToken=token, SecretString="{}", VersionStages=["AWSPENDING"])
    with pytest.raises(ValueError, match="unknown rotation step"):
        rotation.handler({"SecretId": SECRET, "ClientRequestToken": token, "Step": "dropSecret"}, None)
