"""Schema-based contract tests between the services (see services/contracts/README.md).

Events: every schema in contracts/events is valid JSON Schema 2020-12 and there is one per saga event;
each producer's real publish path (vc-start's saga and worker, persona's worker, servicekit's
EventPublisher) emits events whose detail matches the envelope schema and whose data matches the event's
schema, as they arrive in the consumer's queue via the bus rules of local/bootstrap.py; and each consumer
(the real QueueConsumer with the service's handlers) handles a minimal schema-valid example.

HTTP: the consumer expectations in contracts/http (what persona and vc-start rely on from auth) are met
by auth's OpenAPI schemas (structurally: types, constants, required fields) and by real auth answers.
"""

from __future__ import annotations

import base64
import copy
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faultproxy import PersonaGrpcThread, settings_for  # noqa: E402

import persona_service.worker as persona_worker  # noqa: E402
import vc_start.events as vc_events  # noqa: E402
import vc_start.worker as vc_worker  # noqa: E402
from persona_service.settings import PersonaSettings  # noqa: E402
from servicekit import aws  # noqa: E402
from servicekit.auth import JwksVerifier  # noqa: E402
from servicekit.correlation import correlation_scope  # noqa: E402
from servicekit.events import EventPublisher  # noqa: E402
from servicekit.resilience import ResilientHttpClient  # noqa: E402
from vc_start.models import SessionStatus  # noqa: E402
from vc_start.persona import GrpcPersonaClient, PersonaUnavailableError  # noqa: E402
from vc_start.saga import StartSessionSaga  # noqa: E402
from vc_start.settings import VcStartSettings  # noqa: E402
from vc_start.store import SessionStore  # noqa: E402

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts"
EVENT_SCHEMAS = sorted((CONTRACTS / "events").glob("*.schema.json"))
HTTP_SCHEMAS = sorted((CONTRACTS / "http").glob("*.schema.json"))
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
# detail-type -> (producer, consumer): the saga's choreography (services spec, "The saga").
SAGA_EVENTS = {
    vc_events.SESSION_STARTED: ("vc-start", "persona"),
    vc_events.SESSION_CANCELLED: ("vc-start", "persona"),
    vc_events.SLOT_CONFIRMED: ("persona", "vc-start"),
    vc_events.SLOT_RELEASED: ("persona", "vc-start"),
}
QUIET = {"log_level": "WARNING"}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def validator(path: Path) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load(path), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


# --- the schemas themselves ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EVENT_SCHEMAS + HTTP_SCHEMAS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_contract_schema_is_valid_json_schema_2020_12(path):
    schema = load(path)
    assert schema.get("$schema") == DRAFT_2020_12
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema.get("title") and schema.get("description")


def test_every_saga_event_has_exactly_one_schema():
    named = {path.name.removesuffix(".schema.json") for path in EVENT_SCHEMAS} - {"envelope"}
    assert named == set(SAGA_EVENTS)
    # The names the code publishes and subscribes to are the same ones.
    assert set(SAGA_EVENTS) == {persona_worker.SESSION_STARTED, persona_worker.SESSION_CANCELLED, persona_worker.SLOT_CONFIRMED,
                                persona_worker.SLOT_RELEASED}


# --- the services, on a moto server set up by local/bootstrap.py ----------------------------------------


@pytest.fixture(scope="module")
def persona_settings(env, auth) -> PersonaSettings:
    return settings_for(PersonaSettings, env["persona"], auth_url=auth.url, queue_wait_seconds=0, **QUIET)


@pytest.fixture(scope="module")
def persona_grpc(persona_settings):
    server = PersonaGrpcThread(persona_settings)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def vc_settings(env, auth, persona_grpc) -> VcStartSettings:
    return settings_for(VcStartSettings, env["vc-start"], auth_url=auth.url, persona_grpc_target=persona_grpc.target, queue_wait_seconds=0, **QUIET)


@pytest.fixture(scope="module")
def consumers(persona_settings, vc_settings) -> dict[str, Any]:
    """Each service's real QueueConsumer (its worker's handlers), by service."""
    return {"persona": persona_worker.build_consumer(persona_settings), "vc-start": vc_worker.build_consumer(vc_settings)}


@pytest.fixture(scope="module")
def queues(persona_settings, vc_settings) -> dict[str, str]:
    return {"persona": persona_settings.queue_url, "vc-start": vc_settings.queue_url}


