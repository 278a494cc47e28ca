"""Idempotency-Key on POST: first response stored and replayed; reuse and in-progress rejected."""

from __future__ import annotations

import time
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends
from pydantic import BaseModel

from servicekit.app import create_service_app
from servicekit.errors import ApiError
from servicekit import idempotency
from servicekit.dynamo import is_conditional_failure
from servicekit.idempotency import IN_PROGRESS_LEASE_SECONDS, Claimed, IdempotencyStore, idempotency_key, request_hash, run_idempotent

real_time = time.time


class Order(BaseModel):
    sku: str


@pytest.fixture
def app_and_calls(make_settings, aws_env):
    settings = make_settings()
    store = IdempotencyStore(settings, settings.table_name)
    calls: list[str] = []
    runs: list[str] = []
    router = APIRouter()

    @router.post("/v1/orders", status_code=201)
    async def create(order: Order, key: Annotated[str | None, Depends(idempotency_key)]):
        async def handler(run: Claimed):
            calls.append(order.sku)
            runs.append(run)
            if order.sku == "missing":
                raise ApiError(404, "sku_not_found", "no such sku")
            if order.sku == "flaky" and calls.count("flaky") == 1:
                raise ApiError(503, "upstream_unavailable", "try again")
            if order.sku == "stale-token" and calls.count("stale-token") == 1:
                raise ApiError(401, "invalid_token", "token expired")
            return 201, {"order_no": len(calls), "sku": order.sku}

        return await run_idempotent(store, principal="user-1", key=key, request_body=order, handler=handler)

    app = create_service_app(settings, title="t", version="1", routers=[router])
    app.state.runs = runs  # the run id each call of the handler got
    return app, calls, store


@pytest.fixture
async def client(app_and_calls):
    app = app_and_calls[0]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as c:
        yield c


async def _post(client, sku: str, key: str | None = "key-1") -> httpx.Response:
    return await client.post("/v1/orders", json={"sku": sku}, headers={"Idempotency-Key": key} if key else {})


async def test_same_key_same_body_replays_first_response(client, app_and_calls):
    first = await _post(client, "apple")
    again = await _post(client, "apple")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() == {"order_no": 1, "sku": "apple"}
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert app_and_calls[1] == ["apple"]  # the handler ran once


async def test_same_key_different_body_is_422(client):
    await _post(client, "apple")
    response = await _post(client, "pear")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"


async def test_key_in_progress_is_409_with_retry_after_when_its_lease_ends(client, app_and_calls):
    store = app_and_calls[2]
    assert isinstance(await store.begin("user-1", "key-1", request_hash(Order(sku="apple")), "running"), Claimed)  # still running
    response = await _post(client, "apple")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "request_in_progress"
    assert IN_PROGRESS_LEASE_SECONDS - 2 <= int(response.headers["retry-after"]) <= IN_PROGRESS_LEASE_SECONDS + 1


async def test_only_the_request_holding_a_key_completes_or_releases_it(app_and_calls, monkeypatch):
    """A request that outlived its lease must not overwrite or delete the record of the retry that took over."""
    store = app_and_calls[2]
    digest = request_hash(Order(sku="apple"))
    first = await store.begin("user-1", "key-2", digest, "stale")
    monkeypatch.setattr(idempotency.time, "time", lambda: real_time() + IN_PROGRESS_LEASE_SECONDS + 5)
    # The lease ended: the retry takes the key over, and the run with it.
    assert await store.begin("user-1", "key-2", digest, "retry") == Claimed(first.run_id, taken_over=True)
    await store.release("user-1", "key-2", "stale")
    with pytest.raises(ApiError) as still_held:  # the stale release did not end the retry's lease
        await store.begin("user-1", "key-2", digest, "third")
    assert still_held.value.status == 409
    with pytest.raises(Exception) as stale_completion:
        await store.complete("user-1", "key-2", "stale", 201, {"from": "stale"})
    assert is_conditional_failure(stale_completion.value)
    await store.complete("user-1", "key-2", "retry", 201, {"from": "retry"})
    replay = await store.begin("user-1", "key-2", digest, "later")
    assert replay is not None and replay.body == {"from": "retry"}


async def test_keys_are_scoped_per_principal(app_and_calls):
    store = app_and_calls[2]
    digest = request_hash({"sku": "apple"})
    a = await store.begin("user-1", "shared", digest, "a")
    b = await store.begin("user-2", "shared", digest, "b")  # another user's identical key is independent
    assert isinstance(a, Claimed) and isinstance(b, Claimed) and a.run_id != b.run_id


@pytest.mark.parametrize("key", ["", "has space", "x" * 129, "semi;colon"])
async def test_invalid_key_is_400(client, key):
    response = await client.post("/v1/orders", json={"sku": "apple"}, headers={"Idempotency-Key": key})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_idempotency_key"


async def test_no_key_runs_every_time(client, app_and_calls):
    await _post(client, "apple", key=None)
    await _post(client, "apple", key=None)
    assert app_and_calls[1] == ["apple", "apple"]


async def test_client_error_is_stored_and_replayed(client, app_and_calls):
    first = await _post(client, "missing")
    again = await _post(client, "missing")
    assert first.status_code == again.status_code == 404
    assert again.json()["error"]["code"] == "sku_not_found"
    assert again.headers["idempotent-replayed"] == "true"
    assert app_and_calls[1] == ["missing"]


