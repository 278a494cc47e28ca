"""Create in a running moto server (or any AWS-compatible endpoint) everything the three services
need: their tables, auth's JWT signing key, the event bus, the two event queues with their
dead-letter queues, and the bus rules routing the saga's events. Idempotent: running it twice
changes nothing (the signing key in particular is kept, so tokens already issued stay valid).

    from bootstrap import bootstrap
    env = bootstrap("http://127.0.0.1:5000")
    env["persona"]  # {"TABLE_NAME": "mf-persona", "QUEUE_URL": ..., ...}: the persona process's env

Used by run_local.py, the benchmark and the cross-service tests. The CDK app creates the same
resources in AWS; the names below are the local ones from the spec.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# moto accepts any credentials; real ones must never be picked up from the caller's environment.
DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
SERVICES = ("auth", "persona", "vc-start")
# The app's config: each service's table indexes are created here as the CDK app creates them.
CDK_JSON = Path(__file__).resolve().parents[2] / "cdk.json"


def table_indexes(service: str) -> dict[str, dict[str, str]]:
    """cdk.json's ``services.<service>.table_indexes``: index name -> {partition_key, sort_key[, sort_key_type]}."""
    services = json.loads(CDK_JSON.read_text())["context"]["services"]
    return services[service].get("table_indexes", {})


def table_definition(name: str, indexes: dict[str, dict[str, str]]) -> dict[str, Any]:
    """CreateTable's arguments for a service table as the app's ServiceData makes it: pk/sk strings, on demand,
    and KEYS_ONLY global secondary indexes with a string partition key and a string or number (``sort_key_type``)
    sort key (TTL is a separate call)."""
    types = {"pk": "S", "sk": "S"}
    for index in indexes.values():
        types[index["partition_key"]] = "S"
        types[index["sort_key"]] = "N" if index.get("sort_key_type") == "number" else "S"
    secondary = [{"IndexName": index_name, "Projection": {"ProjectionType": "KEYS_ONLY"},
                  "KeySchema": [{"AttributeName": index["partition_key"], "KeyType": "HASH"},
                                {"AttributeName": index["sort_key"], "KeyType": "RANGE"}]}
                 for index_name, index in indexes.items()]
    return {"TableName": name, "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": key, "AttributeType": types[key]} for key in sorted(types)],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            **({"GlobalSecondaryIndexes": secondary} if secondary else {})}


@dataclass(frozen=True)
class Route:
    """Events of ``detail_types`` published by ``source_service`` go to ``target_service``'s queue."""

    source_service: str
    detail_types: tuple[str, ...]
    target_service: str


# The saga's choreography (spec "The saga"): vc-start tells persona, persona answers vc-start.
ROUTES = (
    Route("vc-start", ("SessionStarted", "SessionCancelled"), "persona"),
    Route("persona", ("SlotConfirmed", "SlotReleased"), "vc-start"),
)


def bootstrap(endpoint_url: str, region: str = "eu-central-1", prefix: str = "mf", *,
              visibility_timeout_seconds: int = 5, max_receive_count: int = 3) -> dict[str, dict[str, str]]:
    """Create (or find) every resource and return the environment each service needs.

    Returns ``{"auth": env, "persona": env, "vc-start": env, "resources": {...}}``: each ``env``
    holds the variables of that service's HTTP process and of its worker (AWS_REGION,
    AWS_ENDPOINT_URL, TABLE_NAME, and as needed JWT_SIGNING_SECRET_ID, EVENT_BUS_NAME,
    EVENT_SOURCE, QUEUE_URL); ``resources`` names the rest (bus ARN, queue and DLQ URLs and ARNs,
    rule names) for tests and tools. A failed message comes back after servicekit's backoff, not after
    the visibility timeout: EVENT_RETRY_BACKOFF_SECONDS (10 s by default) times its receive count, so
    under ``make run-local`` a poison message reaches its DLQ after ``max_receive_count`` receives in
    about a minute (10 + 20 + 30 s); the tests set EVENT_RETRY_BACKOFF_SECONDS=1 to make it seconds
    (tests/harness.py). The short visibility timeout brings back within seconds a message whose worker
    died before it could say when. It is shorter than servicekit's claim lease (the app's queues: 150 s
    against 120 s): a worker killed mid-event here costs that event a receive or two (each redelivery
    finds the claim busy and is set visible again when the lease ends), which the app's longer timeout
    avoids.
    """
    aws = _Aws(endpoint_url, region)
    resources: dict[str, str] = {}
    env: dict[str, dict[str, str]] = {
        name: {"AWS_REGION": region, "AWS_ENDPOINT_URL": endpoint_url} for name in SERVICES}

    for name in SERVICES:
        env[name]["TABLE_NAME"] = aws.table(f"{prefix}-{name}", table_indexes(name))

    secret_id = f"{prefix}/auth/jwt-signing-key"
    resources["jwt_signing_secret_arn"] = aws.signing_secret(secret_id)
    env["auth"]["JWT_SIGNING_SECRET_ID"] = secret_id

    bus = f"{prefix}-events"
    resources["event_bus_name"] = bus
    resources["event_bus_arn"] = aws.event_bus(bus)

    for route in ROUTES:
        target = route.target_service
        queue_url, queue_arn, dlq_url, dlq_arn = aws.queue_with_dlq(
            f"{prefix}-{target}-events", visibility_timeout_seconds, max_receive_count)
        rule = f"{prefix}-{route.source_service}-to-{target}"
        pattern = {"source": [f"{prefix}.{route.source_service}"], "detail-type": list(route.detail_types)}
        rule_arn = aws.rule_to_queue(bus, rule, pattern, queue_arn)
        aws.allow_rule_to_send(queue_url, queue_arn, rule_arn)
        env[target]["QUEUE_URL"] = queue_url
        key = target.replace("-", "_")
        resources.update({
            f"{key}_queue_url": queue_url, f"{key}_queue_arn": queue_arn,
            f"{key}_dlq_url": dlq_url, f"{key}_dlq_arn": dlq_arn, f"{key}_rule_name": rule,
        })

    for name in ("persona", "vc-start"):  # the publishers of the saga's events
        env[name]["EVENT_BUS_NAME"] = bus
        env[name]["EVENT_SOURCE"] = f"{prefix}.{name}"
    return {**env, "resources": resources}