@pytest.fixture(scope="module")
def sqs(vc_settings):
    return aws.client("sqs", vc_settings)


@pytest.fixture(autouse=True)
def empty_queues(request):
    """Each test starts with both saga queues empty (only for tests that use them)."""
    if "queues" in request.fixturenames:
        sqs, queues = request.getfixturevalue("sqs"), request.getfixturevalue("queues")
        for url in queues.values():
            for message in _receive(sqs, url):
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def _receive(sqs, url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for _ in range(20):  # bounded; the bus delivers synchronously in moto, so the messages are there
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=30).get("Messages", [])
        if not batch:
            break
        found += batch
    return found


ENVELOPE = validator(CONTRACTS / "events" / "envelope.schema.json")
DATA = {name: validator(CONTRACTS / "events" / f"{name}.schema.json") for name in SAGA_EVENTS}


def take(sqs, queues, env, consumer: str) -> dict[str, list[dict[str, Any]]]:
    """The messages now in `consumer`'s queue, by detail-type, each checked against the contract:
    envelope, data schema, and the producer's EVENT_SOURCE. They stay unacknowledged for the consumer."""
    by_type: dict[str, list[dict[str, Any]]] = {}
    for message in _receive(sqs, queues[consumer]):
        event = json.loads(message["Body"])
        detail_type = event["detail-type"]
        producer, expected_consumer = SAGA_EVENTS[detail_type]
        assert expected_consumer == consumer, f"{detail_type} routed to {consumer}"
        assert event["source"] == env[producer]["EVENT_SOURCE"]
        detail = event["detail"]
        ENVELOPE.validate(detail)
        DATA[detail_type].validate(detail["data"])
        by_type.setdefault(detail_type, []).append(message)
    return by_type


def data_of(message: dict[str, Any]) -> dict[str, Any]:
    return json.loads(message["Body"])["detail"]["data"]


def saga(vc_settings, persona_client) -> StartSessionSaga:
    store = SessionStore(aws.client("dynamodb", vc_settings), vc_settings.table_name)
    return StartSessionSaga(persona=persona_client, publisher=EventPublisher(vc_settings), store=store)


# --- producers -------------------------------------------------------------------------------------------


async def test_session_saga_events_conform_in_flight(env, sqs, queues, consumers, vc_settings, persona_grpc, caller):
    token, user_id = caller
    persona = persona_grpc.store.create(user_id, "Ada", {}, 2)
    client = GrpcPersonaClient(persona_grpc.target, vc_settings)
    try:
        with correlation_scope("contract-happy-path"):
            session = await saga(vc_settings, client).start(persona_id=persona.persona_id, user_id=user_id, token=token,
                session_id=str(uuid.uuid4()))
    finally:
        await client.close()
    assert session.status is SessionStatus.PENDING

    # vc-start's saga -> SessionStarted -> persona's worker ...
    started = take(sqs, queues, env, "persona")
    assert list(started) == ["SessionStarted"] and len(started["SessionStarted"]) == 1
    assert data_of(started["SessionStarted"][0]) == {"session_id": session.session_id, "persona_id": persona.persona_id, "user_id": user_id}
    assert (await consumers["persona"].process(started["SessionStarted"]))["handled"] == 1

    # ... -> SlotConfirmed -> vc-start's worker, which activates the session.
    confirmed = take(sqs, queues, env, "vc-start")
    assert list(confirmed) == ["SlotConfirmed"]
    assert (await consumers["vc-start"].process(confirmed["SlotConfirmed"]))["handled"] == 1
    stored = await SessionStore(aws.client("dynamodb", vc_settings), vc_settings.table_name).get(session.session_id)
    assert stored.status is SessionStatus.ACTIVE


class ReserveTimesOut(GrpcPersonaClient):
    """The real client, except that ReserveSlot's outcome is unknown (as after a deadline)."""

    async def reserve_slot(self, persona_id: str, session_id: str, *, token: str) -> None:
        raise PersonaUnavailableError("ReserveSlot: DEADLINE_EXCEEDED")


