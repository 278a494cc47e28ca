"""The DynamoDB readiness check (servicekit.dynamo.readiness_check) as the load balancer sees it: GET /health/ready of
an app on moto. A task that is only busy, or whose table DynamoDB throttles, stays ready (the load balancer would
take it out and ECS replace it otherwise); one that cannot read its table is not ready."""

from __future__ import annotations

import asyncio
import threading

import anyio.to_thread
import httpx
import pytest

from servicekit.app import create_service_app
from servicekit.dynamo import readiness_check


async def _ready(settings, table_name: str | None = None) -> httpx.Response:
    app = create_service_app(settings, title="t", version="1", readiness_checks={"dynamodb": readiness_check(settings, table_name)})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.get("/health/ready")


async def test_ready_while_every_shared_worker_thread_is_busy(aws_env, make_settings):
    # Every store call runs on anyio's shared threads (40): a task whose requests hold them all (slow reads, throttled
    # retries) must still answer readiness from the table, within the check's 2 s time-out.
    shared = anyio.to_thread.current_default_thread_limiter()
    release = threading.Event()
    busy = [asyncio.create_task(anyio.to_thread.run_sync(release.wait)) for _ in range(int(shared.total_tokens) + 5)]
    try:
        while shared.borrowed_tokens < shared.total_tokens:
            await asyncio.sleep(0.01)
        response = await _ready(make_settings())
    finally:
        release.set()
        await asyncio.gather(*busy)
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {"dynamodb": "ok"}


@pytest.mark.parametrize("code", ["ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"])
async def test_throttled_table_is_ready_after_one_attempt(aws_env, make_settings, answer_instead, code):
    # The table answered: replacing tasks would add no capacity. One attempt: botocore's backoff between throttled
    # attempts (up to 1, 2 and 4 s) would run past the check's time-out.
    get_item = answer_instead("GetItem", {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": "Rate of requests exceeds the allowed throughput."})
    response = await _ready(make_settings())
    assert response.status_code == 200, response.text
    assert get_item.sent == 1


async def test_missing_table_is_not_ready(aws_env, make_settings):
    response = await _ready(make_settings(), "no-such-table")  # moto answers ResourceNotFoundException
    assert response.status_code == 503
    assert response.json()["error"]["details"]["checks"] == {"dynamodb": "failing"}


async def test_access_denied_is_not_ready(aws_env, make_settings, answer_instead):
    answer_instead("GetItem", {"__type": "com.amazon.coral.service#AccessDeniedException",
                               "Message": "User is not authorized to perform: dynamodb:GetItem on resource: table/svc-test"})
    response = await _ready(make_settings())
    assert response.status_code == 503
    assert response.json()["error"]["details"]["checks"] == {"dynamodb": "failing"}
