"""create_service_app: JSON errors for every failure, correlation ids, PUBLIC_PATH, body limit, health."""

from __future__ import annotations

import asyncio
import io
import json
import uuid

import httpx
import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from servicekit.app import create_service_app
from servicekit.errors import ApiError
from servicekit.logging import configure_logging

router = APIRouter()


class Item(BaseModel):
    name: str = Field(min_length=1, max_length=20)
    qty: int = Field(ge=1)


@router.post("/v1/items", status_code=201)
async def create_item(item: Item) -> dict:
    return {"name": item.name, "qty": item.qty}


@router.get("/v1/items/{item_id}")
async def get_item(item_id: int) -> dict:
    if item_id == 404:
        raise ApiError(404, "item_not_found", "item 404 does not exist")
    return {"id": item_id}


@router.get("/v1/boom")
async def boom() -> dict:
    raise RuntimeError("database on fire")


@pytest.fixture
def make_app(make_settings):
    def factory(**overrides):
        settings = make_settings(**{"public_path": "/api/items", "max_body_bytes": 200, **overrides})
        return create_service_app(settings, title="items", version="1.0", routers=[router])

    return factory


@pytest.fixture
def client(make_app):
    with TestClient(make_app()) as c:
        yield c


def _assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"] and "\n" not in error["message"]
    assert error["correlation_id"] == response.headers["x-correlation-id"]
    return error


def test_correlation_id_is_taken_from_request_and_echoed(client):
    response = client.get("/v1/items/1", headers={"X-Correlation-Id": "abc-123"})
    assert response.headers["x-correlation-id"] == "abc-123"


def test_correlation_id_is_generated_when_missing_or_unsafe(client):
    generated = client.get("/v1/items/1").headers["x-correlation-id"]
    assert uuid.UUID(generated)
    unsafe = client.get("/v1/items/1", headers={"X-Correlation-Id": "bad id\twith spaces"}).headers["x-correlation-id"]
    assert unsafe != "bad id\twith spaces" and uuid.UUID(unsafe)


def test_unknown_route_is_json_404(client):
    _assert_error(client.get("/v1/nothing-here"), 404, "not_found")


def test_wrong_method_is_json_405(client):
    _assert_error(client.delete("/v1/items"), 405, "method_not_allowed")