async def test_compensation_events_conform_in_flight(env, sqs, queues, consumers, vc_settings, persona_settings, persona_grpc, caller):
    token, user_id = caller
    persona = persona_grpc.store.create(user_id, "Bob", {}, 1)
    client = ReserveTimesOut(persona_grpc.target, vc_settings)
    try:
        session = await saga(vc_settings, client).start(persona_id=persona.persona_id, user_id=user_id, token=token,
            session_id=str(uuid.uuid4()))
    finally:
        await client.close()
    assert (session.status, session.reason) == (SessionStatus.CANCELLED, "persona_unavailable")

    # The saga's compensation: SessionCancelled -> persona releases -> SlotReleased -> vc-start (already cancelled).
    cancelled = take(sqs, queues, env, "persona")
    assert list(cancelled) == ["SessionCancelled"]
    assert data_of(cancelled["SessionCancelled"][0])["reason"] == "persona_unavailable"
    assert (await consumers["persona"].process(cancelled["SessionCancelled"]))["handled"] == 1
    released = take(sqs, queues, env, "vc-start")
    assert list(released) == ["SlotReleased"]
    assert data_of(released["SlotReleased"][0])["reason"] == "persona_unavailable"
    assert (await consumers["vc-start"].process(released["SlotReleased"]))["handled"] == 1

    # vc-start's worker compensates a slot confirmed for that cancelled session with SessionCancelled.
    await EventPublisher(persona_settings).publish("SlotConfirmed", {"session_id": session.session_id, "persona_id": persona.persona_id})
    late = take(sqs, queues, env, "vc-start")
    assert (await consumers["vc-start"].process(late["SlotConfirmed"]))["handled"] == 1
    compensation = take(sqs, queues, env, "persona")
    assert list(compensation) == ["SessionCancelled"]
    assert data_of(compensation["SessionCancelled"][0]) == {
        "session_id": session.session_id,
        "persona_id": persona.persona_id,
        "reason": "persona_unavailable",
    }


# --- consumers ---------------------------------------------------------------------------------------------


def minimal_example(detail_type: str) -> dict[str, Any]:
    """Only the required fields, with the smallest values the schema allows."""
    data: dict[str, Any] = {"session_id": str(uuid.uuid4()), "persona_id": "p"}
    if detail_type == "SessionStarted":
        data["user_id"] = "u"
    if detail_type in ("SessionCancelled", "SlotReleased"):
        data["reason"] = "x"
    return data


@pytest.mark.parametrize("detail_type", list(SAGA_EVENTS))
async def test_consumer_handles_a_minimal_schema_valid_event(detail_type, env, sqs, queues, consumers, persona_settings, vc_settings):
    data = minimal_example(detail_type)
    schema = load(CONTRACTS / "events" / f"{detail_type}.schema.json")
    assert set(data) == set(schema["required"])
    DATA[detail_type].validate(data)

    producer, consumer = SAGA_EVENTS[detail_type]
    publisher = EventPublisher(persona_settings if producer == "persona" else vc_settings)
    await publisher.publish(detail_type, data)
    delivered = take(sqs, queues, env, consumer)[detail_type]
    stats = await consumers[consumer].process(delivered)
    assert stats["handled"] == 1, stats
    # Whatever the consumer answers with conforms too: persona reports that it holds nothing for the session.
    replies = take(sqs, queues, env, producer)
    if consumer == "persona":
        assert list(replies) == ["SlotReleased"] and data_of(replies["SlotReleased"][0])["session_id"] == data["session_id"]
    else:
        assert replies == {}


# --- HTTP: what persona and vc-start rely on from auth -----------------------------------------------------


