"""Fixtures shared by the servicekit tests."""

from __future__ import annotations

import pytest

from servicekit.settings import ServiceSettings

REGION = "us-east-1"


def make_settings(**overrides) -> ServiceSettings:
    """Settings for tests: no env lookups needed, fast retries and breakers."""
    values = {
        "service_name": "svc-test",
        "aws_region": REGION,
        "table_name": "svc-test",
        "http_timeout_seconds": 0.5,
        "call_budget_seconds": 2.0,
        "retry_attempts": 3,
        "retry_backoff_seconds": 0.01,
        "retry_backoff_max_seconds": 0.05,
        "breaker_failure_threshold": 3,
        "breaker_reset_seconds": 0.3,
        "queue_wait_seconds": 0,
    }
    values.update(overrides)
    return ServiceSettings(**values)


@pytest.fixture
def sk_settings() -> ServiceSettings:
    return make_settings()


@pytest.fixture(name="make_settings")
def make_settings_fixture():
    """Factory: `make_settings(public_path="/api/x")` (test modules can't import conftest in importlib mode)."""
    return make_settings


@pytest.fixture
def aws_client(aws_session):
    """Factory for boto3 clients inside the moto mock: `aws_client("sqs")` (services/conftest.py's one session)."""
    return lambda name: aws_session.client(name, region_name=REGION)


@pytest.fixture
def fake_aws_credentials(monkeypatch):
    """Credentials that reach no real account, and no profile or endpoint override from the environment."""
    for var in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.fixture
def aws_env(monkeypatch, fake_aws_credentials, aws_client):
    """moto's in-process AWS with a service table (pk/sk + TTL) ready."""
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        aws_client("dynamodb").create_table(
            TableName="svc-test",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield
