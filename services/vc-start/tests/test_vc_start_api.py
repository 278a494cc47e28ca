"""The HTTP API in-process: real app, verifier, idempotency and store on moto; a fake persona."""

from __future__ import annotations

import time

import boto3
import httpx
import pytest
from botocore.config import Config
from servicekit import idempotency
from servicekit.idempotency import IdempotencyStore
from vc_start.app import create_app
from vc_start.persona import NoSlotAvailableError, PersonaUnavailableError
from vc_start.settings import VcStartSettings
from vc_start.store import SessionStore


REAL_TIME = time.time


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_start_session_answers_201_pending_and_get_reads_it_back(http, make_token, persona, persona_events, validate_event):
    token = make_token("user-1")

    created = await http.post("/v1/sessions", json={"persona_id": "p-1"}, headers=bearer(token))

    assert created.status_code == 201, created.text
    session = created.json()
    assert session["status"] == "PENDING" and session["reason"] is None and session["persona_id"] == "p-1"
    assert set(session) == {"session_id", "persona_id", "status", "reason", "created_at", "updated_at"}
    # The caller's own token is what persona sees.
    assert persona.called("get_persona") == [("get_persona", "p-1", token)]
    [(detail_type, detail)] = persona_events()
    validate_event(detail_type, detail)
    assert detail["data"]["user_id"] == "user-1"
    assert detail["correlation_id"] == created.headers["x-correlation-id"]

    read = await http.get(f"/api/vc/v1/sessions/{session['session_id']}", headers=bearer(token))  # the ALB's public path
    assert read.status_code == 200
    assert read.json() == session


async def test_unknown_persona_is_404_and_nothing_is_written(http, make_token, persona, session_items):
    response = await http.post("/v1/sessions", json={"persona_id": "missing"}, headers=bearer(make_token()))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "persona_not_found"
    assert session_items() == []
    assert persona.called("reserve_slot") == []


async def test_persona_unavailable_before_reservation_is_503_and_nothing_is_written(
    http, make_token, persona, session_items, persona_events
):
    persona.errors["get_persona"] = PersonaUnavailableError("GetPersona: UNAVAILABLE")

    response = await http.post("/v1/sessions", json={"persona_id": "p-1"}, headers=bearer(make_token()))

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "persona_unavailable"
    assert session_items() == []
    assert persona.called("reserve_slot") == []
    assert persona_events() == []


async def test_dynamodb_outage_is_503_storage_unavailable_and_nothing_is_reserved(
    settings, make_clients, make_token, persona, persona_events
):
    # Every DynamoDB call (sessions and idempotency records) goes to a port where nothing listens.
    dead = boto3.client(
        "dynamodb",
        endpoint_url="http://127.0.0.1:1",
        region_name=settings.aws_region,
        config=Config(retries={"max_attempts": 1}, connect_timeout=0.5),
    )
    down = VcStartSettings(aws_region=settings.aws_region, table_name=settings.table_name)
    down._aws_clients[("client", "dynamodb")] = dead
    app = create_app(down, clients=make_clients(store=SessionStore(dead, settings.table_name), idempotency=IdempotencyStore(down)))

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://vc-start.test") as c:
        plain = await c.post("/v1/sessions", json={"persona_id": "p-1"}, headers=bearer(make_token()))
        keyed = await c.post("/v1/sessions", json={"persona_id": "p-1"}, headers={**bearer(make_token()), "Idempotency-Key": "k-1"})

    for response in (plain, keyed):
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "storage_unavailable"
        assert response.headers["retry-after"]
    assert persona.called("reserve_slot") == []
    assert persona_events() == []


async def test_refused_reservation_is_201_cancelled_with_the_reason(http, make_token, persona):
    persona.errors["reserve_slot"] = NoSlotAvailableError("all slots taken")

    response = await http.post("/v1/sessions", json={"persona_id": "p-1"}, headers=bearer(make_token()))

    assert response.status_code == 201
    assert (response.json()["status"], response.json()["reason"]) == ("CANCELLED", "no_slot_available")


async def test_idempotency_key_replays_the_first_response_without_a_second_saga(http, make_token, persona, session_items):
    headers = {**bearer(make_token()), "Idempotency-Key": "start-1"}

    first = await http.post("/v1/sessions", json={"persona_id": "p-1"}, headers=headers)
    again = await http.post("/v1/sessions", json={"persona_id": "p-1"}, headers=headers)

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(persona.called("reserve_slot")) == 1
    assert len(session_items()) == 1


async def test_a_session_put_that_dynamodb_applied_but_answered_500_goes_on_with_that_session(
    http, make_token, persona, persona_events, session_items, lose_answer
):
    """botocore retries the put, which then fails its condition on the session its first attempt stored: that is this
    run's own session (ids are fresh per run), so the saga goes on with it instead of answering 500."""
    lost = lose_answer("PutItem", '"SESSION#')

    response = await http.post("/v1/sessions", json={"persona_id": "p-1"}, headers=bearer(make_token()))

    assert lost.lost == 1
    assert response.status_code == 201 and response.json()["status"] == "PENDING"
    assert [item["session_id"]["S"] for item in session_items()] == [response.json()["session_id"]]
    assert [call[2] for call in persona.called("reserve_slot")] == [response.json()["session_id"]]
    assert [t for t, _ in persona_events()] == ["SessionStarted"]


async def test_idempotency_key_reused_with_another_body_is_422(http, make_token):
    headers = {**bearer(make_token()), "Idempotency-Key": "start-1"}
    await http.post("/v1/sessions", json={"persona_id": "p-1"}, headers=headers)

    response = await http.post("/v1/sessions", json={"persona_id": "p-2"}, headers=headers)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"


async def test_idempotency_keys_belong_to_their_user(http, make_token, persona):
    # Another user's identical key is a different request, not a replay of someone else's session.
    first = await http.post("/v1/sessions", json={"persona_id": "p-1"}, headers={**bearer(make_token("user-1")), "Idempotency-Key": "k"})
    second = await http.post("/v1/sessions", json={"persona_id": "p-1"}, headers={**bearer(make_token("user-2")), "Idempotency-Key": "k"})

    assert second.status_code == 201 and "idempotent-replayed" not in second.headers
    assert second.json()["session_id"] != first.json()["session_id"]


async def test_a_503_is_not_replayed_so_the_retry_starts_the_session(http, make_token, persona):
    headers = {**bearer(make_token()), "Idempotency-Key": "retry-me"}
    persona.errors["get_persona"] = PersonaUnavailableError("GetPersona: UNAVAILABLE")
    assert (await http.post("/v1/sessions", json={"persona_id": "p-1"}, headers=headers)).status_code == 503

    del persona.errors["get_persona"]
    retry = await http.post("/v1/sessions", json={"persona_id": "p-1"}, headers=headers)

    assert retry.status_code == 201 and retry.json()["status"] == "PENDING"


class UnrecordedOnce(IdempotencyStore):
    """The real store, except that recording the first response fails (as when DynamoDB blips after the saga)."""

    failed = False

    async def complete(self, *args, **kwargs) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("dynamodb is down")
        await super().complete(*args, **kwargs)