def _pointer(root: dict[str, Any], ref: str) -> Any:
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _deref(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = _pointer(root, node["$ref"])
    return node


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null", list: "array", dict: "object"}[type(value)]


def _types(node: dict[str, Any]) -> set[str] | None:
    if "type" in node:
        return {node["type"]} if isinstance(node["type"], str) else set(node["type"])
    if "const" in node:
        return {_json_type(node["const"])}
    if "enum" in node:
        return {_json_type(v) for v in node["enum"]}
    return None


def incompatibilities(consumer: dict, provider: dict, consumer_root: dict, provider_root: dict, where: str = "$") -> list[str]:
    """How a document the provider's schema allows could break what the consumer's schema relies on.

    Structural: types, constants/enums, required properties and array items, through $ref, anyOf and oneOf.
    Value limits (patterns, lengths, minItems) are not compared: real answers are validated against them.
    """
    c, p = _deref(consumer, consumer_root), _deref(provider, provider_root)
    if branches := p.get("anyOf") or p.get("oneOf"):  # everything the provider may send must be acceptable
        return [problem for branch in branches for problem in incompatibilities(c, branch, consumer_root, provider_root, where)]
    if options := c.get("anyOf") or c.get("oneOf"):  # acceptable if any alternative accepts it
        tried = [incompatibilities(option, p, consumer_root, provider_root, where) for option in options]
        return [] if any(not problems for problems in tried) else min(tried, key=len)

    problems = []
    wanted, promised = _types(c), _types(p)
    if wanted is not None:
        if promised is None:
            problems.append(f"{where}: consumer needs {sorted(wanted)}, provider promises any type")
        elif extra := {t for t in promised if t not in wanted and not (t == "integer" and "number" in wanted)}:
            problems.append(f"{where}: provider may send {sorted(extra)}, consumer accepts {sorted(wanted)}")
    accepted = [c["const"]] if "const" in c else c.get("enum")
    if accepted is not None:
        sent = [p["const"]] if "const" in p else p.get("enum")
        if sent is None or any(value not in accepted for value in sent):
            problems.append(f"{where}: consumer accepts only {accepted}, provider promises {sent if sent is not None else 'any value'}")
    provider_required, provider_properties = set(p.get("required", ())), p.get("properties", {})
    for name in c.get("required", ()):
        if name not in provider_required:
            problems.append(f"{where}.{name}: required by the consumer, not guaranteed by the provider")
    for name, sub in c.get("properties", {}).items():
        if name in provider_properties:
            problems += incompatibilities(sub, provider_properties[name], consumer_root, provider_root, f"{where}.{name}")
    if "items" in c:
        if "items" not in p:
            problems.append(f"{where}[]: provider does not describe the items")
        else:
            problems += incompatibilities(c["items"], p["items"], consumer_root, provider_root, f"{where}[]")
    return problems


@pytest.fixture(scope="module")
def auth_openapi(auth) -> dict[str, Any]:
    with httpx.Client(base_url=auth.url, timeout=10) as http:
        return http.get("/openapi.json").raise_for_status().json()


@pytest.mark.parametrize("path", HTTP_SCHEMAS, ids=lambda p: p.name)
def test_auth_openapi_meets_the_consumer_expectation(path, auth_openapi):
    expectation = load(path)
    provider = expectation["x-provider"]
    assert provider["service"] == "auth"
    promised = _pointer(auth_openapi, provider["openapi"])
    assert incompatibilities(expectation, promised, expectation, auth_openapi) == []


def test_the_compatibility_check_reports_a_breaking_provider_change(auth_openapi):
    broken = copy.deepcopy(auth_openapi)
    jwk = broken["components"]["schemas"]["Jwk"]
    jwk["required"].remove("kid")  # kid becomes optional ...
    jwk["properties"]["kty"]["const"] = "EC"  # ... and the keys are no longer RSA
    expectation = load(CONTRACTS / "http" / "auth-jwks.schema.json")
    problems = incompatibilities(expectation, _pointer(broken, expectation["x-provider"]["openapi"]), expectation, broken)
    assert any(".kid: required by the consumer" in p for p in problems), problems
    assert any(".kty: consumer accepts only ['RSA']" in p for p in problems), problems


def _segment(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


async def test_real_jwks_and_token_meet_the_consumer_expectations(auth, caller):
    token, user_id = caller
    with httpx.Client(base_url=auth.url, timeout=10) as http:
        jwks = http.get("/.well-known/jwks.json").raise_for_status().json()
    validator(CONTRACTS / "http" / "auth-jwks.schema.json").validate(jwks)
    claims, header = _segment(token, 1), _segment(token, 0)
    validator(CONTRACTS / "http" / "auth-access-token-claims.schema.json").validate(claims)
    assert header["alg"] == "RS256" and header["kid"] in {key["kid"] for key in jwks["keys"]}

    # And the consumers' own verifier accepts what auth issues.
    async with ResilientHttpClient(auth.url, name="auth-jwks", settings=VcStartSettings(**QUIET)) as jwks_http:
        verifier = JwksVerifier(auth.url + "/.well-known/jwks.json", issuer="mf-auth", audience="mf-services", http=jwks_http)
        assert (await verifier.verify(token))["sub"] == user_id


def test_real_login_answer_meets_the_consumer_expectation(auth):
    username, password = "contract-" + uuid.uuid4().hex[:8], "correct horse battery"
    with httpx.Client(base_url=auth.url, timeout=10) as http:
        assert http.post("/v1/users", json={"username": username, "password": password}).status_code == 201
        answer = http.post("/v1/tokens", json={"username": username, "password": password})
    assert answer.status_code == 200
    validator(CONTRACTS / "http" / "auth-token-response.schema.json").validate(answer.json())
