"""ServiceResources: what one service owns (table, event queue, signing secret, their key) and its grants."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from constructs.compliance import acknowledge_nag, skip_checkov

# Item-level access only: no Scan (no request path scans), no table or index administration.
# Only what services/ calls: readiness is a GetItem of an absent key, and TransactWriteItems has no
# IAM action of its own (each item in it needs its Put/Update/Delete; no transaction uses a
# ConditionCheck item, which would need dynamodb:ConditionCheckItem).
TABLE_ACTIONS = (
    "dynamodb:BatchGetItem", "dynamodb:BatchWriteItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem",
    "dynamodb:Query", "dynamodb:UpdateItem",
)
# What DynamoDB does with the table's key on the caller's behalf (kms:ViaService keeps it there).
TABLE_KEY_ACTIONS = ("kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey")
# The worker receives and deletes; it neither reads queue attributes nor changes a message's visibility.
QUEUE_ACTIONS = ("sqs:DeleteMessage", "sqs:ReceiveMessage")
SECRET_ACTIONS = ("secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue")
TTL_ATTRIBUTE = "expires_at"


@dataclass(frozen=True)
class EventSubscription:
    """Events from one producer that a service's queue receives: a rule on the bus per subscription."""

    producer: str  # the producing service's name (construct ID and rule name)
    source: str  # the producer's event source, e.g. mf.vc-start
    detail_types: Sequence[str]

    def __post_init__(self) -> None:
        if not self.detail_types:
            raise ValueError(f"detail_types=[] is invalid for {self.producer}: name at least one event detail-type")


