"""local/bootstrap.py against a real moto server: the resources exist with the shapes the services
rely on, a second run changes nothing, and the bus routes each saga event to the right queue."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives import serialization
from faultproxy import local_module
from moto.server import ThreadedMotoServer

REGION = "eu-central-1"
local_bootstrap = local_module("bootstrap")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def env(endpoint: str) -> dict[str, dict[str, str]]:
    return local_bootstrap.bootstrap(endpoint, REGION)


def client(name: str, endpoint: str) -> Any:
    return boto3.client(name, region_name=REGION, endpoint_url=endpoint,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def put_event(endpoint: str, source: str, detail_type: str, session_id: str) -> None:
    result = client("events", endpoint).put_events(Entries=[{
        "EventBusName": "mf-events", "Source": source, "DetailType": detail_type,
        "Detail": json.dumps({"event_id": session_id, "data": {"session_id": session_id}})}])
    assert result["FailedEntryCount"] == 0


def drain(endpoint: str, queue_url: str) -> list[dict[str, Any]]:
    """Every message now in the queue, deleted, as parsed EventBridge envelopes."""
    sqs, envelopes = client("sqs", endpoint), []
    for _ in range(10):  # bounded: a queue here never holds more than a few messages
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not messages:
            break
        for message in messages:
            envelopes.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return envelopes


def test_each_service_gets_the_names_of_its_own_resources(env: dict[str, dict[str, str]], endpoint: str) -> None:
    assert env["auth"]["TABLE_NAME"] == "mf-auth"
    assert env["auth"]["JWT_SIGNING_SECRET_ID"] == "mf/auth/jwt-signing-key"
    assert env["persona"]["EVENT_SOURCE"] == "mf.persona" and env["vc-start"]["EVENT_SOURCE"] == "mf.vc-start"
    assert env["persona"]["QUEUE_URL"].endswith("/mf-persona-events")
    assert env["vc-start"]["QUEUE_URL"].endswith("/mf-vc-start-events")
    assert all(env[name]["AWS_ENDPOINT_URL"] == endpoint for name in ("auth", "persona", "vc-start"))
    assert "QUEUE_URL" not in env["auth"] and "EVENT_BUS_NAME" not in env["auth"]


def test_tables_have_the_shared_key_schema_and_ttl(env: dict[str, dict[str, str]], endpoint: str) -> None:
    dynamodb = client("dynamodb", endpoint)
    for name in ("mf-auth", "mf-persona", "mf-vc-start"):
        table = dynamodb.describe_table(TableName=name)["Table"]
        assert {(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]} == {("pk", "HASH"), ("sk", "RANGE")}
        ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")


def test_vc_starts_table_has_the_sweep_index_its_store_queries_as_cdk_json_declares_it(
        env: dict[str, dict[str, str]], endpoint: str) -> None:
    from vc_start.store import SWEEP_AT, SWEEP_INDEX, SWEEP_SHARD

    assert local_bootstrap.table_indexes("vc-start") == {SWEEP_INDEX: {"partition_key": SWEEP_SHARD, "sort_key": SWEEP_AT}}
    dynamodb = client("dynamodb", endpoint)
    (index,) = dynamodb.describe_table(TableName="mf-vc-start")["Table"]["GlobalSecondaryIndexes"]
    assert index["IndexName"] == SWEEP_INDEX and index["Projection"]["ProjectionType"] == "KEYS_ONLY"
    assert [(k["AttributeName"], k["KeyType"]) for k in index["KeySchema"]] == [(SWEEP_SHARD, "HASH"), (SWEEP_AT, "RANGE")]
    assert dynamodb.describe_table(TableName="mf-auth")["Table"].get("GlobalSecondaryIndexes", []) == []


def test_personas_table_has_the_holds_index_its_store_queries_keyed_by_a_number(
        env: dict[str, dict[str, str]], endpoint: str) -> None:
    from persona_service.store import HOLDS_INDEX

    assert local_bootstrap.table_indexes("persona") == {
        HOLDS_INDEX: {"partition_key": "persona_id", "sort_key": "hold_expires_at", "sort_key_type": "number"}}
    table = client("dynamodb", endpoint).describe_table(TableName="mf-persona")["Table"]
    (index,) = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == HOLDS_INDEX and index["Projection"]["ProjectionType"] == "KEYS_ONLY"
    assert [(k["AttributeName"], k["KeyType"]) for k in index["KeySchema"]] == [("persona_id", "HASH"), ("hold_expires_at", "RANGE")]
    # hold_expires_at is the number the store writes (epoch seconds): a string key would refuse every hold.
    assert {(a["AttributeName"], a["AttributeType"]) for a in table["AttributeDefinitions"]} == {
        ("pk", "S"), ("sk", "S"), ("persona_id", "S"), ("hold_expires_at", "N")}


def test_signing_key_secret_holds_a_usable_rsa_2048_key(env: dict[str, dict[str, str]], endpoint: str) -> None:
    document = json.loads(client("secretsmanager", endpoint).get_secret_value(
        SecretId=env["auth"]["JWT_SIGNING_SECRET_ID"])["SecretString"])
    key = serialization.load_pem_private_key(document["current"]["private_key_pem"].encode(), password=None)
    assert key.key_size == 2048
    assert document["current"]["kid"] and document["previous"] == []


def test_second_run_changes_nothing_and_keeps_the_signing_key(env: dict[str, dict[str, str]], endpoint: str) -> None:
    secrets = client("secretsmanager", endpoint)
    before = secrets.get_secret_value(SecretId="mf/auth/jwt-signing-key")["SecretString"]
    again = local_bootstrap.bootstrap(endpoint, REGION)
    assert again == env
    assert secrets.get_secret_value(SecretId="mf/auth/jwt-signing-key")["SecretString"] == before
    # Other tests' stacks share this process's moto state under other prefixes: count this one's only.
    assert len(client("sqs", endpoint).list_queues(QueueNamePrefix="mf-")["QueueUrls"]) == 4


@pytest.mark.parametrize(("source", "detail_type", "target"), [
    ("mf.vc-start", "SessionStarted", "persona"),
    ("mf.vc-start", "SessionCancelled", "persona"),
    ("mf.persona", "SlotConfirmed", "vc-start"),
    ("mf.persona", "SlotReleased", "vc-start"),
])
def test_bus_routes_each_saga_event_to_its_consumer_only(
        env: dict[str, dict[str, str]], endpoint: str, source: str, detail_type: str, target: str) -> None:
    other = "vc-start" if target == "persona" else "persona"
    put_event(endpoint, source, detail_type, "s-1")
    [envelope] = drain(endpoint, env[target]["QUEUE_URL"])
    assert (envelope["source"], envelope["detail-type"]) == (source, detail_type)
    assert envelope["detail"]["data"] == {"session_id": "s-1"}
    assert drain(endpoint, env[other]["QUEUE_URL"]) == []


def test_events_from_the_wrong_source_are_not_routed(env: dict[str, dict[str, str]], endpoint: str) -> None:
    put_event(endpoint, "mf.persona", "SessionStarted", "s-2")  # right type, wrong publisher
    put_event(endpoint, "mf.auth", "SlotConfirmed", "s-3")
    assert drain(endpoint, env["persona"]["QUEUE_URL"]) == []
    assert drain(endpoint, env["vc-start"]["QUEUE_URL"]) == []


def test_poison_message_moves_to_the_dlq_after_three_receives(env: dict[str, dict[str, str]], endpoint: str) -> None:
    sqs, queue_url = client("sqs", endpoint), env["persona"]["QUEUE_URL"]
    put_event(endpoint, "mf.vc-start", "SessionStarted", "poison")
    for _ in range(3):  # a consumer that fails: receive, never delete; expire the lease at once
        [message] = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)["Messages"]
        sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    assert sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0).get("Messages", []) == []
    [envelope] = drain(endpoint, env["resources"]["persona_dlq_url"])
    assert envelope["detail"]["event_id"] == "poison"
