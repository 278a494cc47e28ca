"""persona test fixtures: moto DynamoDB, a real JWKS endpoint on 127.0.0.1 and tokens signed by a test RSA key."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from moto import mock_aws
from persona_service.settings import PersonaSettings
from persona_service.store import PersonaStore

ISSUER = "mf-auth"
AUDIENCE = "mf-services"
KID = "persona-test-key"
TABLE = "mf-persona-test"
REGION = "us-east-1"


class FakeClock:
    """Epoch seconds the tests move forward to expire holds without sleeping."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def signing_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def jwks_url(signing_key):
    """auth's JWKS as a real HTTP endpoint, so the verifier fetches keys the way it does in production."""
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key()))
    jwk.update(kid=KID, use="sig", alg="RS256")
    body = json.dumps({"keys": [jwk]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, payload = (200, body) if self.path == "/.well-known/jwks.json" else (404, b"{}")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def make_token(signing_key):
    def make(sub: str = "user-a", *, key=None, kid: str = KID, **claims) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "username": sub, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
        payload.update(claims)
        return jwt.encode(payload, key or signing_key, algorithm="RS256", headers={"kid": kid})

    return make


_FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


def _fake_aws_env(mp: pytest.MonkeyPatch) -> None:
    for name, value in _FAKE_AWS_ENV.items():
        mp.setenv(name, value)
    mp.delenv("AWS_ENDPOINT_URL", raising=False)  # moto only intercepts AWS's own endpoints


@pytest.fixture(scope="session")
def aws_clients():
    """boto3 clients built once (that costs ~0.1 s each); moto intercepts them inside each test's mock_aws()."""
    with pytest.MonkeyPatch.context() as mp:  # only while building: other suites keep their environment
        _fake_aws_env(mp)
        return {name: boto3.client(name, region_name=REGION) for name in ("dynamodb", "sqs")}


@pytest.fixture
def dynamodb(aws_clients, monkeypatch, local_bootstrap):
    _fake_aws_env(monkeypatch)  # for clients servicekit builds from the settings
    with mock_aws():  # fresh, empty AWS state per test
        client = aws_clients["dynamodb"]
        # As the app creates it: with the holds index cdk.json declares.
        client.create_table(**local_bootstrap.table_definition(TABLE, local_bootstrap.table_indexes("persona")))
        client.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})
        yield client


@pytest.fixture
def cancel_transactions(answer_instead):
    """cancel_transactions(*reasons, times=None) -> Answered: DynamoDB cancels the next `times` (None: every)
    TransactWriteItems with these cancellation reason codes, one per item ("None": that item was fine), as it does while
    it throttles (ThrottlingError, ProvisionedThroughputExceeded) or on a conflict (TransactionConflict); moto never
    does. Answered.sent counts the transactions sent."""

    def cancel(*reasons: str, times: int | None = None):
        answer = {
            "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
            "Message": f"Transaction cancelled, please refer cancellation reasons for specific reasons [{', '.join(reasons)}]",
            "CancellationReasons": [{"Code": code} for code in reasons],
        }
        return answer_instead("TransactWriteItems", answer, times=times)

    return cancel


@pytest.fixture
def sqs(aws_clients, dynamodb):
    return aws_clients["sqs"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(dynamodb, clock) -> PersonaStore:
    return PersonaStore(dynamodb, TABLE, hold_seconds=120, clock=clock)


@pytest.fixture
def table_name(dynamodb) -> str:
    return TABLE


@pytest.fixture
def make_store(dynamodb, clock):
    """make_store(table=TABLE, **options) -> a PersonaStore with other options on the test table (or another)."""
    return lambda table=TABLE, **options: PersonaStore(dynamodb, table, hold_seconds=120, clock=clock, **options)


@pytest.fixture
def table_without_index(dynamodb, local_bootstrap) -> str:
    """A persona table as the app created it before the holds index (pk/sk only, TTL on expires_at)."""
    name = "mf-persona-before-index"
    dynamodb.create_table(**local_bootstrap.table_definition(name, {}))
    dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})
    return name


@pytest.fixture
def settings(jwks_url) -> PersonaSettings:
    auth_url = jwks_url.removesuffix("/.well-known/jwks.json")
    return PersonaSettings(
        table_name=TABLE,
        aws_region=REGION,
        aws_endpoint_url=None,  # moto, not whatever the shell points AWS_ENDPOINT_URL at
        auth_url=auth_url,
        instrumentation=False,
        log_level="WARNING",
        event_bus_name="mf-events-test",
        event_source="mf.persona",
        reservation_hold_seconds=120,
        http_timeout_seconds=1.0,
        call_budget_seconds=2.0,
    )


@pytest.fixture
async def verifier(settings):
    from servicekit.auth import JwksVerifier
    from servicekit.resilience import ResilientHttpClient

    http = ResilientHttpClient(settings.auth_url, name="auth-jwks", settings=settings)
    yield JwksVerifier(settings.jwks_url, issuer=ISSUER, audience=AUDIENCE, http=http)
    await http.aclose()


class DynamoReads:
    """What a block of code read from DynamoDB through one client, seen through botocore's call hooks: each call's
    operation and index, and the items DynamoDB read for it (a Query's ScannedCount, which counts the items a
    FilterExpression drops too; a GetItem's item; a BatchGetItem's items). That is what DynamoDB bills and what
    the call's latency grows with."""

    def __init__(self, client) -> None:
        self._events = client.meta.events
        self.calls: list[tuple[str, str | None]] = []
        self.items = 0

    def _before(self, model, params, **kwargs) -> None:
        self.calls.append((model.name, params.get("IndexName")))

    def _after(self, model, parsed, **kwargs) -> None:
        if model.name == "Query":
            self.items += parsed.get("ScannedCount", 0)
        elif model.name == "GetItem":
            self.items += "Item" in parsed
        elif model.name == "BatchGetItem":
            self.items += sum(len(found) for found in parsed.get("Responses", {}).values())

    def __enter__(self) -> DynamoReads:
        self._events.register("before-parameter-build.dynamodb", self._before, unique_id=f"reads-before-{id(self)}")
        self._events.register("after-call.dynamodb", self._after, unique_id=f"reads-after-{id(self)}")
        return self

    def __exit__(self, *exc) -> None:
        self._events.unregister("before-parameter-build.dynamodb", unique_id=f"reads-before-{id(self)}")
        self._events.unregister("after-call.dynamodb", unique_id=f"reads-after-{id(self)}")


@pytest.fixture
def dynamodb_reads(dynamodb):
    """dynamodb_reads() -> DynamoReads: use as a context manager around the calls to measure."""
    return lambda: DynamoReads(dynamodb)