async def test_server_error_releases_key_so_retry_runs_again_as_the_same_run(client, app_and_calls):
    assert (await _post(client, "flaky")).status_code == 503
    retry = await _post(client, "flaky")
    assert retry.status_code == 201
    assert app_and_calls[1] == ["flaky", "flaky"]
    first_run, second_run = app_and_calls[0].state.runs
    assert second_run.run_id == first_run.run_id  # what the first run made is found again by name
    assert (first_run.taken_over, second_run.taken_over) == (False, True)


async def test_a_run_cut_off_is_taken_over_after_its_lease_with_its_run_id(app_and_calls, monkeypatch):
    """A request that died (its record IN_PROGRESS) is resumed by the retry after the lease, not restarted."""
    store = app_and_calls[2]
    digest = request_hash(Order(sku="apple"))
    died = await store.begin("user-1", "key-3", digest, "died")
    monkeypatch.setattr(idempotency.time, "time", lambda: real_time() + IN_PROGRESS_LEASE_SECONDS + 1)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_and_calls[0]), base_url="http://svc") as client:
        retry = await _post(client, "apple", key="key-3")
        other_body = await _post(client, "pear", key="key-3")
    assert retry.status_code == 201 and app_and_calls[0].state.runs == [Claimed(died.run_id, taken_over=True)]
    assert other_body.status_code == 422  # a different body never takes a run over


async def test_a_key_used_again_after_its_record_expired_starts_a_new_run(app_and_calls, monkeypatch):
    store = app_and_calls[2]
    digest = request_hash(Order(sku="apple"))
    first = await store.begin("user-1", "key-4", digest, "first")
    await store.complete("user-1", "key-4", "first", 201, {"order_no": 1})
    monkeypatch.setattr(idempotency.time, "time", lambda: real_time() + idempotency.TTL_SECONDS + 1)
    again = await store.begin("user-1", "key-4", digest, "again")
    assert isinstance(again, Claimed) and again.run_id != first.run_id


async def test_two_retries_that_saw_the_same_ended_lease_cannot_both_take_the_run_over(app_and_calls):
    store = app_and_calls[2]
    digest = request_hash(Order(sku="apple"))
    await store.begin("user-1", "key-5", digest, "died")
    later = int(real_time()) + IN_PROGRESS_LEASE_SECONDS + 1
    seen = store._ddb().get_item(TableName=store.table_name, Key=store._key("user-1", "key-5"), ConsistentRead=True)["Item"]

    assert isinstance(await store._take_over("user-1", "key-5", seen, "first retry", later), Claimed)
    with pytest.raises(ApiError) as second:
        await store._take_over("user-1", "key-5", seen, "second retry", later)
    assert second.value.status == 409


async def test_a_claim_that_dynamodb_applied_but_answered_500_is_still_this_requests(client, app_and_calls, lose_answer):
    """botocore retries the put, which then fails its condition on the record its first attempt wrote: that record
    is this request's own claim, not another request's (the request would 409 itself, and its retries for 60 s)."""
    lost = lose_answer("PutItem", "IDEMPOTENCY#")
    first = await _post(client, "apple")
    again = await _post(client, "apple")
    assert lost.lost == 1
    assert first.status_code == 201 and app_and_calls[1] == ["apple"]
    assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()


async def test_a_take_over_that_dynamodb_applied_but_answered_500_is_still_this_requests(app_and_calls, monkeypatch, lose_answer):
    store = app_and_calls[2]
    died = await store.begin("user-1", "key-6", request_hash(Order(sku="apple")), "died")
    monkeypatch.setattr(idempotency.time, "time", lambda: real_time() + IN_PROGRESS_LEASE_SECONDS + 1)
    lost = lose_answer("UpdateItem", "IDEMPOTENCY#")  # the take-over (the handler's answer is recorded after it)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_and_calls[0]), base_url="http://svc") as client:
        retry = await _post(client, "apple", key="key-6")
    assert lost.lost == 1
    assert retry.status_code == 201 and app_and_calls[0].state.runs == [Claimed(died.run_id, taken_over=True)]


async def test_unauthorized_is_not_replayed_so_a_retry_with_a_fresh_token_runs(client, app_and_calls):
    assert (await _post(client, "stale-token")).status_code == 401
    retry = await _post(client, "stale-token")
    assert retry.status_code == 201 and "idempotent-replayed" not in retry.headers
    assert app_and_calls[1] == ["stale-token", "stale-token"]


async def test_failing_to_record_the_response_still_answers_it(client, app_and_calls, monkeypatch):
    async def broken_complete(*args, **kwargs):
        raise RuntimeError("dynamodb is down")

    monkeypatch.setattr(app_and_calls[2], "complete", broken_complete)
    response = await _post(client, "apple")
    assert response.status_code == 201 and response.json()["sku"] == "apple"


@pytest.mark.parametrize("key", ["key\n", "key\r\n"])
def test_a_key_with_a_trailing_line_break_is_refused(key):
    """``$`` alone would accept a final newline: keys are matched whole."""
    with pytest.raises(ApiError) as refused:
        idempotency.validate_key(key)
    assert refused.value.status == 400
