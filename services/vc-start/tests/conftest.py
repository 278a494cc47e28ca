"""Fixtures for vc-start's unit tests: moto (in-process) for DynamoDB, EventBridge and SQS, the real
servicekit clients against it, a fake persona (the real one is another service), and signed tokens."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from moto import mock_aws
from servicekit import aws
from servicekit.auth import JwksVerifier
from servicekit.events import EventPublisher
from servicekit.idempotency import IdempotencyStore
from servicekit.resilience import ResilientHttpClient
from vc_start.app import Clients, create_app
from vc_start.persona import PersonaInfo, PersonaNotFoundError, ReservationStatus, SlotReservation
from vc_start.settings import VcStartSettings
from vc_start.store import SessionStore


REGION = "us-east-1"
TABLE = "mf-vc-start"
BUS = "mf-events"
ISSUER, AUDIENCE, KID = "mf-auth", "mf-services", "test-key-1"
CONTRACTS = Path(__file__).resolve().parents[2] / "contracts" / "events"


# --- AWS (moto) ------------------------------------------------------------------------------------


@pytest.fixture
def aws_env(monkeypatch):
    """Fake credentials, and no endpoint override: boto3 must talk to the in-process moto only."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield


def _queue(sqs, name: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def _route(events, name: str, source: str, detail_types: list[str], queue_arn: str) -> None:
    events.put_rule(Name=name, EventBusName=BUS, EventPattern=json.dumps({"source": [source], "detail-type": detail_types}))
    events.put_targets(Rule=name, EventBusName=BUS, Targets=[{"Id": "queue", "Arn": queue_arn}])


# servicekit caches boto3 clients per settings object, and each takes ~0.2 s to build; moto intercepts a client
# whichever mock_aws context built it, so the tests share one set (each test still gets a fresh moto backend).
_SHARED_AWS_CLIENTS: dict = {}


@pytest.fixture
def settings(aws_env, local_bootstrap) -> VcStartSettings:
    """Settings for the tests, and the infrastructure they name (as local/bootstrap.py creates it): vc-start's
    table, the bus, and the two queues with the saga's routing rules."""
    settings = VcStartSettings(
        aws_region=REGION,
        table_name=TABLE,
        event_bus_name=BUS,
        event_source="mf.vc-start",
        queue_wait_seconds=0,
        http_timeout_seconds=0.3,
        call_budget_seconds=2.0,
        retry_attempts=2,
        retry_backoff_seconds=0.0,
        retry_backoff_max_seconds=0.0,
    )
    settings._aws_clients.update(_SHARED_AWS_CLIENTS)
    for name in ("dynamodb", "events", "sqs"):
        _SHARED_AWS_CLIENTS[("client", name)] = aws.client(name, settings)
    aws.client("dynamodb", settings).create_table(**local_bootstrap.table_definition(TABLE, local_bootstrap.table_indexes("vc-start")))
    events, sqs = aws.client("events", settings), aws.client("sqs", settings)
    events.create_event_bus(Name=BUS)
    _, persona_arn = _queue(sqs, "mf-persona-events")
    settings.queue_url, vc_arn = _queue(sqs, "mf-vc-start-events")
    _route(events, "vc-start-to-persona", "mf.vc-start", ["SessionStarted", "SessionCancelled"], persona_arn)
    _route(events, "persona-to-vc-start", "mf.persona", ["SlotConfirmed", "SlotReleased"], vc_arn)
    return settings


class Clock:
    """time.time stand-in that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(settings, clock) -> SessionStore:
    """The session store on the test clock, with the configured pending timeout."""
    return SessionStore(
        aws.client("dynamodb", settings), TABLE, pending_timeout_seconds=settings.session_pending_timeout_seconds, clock=clock
    )


@pytest.fixture
def publisher(settings) -> EventPublisher:
    return EventPublisher(settings)


@pytest.fixture
def broken_publisher(settings) -> EventPublisher:
    """The real publisher pointed at a bus that does not exist: PutEvents fails."""
    return EventPublisher(settings, bus_name="no-such-bus")


@pytest.fixture
def session_items(settings):
    """Session items in the table (a test-only Scan)."""

    def read() -> list[dict[str, Any]]:
        items = aws.client("dynamodb", settings).scan(TableName=TABLE)["Items"]
        return [i for i in items if i["pk"]["S"].startswith("SESSION#")]

    return read


@pytest.fixture
def persona_events(settings):
    """Events vc-start published, as persona's queue receives them: [(detail_type, detail)]."""
    sqs = aws.client("sqs", settings)
    queue = sqs.get_queue_url(QueueName="mf-persona-events")["QueueUrl"]

    def read() -> list[tuple[str, dict[str, Any]]]:
        found = []
        while True:
            messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return found
            for message in messages:
                body = json.loads(message["Body"])
                found.append((body["detail-type"], body["detail"]))
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])

    return read