class ServiceResources(Construct):
    """The stateful resources and bus permissions of one service, granted to its task roles only.

    Creates what is asked for, nothing else: a DynamoDB table (``table``), a queue with a dead-letter
    queue fed by one rule per subscription (``subscriptions``), a JWT signing-key secret
    (``signing_secret``), and one customer managed KMS key for the table and the secret. ``grant(role)``
    gives a role exactly the item, queue, secret and key actions on these resources, plus PutEvents
    on the bus with the service's own source when ``publish_source`` is set. ``environment`` holds
    the variables that tell the service where they are.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name_prefix: str,
        name: str,
        retain: bool,
        table: bool = False,
        event_bus: events.IEventBus | None = None,
        publish_source: str | None = None,
        subscriptions: Sequence[EventSubscription] = (),
        max_receive_count: int = 3,
        visibility_timeout: cdk.Duration | None = None,
        signing_secret: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        if (publish_source or subscriptions) and event_bus is None:
            raise ValueError(f"{name}: publish_source and subscriptions need event_bus")
        if not 1 <= max_receive_count <= 1000:
            raise ValueError(f"max_receive_count={max_receive_count} is invalid: SQS allows 1 to 1000")
        self.name = name
        self.event_bus = event_bus
        self.publish_source = publish_source
        removal = cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY
        resource_name = f"{name_prefix}-{name}"

        self.key: kms.Key | None = None
        if table or signing_secret:
            self.key = kms.Key(
                self, "Key", alias=f"{name_prefix}/{name}", enable_key_rotation=True, removal_policy=removal,
                description=f"Encrypts the {name} service's table and secrets (default key policy: IAM policies decide who uses it)",
            )

        self.table: dynamodb.Table | None = None
        if table:
            self.table = dynamodb.Table(
                self, "Table",
                table_name=resource_name,
                partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
                sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
                billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
                time_to_live_attribute=TTL_ATTRIBUTE,
                point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(point_in_time_recovery_enabled=True),
                encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
                encryption_key=self.key,
                deletion_protection=retain,
                removal_policy=removal,
            )
            acknowledge_nag(
                self.table,
                "Point-in-time recovery keeps 35 days of continuous backups of this table; an AWS Backup plan "
                "(vault, cross-region copies) belongs to the backup and disaster-recovery work, not to this service",
                "NIST.800.53.R5-DynamoDBInBackupPlan",
            )

        self.queue: sqs.Queue | None = None
        self.dead_letter_queue: sqs.Queue | None = None
        self.rules: dict[str, events.Rule] = {}
        if subscriptions:
            self._add_queue(resource_name, subscriptions, max_receive_count, visibility_timeout or cdk.Duration.seconds(60),
                            removal)

        self.signing_secret: secretsmanager.Secret | None = None
        if signing_secret:
            # Secrets Manager cannot generate an RSA key pair: the secret starts as a random placeholder,
            # which the service reports as malformed until an operator stores a key (README). Issue 6
            # adds rotation (a function that writes a new key and keeps the previous public key) and
            # replication to the other region.
            self.signing_secret = secretsmanager.Secret(
                self, "SigningKey", secret_name=f"{name_prefix}/{name}/jwt-signing-key", encryption_key=self.key,
                description=f"{name}: the private key that signs access tokens, and the previous public keys",
                removal_policy=removal,
            )
            acknowledge_nag(
                self.signing_secret,
                "Secrets Manager cannot generate this RSA signing key; rotating it needs a function that writes a new "
                "key pair and keeps the previous public key in the JWKS, which the key-rotation work (issue 6) adds",
                "AwsSolutions-SMG4", "NIST.800.53.R5-SecretsManagerRotationEnabled",
            )

    def _add_queue(self, resource_name: str, subscriptions: Sequence[EventSubscription], max_receive_count: int,
                   visibility_timeout: cdk.Duration, removal: cdk.RemovalPolicy) -> None:
        # One dead-letter queue for both ways an event can fail: the worker gave up on it
        # (max_receive_count receives) or EventBridge could not deliver it. Both hold the event as
        # EventBridge sent it, so an operator inspects and redrives them the same way. Like the table,
        # both queues are retained with ``retain`` (prod): deleting the stack must not drop dead letters.
        self.dead_letter_queue = sqs.Queue(
            self, "DeadLetterQueue", queue_name=f"{resource_name}-events-dlq", encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True, retention_period=cdk.Duration.days(14), removal_policy=removal,
        )
        self.queue = sqs.Queue(
            self, "Queue", queue_name=f"{resource_name}-events", encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True, visibility_timeout=visibility_timeout, receive_message_wait_time=cdk.Duration.seconds(20),
            # Shorter than the dead-letter queue's 14 days: a message keeps its first enqueue time there.
            retention_period=cdk.Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letter_queue, max_receive_count=max_receive_count),
            removal_policy=removal,
        )
        for queue in (self.queue, self.dead_letter_queue):
            skip_checkov(queue.node.default_child, {"CKV_AWS_27": (
                "Encrypted at rest with SQS-managed keys (SqsManagedSseEnabled), which checkov's check does not read; a "
                "customer managed key would need a key policy letting EventBridge use it, which CDK scopes to the account, not the rule")})
        for subscription in subscriptions:
            self.rules[subscription.producer] = events.Rule(
                self, f"From-{subscription.producer}",
                event_bus=self.event_bus,
                rule_name=f"{resource_name}-from-{subscription.producer}",
                description=f"{', '.join(subscription.detail_types)} from {subscription.source} to {resource_name}-events",
                event_pattern=events.EventPattern(source=[subscription.source], detail_type=list(subscription.detail_types)),
                targets=[targets.SqsQueue(
                    self.queue, dead_letter_queue=self.dead_letter_queue,
                    # A queue is rarely unavailable for long: keep trying for a day before dead-lettering.
                    retry_attempts=185, max_event_age=cdk.Duration.hours(24),
                )],
            )

    @property
    def environment(self) -> dict[str, str]:
        """Where the service finds its resources (the variable names services/ reads)."""
        env = {}
        if self.table:
            env["TABLE_NAME"] = self.table.table_name
        if self.queue:
            env["QUEUE_URL"] = self.queue.queue_url
        if self.signing_secret:
            env["JWT_SIGNING_SECRET_ID"] = self.signing_secret.secret_arn
        if self.publish_source:
            env["EVENT_BUS_NAME"] = self.event_bus.event_bus_name
            env["EVENT_SOURCE"] = self.publish_source
        return env

    def grant(self, role: iam.IRole, *, consume: bool = True) -> None:
        """Give ``role`` exactly what the service does with its resources, each statement on one ARN.
        ``consume=False``: not the queue (a task that runs no worker, such as an App Mesh canary)."""
        region = cdk.Stack.of(self).region
        statements = []
        if self.table:
            statements += [
                iam.PolicyStatement(actions=list(TABLE_ACTIONS), resources=[self.table.table_arn]),
                iam.PolicyStatement(actions=list(TABLE_KEY_ACTIONS), resources=[self.key.key_arn],
                                    conditions={"StringEquals": {"kms:ViaService": f"dynamodb.{region}.amazonaws.com"}}),
            ]
        if self.signing_secret:
            statements += [
                iam.PolicyStatement(actions=list(SECRET_ACTIONS), resources=[self.signing_secret.secret_arn]),
                iam.PolicyStatement(actions=["kms:Decrypt"], resources=[self.key.key_arn],
                                    conditions={"StringEquals": {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}}),
            ]
        if self.queue and consume:
            statements.append(iam.PolicyStatement(actions=list(QUEUE_ACTIONS), resources=[self.queue.queue_arn]))
        if self.publish_source:
            statements.append(iam.PolicyStatement(
                actions=["events:PutEvents"], resources=[self.event_bus.event_bus_arn],
                conditions={"StringEquals": {"events:source": self.publish_source}},
            ))
        for statement in statements:
            role.add_to_principal_policy(statement)
