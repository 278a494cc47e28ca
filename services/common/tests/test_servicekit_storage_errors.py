"""A storage outage (botocore: no connection, timeout, throttling) answers 503 storage_unavailable in every
service; other botocore errors stay 500. The routes raise real botocore exceptions, most from real calls."""

from __future__ import annotations

import socket

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ParamValidationError,
    ReadTimeoutError,
)
from fastapi import APIRouter
from fastapi.testclient import TestClient

from servicekit import aws
from servicekit.app import create_service_app

KEY = {"pk": {"S": "k"}, "sk": {"S": "k"}}


def _client_error(code: str, operation: str = "PutItem") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} from DynamoDB"}}, operation)


def _dynamodb(endpoint: str, *, read_timeout: float = 0.5):
    # One attempt, short timeouts: the outage is reported in well under a second.
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=0.5, read_timeout=read_timeout),
    )


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:  # bound then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_port():
    """A port that accepts connections but never answers (a hung endpoint)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.fixture
def client_for(make_settings):
    """client_for(fn) -> TestClient of an app whose GET /v1/thing runs `fn()` (raising what it raises)."""
    opened = []

    def build(fn):
        router = APIRouter()

        @router.get("/v1/thing")
        async def thing() -> dict:
            await aws.run_sync(fn)
            return {"ok": True}

        app = create_service_app(make_settings(public_path="/api/x"), title="x", version="1", routers=[router])
        client = TestClient(app, raise_server_exceptions=False).__enter__()
        opened.append(client)
        return client

    yield build
    for client in opened:
        client.__exit__(None, None, None)


def _raiser(exc: Exception):
    def fn():
        raise exc

    return fn


def _assert_storage_unavailable(response, retry_after: str) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "storage_unavailable"
    assert error["message"] and "\n" not in error["message"]
    assert error["correlation_id"] == response.headers["x-correlation-id"]
    assert response.headers["retry-after"] == retry_after


def test_unreachable_dynamodb_is_503_with_retry_after(client_for, closed_port):
    ddb = _dynamodb(f"http://127.0.0.1:{closed_port}")
    client = client_for(lambda: ddb.get_item(TableName="t", Key=KEY))

    response = client.get("/api/x/v1/thing")

    _assert_storage_unavailable(response, str(aws.RETRY_AFTER_UNREACHABLE_SECONDS))
    assert "127.0.0.1" not in response.json()["error"]["message"]  # no endpoint details leak to clients


def test_hung_dynamodb_read_timeout_is_503(client_for, silent_port):
    ddb = _dynamodb(f"http://127.0.0.1:{silent_port}", read_timeout=0.2)
    client = client_for(lambda: ddb.put_item(TableName="t", Item=KEY))

    _assert_storage_unavailable(client.get("/v1/thing"), str(aws.RETRY_AFTER_UNREACHABLE_SECONDS))


@pytest.mark.parametrize(
    "code", ["ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"]
)
def test_throttling_is_503_with_a_short_retry_after(client_for, code):
    client = client_for(_raiser(_client_error(code)))

    _assert_storage_unavailable(client.get("/v1/thing"), str(aws.RETRY_AFTER_THROTTLED_SECONDS))


@pytest.mark.parametrize("code", ["InternalServerError", "ServiceUnavailable"])
def test_aws_server_errors_are_503(client_for, code):
    client = client_for(_raiser(_client_error(code)))

    _assert_storage_unavailable(client.get("/v1/thing"), str(aws.RETRY_AFTER_UNREACHABLE_SECONDS))


@pytest.mark.parametrize(
    "exc",
    [_client_error("ValidationException"), _client_error("ResourceNotFoundException"), ParamValidationError(report="bad Key")],
    ids=["validation", "missing_table", "param_validation"],
)
def test_other_botocore_errors_stay_500(client_for, exc):
    # A bug or a misconfiguration, not an outage: retrying would not help.
    response = client_for(_raiser(exc)).get("/v1/thing")

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "retry-after" not in response.headers


def test_openapi_documents_the_503(client_for):
    schema = client_for(lambda: None).get("/openapi.json").json()

    assert schema["paths"]["/v1/thing"]["get"]["responses"]["503"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }
    assert "503" not in schema["paths"]["/health/live"]["get"]["responses"]


@pytest.mark.parametrize(
    ("exc", "unavailable"),
    [
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True),
        (ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"), True),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), True),
        (_client_error("ThrottlingException"), True),
        (_client_error("ConditionalCheckFailedException"), False),
        (ParamValidationError(report="x"), False),
        (RuntimeError("not botocore"), False),
    ],
)
def test_is_unavailable_classifies_botocore_errors(exc, unavailable):
    assert aws.is_unavailable(exc) is unavailable