@pytest.fixture
def deliver(settings, validate_event):
    """Put a persona event on vc-start's queue exactly as the bus delivers it; `times` > 1 simulates redelivery."""
    sqs = aws.client("sqs", settings)
    persona = EventPublisher(settings, source="mf.persona")

    def send(detail_type: str, data: dict[str, Any], *, times: int = 1) -> str:
        detail = persona.envelope(data)
        validate_event(detail_type, detail)
        body = json.dumps(
            {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": detail_type,
                "source": "mf.persona",
                "time": detail["occurred_at"],
                "region": REGION,
                "resources": [],
                "detail": detail,
            }
        )
        for _ in range(times):
            sqs.send_message(QueueUrl=settings.queue_url, MessageBody=body)
        return detail["event_id"]

    return send


# --- contracts -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def validate_event():
    """validate(detail_type, detail): the envelope and its data against services/contracts/events/."""

    def validator(name: str) -> jsonschema.Draft202012Validator:
        schema = json.loads((CONTRACTS / f"{name}.schema.json").read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)

    envelope = validator("envelope")
    # vc-start's own events, and persona's that the worker consumes (so the tests feed it only contract-conformant ones).
    validators = {name: validator(name) for name in ("SessionStarted", "SessionCancelled", "SlotConfirmed", "SlotReleased")}

    def validate(detail_type: str, detail: dict[str, Any]) -> None:
        envelope.validate(detail)
        validators[detail_type].validate(detail["data"])

    return validate


# --- persona (fake) ----------------------------------------------------------------------------------


class FakePersona:
    """PersonaClient double: knows some personas, records every call, fails a call when told to."""

    def __init__(self) -> None:
        self.personas = {"p-1": PersonaInfo("p-1", "Ada", 1, 0)}
        self.calls: list[tuple[str, ...]] = []
        self.errors: dict[str, Exception] = {}  # method name -> exception to raise
        self.reservations: dict[str, SlotReservation] = {}  # session id -> what ReserveSlot answers (default HELD)

    def _maybe_fail(self, method: str) -> None:
        if method in self.errors:
            raise self.errors[method]

    def called(self, method: str) -> list[tuple[str, ...]]:
        return [c for c in self.calls if c[0] == method]

    async def get_persona(self, persona_id: str, *, token: str) -> PersonaInfo:
        self.calls.append(("get_persona", persona_id, token))
        self._maybe_fail("get_persona")
        if persona_id not in self.personas:
            raise PersonaNotFoundError(f"GetPersona: {persona_id} not found")
        return self.personas[persona_id]

    async def reserve_slot(self, persona_id: str, session_id: str, *, token: str) -> SlotReservation:
        self.calls.append(("reserve_slot", persona_id, session_id, token))
        self._maybe_fail("reserve_slot")
        return self.reservations.get(session_id, SlotReservation(ReservationStatus.HELD))

    async def release_slot(self, persona_id: str, session_id: str, reason: str, *, token: str) -> None:
        self.calls.append(("release_slot", persona_id, session_id, reason, token))
        self._maybe_fail("release_slot")


@pytest.fixture
def persona() -> FakePersona:
    return FakePersona()


# --- tokens and the app ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def signing_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def jwks(signing_key) -> dict[str, Any]:
    public_pem = signing_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(serialization.load_pem_public_key(public_pem)))
    return {"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "RS256"}]}


@pytest.fixture(scope="session")
def make_token(signing_key):
    def make(sub: str = "user-1", **overrides: Any) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "username": sub, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
        claims.update(overrides)
        return jwt.encode(claims, signing_key, algorithm="RS256", headers={"kid": KID})

    return make


@pytest.fixture
def make_clients(settings, store, publisher, persona, jwks):
    """make_clients(**overrides) -> the app's Clients: the real verifier (auth's JWKS endpoint is served by an
    httpx mock transport), store, publisher and idempotency on moto, the fake persona."""

    def make(**overrides: Any) -> Clients:
        transport = httpx.MockTransport(lambda request: httpx.Response(200, json=jwks))
        auth_http = ResilientHttpClient("http://auth.test", name="auth", settings=settings, transport=transport)
        clients = {
            "store": store,
            "persona": persona,
            "publisher": publisher,
            "verifier": JwksVerifier(settings.jwks_url, issuer=ISSUER, audience=AUDIENCE, http=auth_http),
            "idempotency": IdempotencyStore(settings, TABLE),
        }
        return Clients(**{**clients, **overrides})

    return make


@pytest.fixture
def app(settings, make_clients):
    """The real app on the clients above."""
    return create_app(settings, clients=make_clients())


@pytest.fixture
async def http(app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://vc-start.test") as client:
        yield client
