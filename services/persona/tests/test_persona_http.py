"""persona's HTTP API: CRUD of the caller's personas, isolation between owners, validation and auth."""

from __future__ import annotations

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.stub import Stubber
from cryptography.hazmat.primitives.asymmetric import rsa
from persona_service.app import PersonaClients, create_app


@pytest.fixture
async def client(settings, dynamodb, verifier, clock):
    app = create_app(settings, clients=PersonaClients(dynamodb=dynamodb, verifier=verifier, clock=clock))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://persona") as c:
        c.app = app
        yield c


@pytest.fixture
def alice(make_token):
    return {"Authorization": f"Bearer {make_token('user-a')}"}


@pytest.fixture
def bob(make_token):
    return {"Authorization": f"Bearer {make_token('user-b')}"}


async def test_persona_crud_round_trip(client, alice):
    created = await client.post(
        "/v1/personas", json={"display_name": " Ada ", "attributes": {"voice": "alto"}, "max_sessions": 3}, headers=alice
    )
    assert created.status_code == 201, created.text
    persona = created.json()
    assert {k: persona[k] for k in ("display_name", "attributes", "max_sessions", "reserved")} == {
        "display_name": "Ada",
        "attributes": {"voice": "alto"},
        "max_sessions": 3,
        "reserved": 0,
    }
    pid = persona["persona_id"]

    assert (await client.get(f"/v1/personas/{pid}", headers=alice)).json() == persona
    # ALB forwards the public path unchanged: both spellings work.
    assert (await client.get(f"/api/persona/v1/personas/{pid}", headers=alice)).json() == persona

    patched = await client.patch(f"/v1/personas/{pid}", json={"display_name": "Ada L.", "max_sessions": 1}, headers=alice)
    assert patched.status_code == 200
    assert patched.json()["display_name"] == "Ada L." and patched.json()["attributes"] == {"voice": "alto"}

    listed = await client.get("/v1/personas", headers=alice)
    assert [p["persona_id"] for p in listed.json()["items"]] == [pid]

    assert (await client.delete(f"/v1/personas/{pid}", headers=alice)).status_code == 204
    gone = await client.get(f"/v1/personas/{pid}", headers=alice)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "persona_not_found"
    assert (await client.get("/v1/personas", headers=alice)).json() == {"items": [], "next_page_token": None}


async def test_other_owners_persona_is_invisible(client, alice, bob):
    pid = (await client.post("/v1/personas", json={"display_name": "Ada"}, headers=alice)).json()["persona_id"]
    assert (await client.get("/v1/personas", headers=bob)).json() == {"items": [], "next_page_token": None}
    for method, kwargs in (("GET", {}), ("PATCH", {"json": {"display_name": "mine now"}}), ("DELETE", {})):
        response = await client.request(method, f"/v1/personas/{pid}", headers=bob, **kwargs)
        assert response.status_code == 404, method
        assert response.json()["error"]["code"] == "persona_not_found"
    assert (await client.get(f"/v1/personas/{pid}", headers=alice)).json()["display_name"] == "Ada"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"display_name": ""},
        {"display_name": "x" * 101},
        {"display_name": "Ada", "max_sessions": 0},
        {"display_name": "Ada", "max_sessions": 11},
        {"display_name": "Ada", "attributes": {f"k{i}": "v" for i in range(21)}},
        {"display_name": "Ada", "owner": "someone-else"},
    ],
    ids=["missing-name", "empty-name", "long-name", "zero-sessions", "eleven-sessions", "21-attributes", "unknown-field"],
)
async def test_invalid_persona_is_rejected_with_422(client, alice, body):
    response = await client.post("/v1/personas", json=body, headers=alice)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