def test_validation_error_is_json_422_without_echoing_input(client):
    error = _assert_error(client.post("/v1/items", json={"name": "secret-value", "qty": 0}), 422, "validation_error")
    assert error["details"]["errors"][0]["loc"] == ["body", "qty"]
    assert "secret-value" not in json.dumps(error)


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"\xff\xfe\x00", b"[]", b"null", b'{"name": 5, "qty": "x"}'],
)
def test_malformed_bodies_are_4xx_never_5xx(client, content):
    response = client.post("/v1/items", content=content, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500
    assert response.json()["error"]["code"]


@pytest.mark.parametrize("name", [r"\ud800", r"a\udfffb", r"\ud83d"])
def test_lone_surrogate_in_a_json_string_is_422_not_500(client, name):
    # json.loads accepts the escape, but the string can never be encoded (hashed, stored, echoed).
    content = b'{"name": "' + name.encode() + b'", "qty": 1}'
    _assert_error(client.post("/v1/items", content=content, headers={"content-type": "application/json"}), 422, "validation_error")


@pytest.mark.parametrize(("name", "expected"), [(r"\ud83d\ude00", "\U0001f600"), (r"\\ud800", "\\ud800")])
def test_surrogate_pairs_and_escaped_backslashes_are_fine(client, name, expected):
    content = b'{"name": "' + name.encode() + b'", "qty": 1}'
    response = client.post("/v1/items", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 201 and response.json()["name"] == expected


def test_path_parameter_of_wrong_type_is_422(client):
    _assert_error(client.get("/v1/items/abc"), 422, "validation_error")


def test_api_error_keeps_its_status_and_code(client):
    _assert_error(client.get("/v1/items/404"), 404, "item_not_found")


def test_body_over_limit_with_content_length_is_413(client):
    _assert_error(client.post("/v1/items", content=b"x" * 500, headers={"content-type": "application/json"}), 413, "payload_too_large")


def test_chunked_body_over_limit_is_413(client):
    def chunks():
        yield b'{"name": "a", "qty": 1'
        for _ in range(10):
            yield b" " * 50
        yield b"}"

    response = client.post("/v1/items", content=chunks(), headers={"content-type": "application/json"})
    _assert_error(response, 413, "payload_too_large")


def test_chunked_body_under_limit_is_accepted(client):
    def chunks():
        yield b'{"name": "a",'
        yield b' "qty": 2}'

    response = client.post("/v1/items", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 201 and response.json() == {"name": "a", "qty": 2}


def test_unexpected_exception_is_json_500_and_logged_with_traceback(make_app):
    app = make_app()
    stream = io.StringIO()
    configure_logging("svc-test", "INFO", stream=stream)
    with TestClient(app) as c:
        error = _assert_error(c.get("/v1/boom"), 500, "internal_error")
    assert "database on fire" not in error["message"]  # no internals leak to clients
    logged = [json.loads(line) for line in stream.getvalue().splitlines()]
    failure = next(line for line in logged if line["level"] == "ERROR")
    assert "RuntimeError: database on fire" in failure["exc_info"]
    assert failure["correlation_id"] == error["correlation_id"]


def test_public_path_prefix_and_bare_paths_both_work(client):
    assert client.get("/api/items/v1/items/7").json() == {"id": 7}
    assert client.get("/v1/items/7").json() == {"id": 7}
    assert client.get("/api/items/health/live").status_code == 200
    # A path that merely starts with the same letters is not under the prefix.
    _assert_error(client.get("/api/itemsx/v1/items/7"), 404, "not_found")


def test_access_log_line_per_request(make_app):
    app = make_app()
    stream = io.StringIO()
    configure_logging("svc-test", "INFO", stream=stream)
    with TestClient(app) as c:
        c.get("/api/items/v1/items/3", headers={"X-Correlation-Id": "acc-1"})
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    (access,) = [line for line in lines if line["logger"] == "servicekit.access"]
    assert access["method"] == "GET"
    assert access["route"] == "/v1/items/{item_id}"
    assert access["path"] == "/api/items/v1/items/3"
    assert access["status"] == 200
    assert access["duration_ms"] >= 0
    assert access["correlation_id"] == "acc-1"
    assert access["service"] == "svc-test"


def test_readiness_ok_then_503_when_draining(client):
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    client.app.state.health.mark_draining()
    error = _assert_error(client.get("/health/ready"), 503, "not_ready")
    assert "draining" in error["message"]
    assert client.get("/health/live").status_code == 200  # draining is not dead


def test_readiness_names_the_failing_check_and_logs_why(make_settings, caplog):
    """The reason (an AWS error names accounts, roles and secrets) goes to the log, not to the public answer."""
    async def table_ok() -> None:
        return None

    async def secret_missing() -> None:
        raise RuntimeError("secret mf/auth/key not found")

    settings = make_settings()
    app = create_service_app(settings, title="t", version="1", readiness_checks={"table": table_ok, "secret": secret_missing})
    with TestClient(app) as c, caplog.at_level("WARNING", logger="servicekit.app"):
        response = c.get("/health/ready")
    error = _assert_error(response, 503, "not_ready")
    assert "secret" in error["message"] and "table" not in error["message"]
    assert error["details"]["checks"] == {"table": "ok", "secret": "failing"}
    assert "mf/auth/key" not in response.text
    assert any("secret: RuntimeError: secret mf/auth/key not found" in r.getMessage() for r in caplog.records)


async def test_readiness_check_that_hangs_fails_within_timeout(make_settings):
    async def hangs() -> None:
        await asyncio.sleep(30)

    app = create_service_app(make_settings(), title="t", version="1", readiness_checks={"slow": hangs})
    app.state.health.timeout = 0.05
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["error"]["details"]["checks"]["slow"] == "failing"


def test_startup_and_shutdown_hooks_run(make_settings):
    calls: list[str] = []

    async def start() -> None:
        calls.append("start")

    app = create_service_app(make_settings(), title="t", version="1", on_startup=[start], on_shutdown=[lambda: calls.append("stop")])
    with TestClient(app):
        assert calls == ["start"]
    assert calls == ["start", "stop"]


def test_openapi_documents_our_error_body(client):
    schema = client.get("/openapi.json").json()
    post = schema["paths"]["/v1/items"]["post"]["responses"]
    assert post["422"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/ErrorResponse"
    assert "4XX" in post
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_instrumentation_off_still_answers_json_errors(make_app):
    with TestClient(make_app(instrumentation=False)) as c:
        _assert_error(c.get("/nope"), 404, "not_found")
        assert c.post("/v1/items", json={"name": "a", "qty": 1}).status_code == 201