@pytest.fixture
async def unrecorded_http(settings, make_clients):
    app = create_app(settings, clients=make_clients(idempotency=UnrecordedOnce(settings, settings.table_name)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://vc-start.test") as client:
        yield client


async def test_a_retry_after_an_unrecorded_response_resumes_the_same_session_instead_of_a_second(
    unrecorded_http, make_token, persona, persona_events, session_items, monkeypatch
):
    headers = {**bearer(make_token()), "Idempotency-Key": "start-1"}
    first = await unrecorded_http.post("/v1/sessions", json={"persona_id": "p-1"}, headers=headers)
    assert first.status_code == 201
    assert (await unrecorded_http.post("/v1/sessions", json={"persona_id": "p-1"}, headers=headers)).status_code == 409

    # After the first run's lease, the retry takes the run over and finds the session it made.
    monkeypatch.setattr(idempotency.time, "time", lambda: REAL_TIME() + idempotency.IN_PROGRESS_LEASE_SECONDS + 1)
    retry = await unrecorded_http.post("/v1/sessions", json={"persona_id": "p-1"}, headers=headers)

    assert retry.status_code == 201 and retry.json()["session_id"] == first.json()["session_id"]
    assert len(session_items()) == 1
    # Still PENDING, so steps 3 and 4 ran again for the same session: persona holds one slot for it.
    assert [call[2] for call in persona.called("reserve_slot")] == [first.json()["session_id"]] * 2
    assert [t for t, _ in persona_events()] == ["SessionStarted", "SessionStarted"]


async def test_a_retry_of_a_run_whose_session_settled_answers_it_as_it_is(
    unrecorded_http, make_token, persona, persona_events, store, monkeypatch
):
    headers = {**bearer(make_token()), "Idempotency-Key": "start-2"}
    first = (await unrecorded_http.post("/v1/sessions", json={"persona_id": "p-1"}, headers=headers)).json()
    await store.activate(first["session_id"])  # the workers finished the saga meanwhile
    persona_events()

    monkeypatch.setattr(idempotency.time, "time", lambda: REAL_TIME() + idempotency.IN_PROGRESS_LEASE_SECONDS + 1)
    retry = await unrecorded_http.post("/v1/sessions", json={"persona_id": "p-1"}, headers=headers)

    assert retry.status_code == 201 and (retry.json()["session_id"], retry.json()["status"]) == (first["session_id"], "ACTIVE")
    assert len(persona.called("reserve_slot")) == 1 and persona_events() == []


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Basic dXNlcjpwdw=="}])
async def test_requests_without_a_valid_token_are_401(http, persona, headers):
    response = await http.post("/v1/sessions", json={"persona_id": "p-1"}, headers=headers)

    assert response.status_code == 401
    assert response.json()["error"]["code"] in ("unauthorized", "invalid_token")
    assert persona.calls == []


async def test_expired_token_is_401(http, make_token):
    token = make_token(exp=1_000_000_000, iat=999_999_000)

    response = await http.get("/v1/sessions/anything", headers=bearer(token))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"


@pytest.mark.parametrize(
    "body",
    [{}, {"persona_id": ""}, {"persona_id": "bad id/with#chars"}, {"persona_id": "p-1", "extra": 1}, {"persona_id": 7}],
)
async def test_invalid_body_is_422(http, make_token, persona, body):
    response = await http.post("/v1/sessions", json=body, headers=bearer(make_token()))

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    assert persona.calls == []


async def test_invalid_idempotency_key_is_400(http, make_token, persona):
    response = await http.post(
        "/v1/sessions", json={"persona_id": "p-1"}, headers={**bearer(make_token()), "Idempotency-Key": "no spaces!"}
    )

    assert response.status_code == 400
    assert persona.calls == []


async def test_sessions_are_visible_to_their_owner_only(http, make_token):
    created = (await http.post("/v1/sessions", json={"persona_id": "p-1"}, headers=bearer(make_token("user-1")))).json()

    other = await http.get(f"/v1/sessions/{created['session_id']}", headers=bearer(make_token("user-2")))
    missing = await http.get("/v1/sessions/00000000-0000-4000-8000-000000000000", headers=bearer(make_token("user-1")))

    assert other.status_code == missing.status_code == 404
    assert other.json()["error"]["code"] == "session_not_found"


async def test_readiness_checks_the_table(http):
    response = await http.get("/api/vc/health/ready")

    assert response.status_code == 200
    assert response.json()["checks"] == {"dynamodb": "ok"}


async def test_openapi_documents_the_session_routes(http):
    paths = (await http.get("/openapi.json")).json()["paths"]

    assert {"201", "404", "503"} <= set(paths["/v1/sessions"]["post"]["responses"])
    assert "get" in paths["/v1/sessions/{session_id}"]