async def test_requests_without_a_valid_token_get_401(client, make_token):
    foreign_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for headers in (
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": f"Bearer {make_token('user-a', key=foreign_key)}"},
        {"Authorization": f"Bearer {make_token('user-a', aud='someone-else')}"},
    ):
        response = await client.get("/v1/personas", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["code"]
    assert (await client.post("/v1/personas", json={"display_name": "Ada"})).status_code == 401


async def test_delete_and_shrink_refused_while_slots_are_reserved(client, alice):
    pid = (await client.post("/v1/personas", json={"display_name": "Ada", "max_sessions": 2}, headers=alice)).json()["persona_id"]
    store = client.app.state.store
    store.reserve(pid, "s1", "user-a")
    store.reserve(pid, "s2", "user-a")

    busy = await client.delete(f"/v1/personas/{pid}", headers=alice)
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "persona_in_use"
    shrink = await client.patch(f"/v1/personas/{pid}", json={"max_sessions": 1}, headers=alice)
    assert shrink.status_code == 409 and shrink.json()["error"]["code"] == "max_sessions_below_reserved"
    assert (await client.get(f"/v1/personas/{pid}", headers=alice)).json()["reserved"] == 2

    store.release(pid, "s1", "done")
    store.release(pid, "s2", "done")
    assert (await client.delete(f"/v1/personas/{pid}", headers=alice)).status_code == 204


async def test_readiness_reports_dynamodb(client):
    ready = await client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["checks"]["dynamodb"] == "ok"


async def test_unreachable_dynamodb_answers_503_and_not_ready(settings, verifier, alice):
    dead = boto3.client(
        "dynamodb",
        endpoint_url="http://127.0.0.1:1",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    app = create_app(settings, clients=PersonaClients(dynamodb=dead, verifier=verifier))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://persona") as c:
        created = await c.post("/v1/personas", json={"display_name": "Ada"}, headers=alice)
        assert created.status_code == 503 and created.json()["error"]["code"] == "storage_unavailable"
        assert created.headers["retry-after"]
        listed = await c.get("/v1/personas", headers=alice)
        assert listed.status_code == 503 and listed.json()["error"]["code"] == "storage_unavailable"
        ready = await c.get("/health/ready")
        assert ready.status_code == 503 and "dynamodb" in ready.json()["error"]["message"]


async def test_throttled_dynamodb_answers_503_with_retry_after(settings, verifier, alice):
    # The real client raises DynamoDB's own throttling error (botocore's Stubber answers in AWS's place).
    throttled = boto3.client(
        "dynamodb", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    with Stubber(throttled) as stub:
        stub.add_client_error("transact_write_items", "ProvisionedThroughputExceededException", http_status_code=400)
        app = create_app(settings, clients=PersonaClients(dynamodb=throttled, verifier=verifier))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://persona") as c:
            created = await c.post("/v1/personas", json={"display_name": "Ada"}, headers=alice)
    assert created.status_code == 503, created.text
    assert created.json()["error"]["code"] == "storage_unavailable"
    assert created.headers["retry-after"] == "1"


async def test_a_transaction_cancelled_for_throttling_answers_503_not_a_conflict(client, alice, cancel_transactions, caplog):
    transactions = cancel_transactions("None", "None", "ThrottlingError")  # creating a persona writes three items
    created = await client.post("/v1/personas", json={"display_name": "Ada"}, headers=alice)
    assert created.status_code == 503, created.text
    assert created.json()["error"]["code"] == "storage_unavailable"  # retry later, not 409 "concurrent_update"
    assert created.headers["retry-after"] == "1"
    assert transactions.sent == 1  # not retried at once, as after a conflict
    # What runbooks/table-errors.md's query counts the failed requests by.
    assert [r.aws_error for r in caplog.records if r.getMessage().startswith("storage unavailable")] == ["TransactionCanceledException"]


class _BatchCallsProcessNothing:
    """The real (moto) client, except that its batch calls process nothing: DynamoDB's answer while it throttles."""

    def __init__(self, client) -> None:
        self._client = client
        self.batch_calls = 0

    def __getattr__(self, name):
        return getattr(self._client, name)

    def batch_get_item(self, RequestItems):
        self.batch_calls += 1
        return {"Responses": {}, "UnprocessedKeys": RequestItems}

    def batch_write_item(self, RequestItems):
        self.batch_calls += 1
        return {"UnprocessedItems": RequestItems}


async def test_a_list_that_dynamodb_keeps_throttling_answers_503_not_a_conflict(settings, verifier, alice, dynamodb, clock):
    throttled = _BatchCallsProcessNothing(dynamodb)
    app = create_app(settings, clients=PersonaClients(dynamodb=throttled, verifier=verifier, clock=clock))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://persona") as c:
        assert (await c.post("/v1/personas", json={"display_name": "Ada"}, headers=alice)).status_code == 201
        listed = await c.get("/v1/personas", headers=alice)
    assert listed.status_code == 503, listed.text
    assert listed.json()["error"]["code"] == "storage_unavailable"  # retry later, not "concurrent_update"
    assert listed.json()["error"]["message"] == "storage is busy; retry later"  # servicekit's answer to throttling
    assert listed.headers["retry-after"] == "1"
    assert throttled.batch_calls == 5  # the first call and four more for the rest, then the answer


async def test_app_with_its_own_verifier_can_be_started_again(settings, dynamodb, clock, alice):
    # Its lifespan closes the JWKS client on shutdown; a second start must still fetch keys.
    app = create_app(settings, clients=PersonaClients(dynamodb=dynamodb, clock=clock))
    for _ in range(2):
        async with app.router.lifespan_context(app):
            pass
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://persona") as c:
        response = await c.get("/v1/personas", headers=alice)
    assert response.status_code == 200 and response.json() == {"items": [], "next_page_token": None}


async def _all_pages(client, headers, **params) -> tuple[list[dict], list[int]]:
    """Follows next_page_token to the end: (every persona listed, the size of each page)."""
    items, sizes, token = [], [], None
    while True:
        response = await client.get("/v1/personas", headers=headers, params={**params, **({"page_token": token} if token else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        sizes.append(len(body["items"]))
        token = body["next_page_token"]
        if token is None:
            return items, sizes


async def test_listing_pages_through_every_persona_exactly_once(client, alice, bob):
    created = [(await client.post("/v1/personas", json={"display_name": f"P{i}"}, headers=alice)).json() for i in range(7)]
    await client.post("/v1/personas", json={"display_name": "Bob's"}, headers=bob)

    items, sizes = await _all_pages(client, alice, limit=3)
    assert sizes == [3, 3, 1]
    assert [p["persona_id"] for p in items] == sorted(p["persona_id"] for p in created)  # each once, in persona_id order
    assert items == sorted(created, key=lambda p: p["persona_id"])

    items, sizes = await _all_pages(client, alice)  # the default page holds them all
    assert sizes == [7] and len(items) == 7
    items, sizes = await _all_pages(client, alice, limit=7)  # a full last page: no empty page after it
    assert sizes == [7]

    # A token only names a position: another owner continuing from it sees their own personas only.
    first = (await client.get("/v1/personas", headers=alice, params={"limit": 1})).json()
    bobs = (await client.get("/v1/personas", headers=bob, params={"page_token": first["next_page_token"]})).json()
    assert all(p["display_name"] == "Bob's" for p in bobs["items"])


async def test_a_persona_deleted_between_pages_does_not_break_the_listing(client, alice):
    ids = sorted([(await client.post("/v1/personas", json={"display_name": f"P{i}"}, headers=alice)).json()["persona_id"] for i in range(4)])
    first = (await client.get("/v1/personas", headers=alice, params={"limit": 2})).json()
    assert (await client.delete(f"/v1/personas/{ids[1]}", headers=alice)).status_code == 204  # the page's last one
    rest = (await client.get("/v1/personas", headers=alice, params={"limit": 2, "page_token": first["next_page_token"]})).json()
    assert [p["persona_id"] for p in rest["items"]] == ids[2:] and rest["next_page_token"] is None


@pytest.mark.parametrize("params, code", [
    ({"limit": 0}, "validation_error"),
    ({"limit": 101}, "validation_error"),
    ({"limit": "ten"}, "validation_error"),
    ({"page_token": "not-a-token"}, "invalid_page_token"),
    ({"page_token": "eyJ2IjoxLCJhZnRlciI6Ii4uLyJ9"}, "invalid_page_token"),  # {"v":1,"after":"../"}: no persona id
    ({"page_token": "x" * 513}, "validation_error"),
], ids=["limit-0", "limit-101", "limit-not-a-number", "token-garbage", "token-bad-id", "token-too-long"])
async def test_a_bad_limit_or_page_token_is_422(client, alice, params, code):
    response = await client.get("/v1/personas", headers=alice, params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code


async def test_creating_past_the_owners_cap_answers_409_persona_limit_reached(settings, dynamodb, verifier, clock, alice, bob):
    app = create_app(settings.model_copy(update={"max_personas_per_owner": 2}),
                     clients=PersonaClients(dynamodb=dynamodb, verifier=verifier, clock=clock))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://persona") as c:
        first = (await c.post("/v1/personas", json={"display_name": "One"}, headers=alice)).json()
        assert (await c.post("/v1/personas", json={"display_name": "Two"}, headers=alice)).status_code == 201
        refused = await c.post("/v1/personas", json={"display_name": "Three"}, headers=alice)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "persona_limit_reached"
        assert "maximum of 2 personas" in refused.json()["error"]["message"]
        assert (await c.post("/v1/personas", json={"display_name": "Bob's"}, headers=bob)).status_code == 201  # per owner

        assert (await c.delete(f"/v1/personas/{first['persona_id']}", headers=alice)).status_code == 204
        assert (await c.post("/v1/personas", json={"display_name": "Three"}, headers=alice)).status_code == 201
        assert len((await c.get("/v1/personas", headers=alice)).json()["items"]) == 2