class _Aws:
    """One idempotent create-or-find step per resource kind."""

    def __init__(self, endpoint_url: str, region: str) -> None:
        # Few, quick retries: against a local server a failure is a real error, not throttling.
        config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=30)
        session = boto3.session.Session(region_name=region, **DUMMY_CREDENTIALS)
        self.dynamodb, self.secrets, self.events, self.sqs = (
            session.client(name, endpoint_url=endpoint_url, config=config)
            for name in ("dynamodb", "secretsmanager", "events", "sqs"))

    def table(self, name: str, indexes: dict[str, dict[str, str]]) -> str:
        try:
            self.dynamodb.create_table(**table_definition(name, indexes))
        except ClientError as error:
            if _code(error) != "ResourceInUseException":
                raise
        self.dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        ttl = self.dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        # Enabling TTL twice is an error in DynamoDB, so only when it is not on yet.
        if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            self.dynamodb.update_time_to_live(
                TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})
        return name

    def signing_secret(self, secret_id: str) -> str:
        try:
            return self.secrets.describe_secret(SecretId=secret_id)["ARN"]  # keep the key tokens were signed with
        except ClientError as error:
            if _code(error) != "ResourceNotFoundException":
                raise
        return self.secrets.create_secret(
            Name=secret_id, Description="auth's JWT signing key (local)",
            SecretString=json.dumps(new_signing_key_document()))["ARN"]

    def event_bus(self, name: str) -> str:
        try:
            return self.events.create_event_bus(Name=name)["EventBusArn"]
        except ClientError as error:
            if _code(error) != "ResourceAlreadyExistsException":
                raise
        return self.events.describe_event_bus(Name=name)["Arn"]

    def queue_with_dlq(self, name: str, visibility_timeout_seconds: int,
                       max_receive_count: int) -> tuple[str, str, str, str]:
        dlq_url = self._queue(f"{name}-dlq", {"MessageRetentionPeriod": str(14 * 24 * 3600)})
        dlq_arn = self._arn(dlq_url)
        queue_url = self._queue(name, {
            "VisibilityTimeout": str(visibility_timeout_seconds),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}),
        })
        return queue_url, self._arn(queue_url), dlq_url, dlq_arn

    def _queue(self, name: str, attributes: dict[str, str]) -> str:
        try:
            url = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError as error:
            if _code(error) not in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
                raise
            return self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        # Already there: bring its attributes to the wanted values (create_queue would refuse).
        self.sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        return url

    def _arn(self, queue_url: str) -> str:
        return self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def rule_to_queue(self, bus: str, rule: str, pattern: dict[str, Any], queue_arn: str) -> str:
        # put_rule and put_targets replace what is there: idempotent by nature.
        rule_arn = self.events.put_rule(Name=rule, EventBusName=bus, EventPattern=json.dumps(pattern), State="ENABLED")["RuleArn"]
        result = self.events.put_targets(Rule=rule, EventBusName=bus, Targets=[{"Id": "queue", "Arn": queue_arn}])
        if result.get("FailedEntryCount"):
            raise RuntimeError(f"could not target {queue_arn} from rule {rule}: {result['FailedEntries']}")
        return rule_arn

    def allow_rule_to_send(self, queue_url: str, queue_arn: str, rule_arn: str) -> None:
        # What AWS requires for an EventBridge -> SQS target (moto does not check it; AWS does).
        policy = {"Version": "2012-10-17", "Statement": [{
            "Sid": "AllowEventBridgeRule", "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage", "Resource": queue_arn, "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
        }]}
        self.sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})


def new_signing_key_document() -> dict[str, Any]:
    """A fresh RSA 2048 key in the secret's JSON format (spec "Secrets"); kid = its public key's digest."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    public_der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    kid = hashlib.sha256(public_der).hexdigest()[:16]
    return {"current": {"kid": kid, "private_key_pem": private_pem}, "previous": []}


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


if __name__ == "__main__":  # bootstrap an already running server: python bootstrap.py [endpoint]
    import sys

    print(json.dumps(bootstrap(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:5000"), indent=2))
