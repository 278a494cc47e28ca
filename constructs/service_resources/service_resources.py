"""ServiceResources: what one service owns in a region (event queue) and its grants (also on its global table and secret)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from constructs.compliance import acknowledge_nag, skip_checkov

# The most a service's role gets on its table (``table_actions`` narrows it to what that service calls):
# item-level access only, no Scan (no request path scans), no table or index administration.
# Readiness is a GetItem of an absent key, and TransactWriteItems has no IAM action of its own (each
# item in it needs its Put/Update/Delete; no transaction uses a ConditionCheck item, which would need
# dynamodb:ConditionCheckItem).
TABLE_ACTIONS = (
    "dynamodb:BatchGetItem", "dynamodb:BatchWriteItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem",
    "dynamodb:Query", "dynamodb:UpdateItem",
)
# What a service's role may do on each of its table's indexes (``table_index_names``). IAM checks a Query with an
# IndexName against the index's own ARN (table/<name>/index/<index>), so it is granted there: Query on the table
# would also let the role query the table itself.
INDEX_ACTIONS = ("dynamodb:Query",)
# What DynamoDB does with the table's key on the caller's behalf (kms:ViaService keeps it there). Each
# request carries the table's name as encryption context, which pins the grant to this table's key.
TABLE_KEY_ACTIONS = ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey")
# DescribeKey carries no encryption context, so it is granted apart, through DynamoDB only.
TABLE_KEY_DESCRIBE_ACTIONS = ("kms:DescribeKey",)
# ChangeMessageVisibility: servicekit's consumer brings a failed event back after a short backoff, and one
# another consumer holds when that consumer's claim lease ends, instead of after the visibility timeout.
QUEUE_ACTIONS = ("sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:ReceiveMessage")
# Longer than servicekit's claim lease (events.CLAIM_LEASE_SECONDS, 120 s): a worker that dies mid-message
# (killed at the end of its stop timeout, out of memory) holds the claim until then, and the next receive
# should find it expired and take it over. Earlier receives are not lost (the consumer sets such a message
# visible again when the lease ends), but each counts towards maxReceiveCount.
DEFAULT_VISIBILITY_TIMEOUT = cdk.Duration.seconds(150)
# auth reads the signing key with GetSecretValue only (tests/test_service_aws_calls.py ties the grants to the code).
SECRET_ACTIONS = ("secretsmanager:GetSecretValue",)


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
    """The per-region resources and permissions of one service, granted to its task roles only.

    Creates what is asked for, nothing else: a queue with a dead-letter queue fed by one rule per
    subscription (``subscriptions``). The service's table and signing-key secret are global (the
    primary region's data stack, constructs/service_data) and are found here by name in this
    stack's region: ``table_name``, ``signing_secret_name``. ``grant(role)`` gives a role exactly the
    item actions ``table_actions`` (what the service's code calls), Query on each of ``table_index_names``, queue,
    secret and key actions on these resources, plus PutEvents on the bus with the
    service's own source when ``publish_source`` is set. ``environment`` holds the variables that tell
    the service where they are.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name_prefix: str,
        name: str,
        retain: bool,
        table_name: str | None = None,
        event_bus: events.IEventBus | None = None,
        publish_source: str | None = None,
        subscriptions: Sequence[EventSubscription] = (),
        max_receive_count: int = 8,
        visibility_timeout: cdk.Duration | None = None,
        signing_secret_name: str | None = None,
        table_actions: Sequence[str] = TABLE_ACTIONS,
        table_index_names: Sequence[str] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        if not table_actions or not set(table_actions) <= set(TABLE_ACTIONS):
            raise ValueError(f"table_actions={list(table_actions)} is invalid: expected some of {', '.join(TABLE_ACTIONS)}")
        if table_index_names and not table_name:
            raise ValueError(f"{name}: table_index_names needs table_name (the indexes are on the table)")
        if (publish_source or subscriptions) and event_bus is None:
            raise ValueError(f"{name}: publish_source and subscriptions need event_bus")
        if not 1 <= max_receive_count <= 1000:
            raise ValueError(f"max_receive_count={max_receive_count} is invalid: SQS allows 1 to 1000")
        self.name = name
        cdk.Tags.of(self).add("service", name)  # its queues and bus rules (the bus itself is the platform's)
        self.event_bus = event_bus
        self.publish_source = publish_source
        removal = cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY
        resource_name = f"{name_prefix}-{name}"

        self.table_name = table_name
        self.table_actions = tuple(sorted(table_actions))
        self.table_index_names = tuple(sorted(table_index_names))
        self.signing_secret_name = signing_secret_name
        self.queue: sqs.Queue | None = None
        self.dead_letter_queue: sqs.Queue | None = None
        self.rules: dict[str, events.Rule] = {}
        if subscriptions:
            self._add_queue(resource_name, subscriptions, max_receive_count, visibility_timeout or DEFAULT_VISIBILITY_TIMEOUT,
                            removal)

    def _add_queue(self, resource_name: str, subscriptions: Sequence[EventSubscription], max_receive_count: int,
                   visibility_timeout: cdk.Duration, removal: cdk.RemovalPolicy) -> None:
        # One dead-letter queue for both ways an event can fail: the worker gave up on it
        # (max_receive_count receives) or EventBridge could not deliver it. Both hold the event as
        # EventBridge sent it, so an operator inspects them the same way and redrives them with one move
        # task that names the event queue as its destination (runbooks/dlq-redrive.md). Both queues are
        # retained with ``retain`` (prod): deleting the stack must not drop dead letters.
        queue_name = f"{resource_name}-events"
        # Only the event queue may name this one as its dead-letter queue. Its ARN from its name: a reference to the
        # queue would be a cycle (the queue's redrive policy references this one).
        source_queue = sqs.Queue.from_queue_arn(self, "SourceQueue", cdk.Stack.of(self).format_arn(service="sqs", resource=queue_name))
        self.dead_letter_queue = sqs.Queue(
            self, "DeadLetterQueue", queue_name=f"{queue_name}-dlq", encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True, retention_period=cdk.Duration.days(14), removal_policy=removal,
            redrive_allow_policy=sqs.RedriveAllowPolicy(redrive_permission=sqs.RedrivePermission.BY_QUEUE, source_queues=[source_queue]),
        )
        self.queue = sqs.Queue(
            self, "Queue", queue_name=queue_name, encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True, visibility_timeout=visibility_timeout, receive_message_wait_time=cdk.Duration.seconds(20),
            # Shorter than the dead-letter queue's 14 days: a message keeps its first enqueue time there.
            retention_period=cdk.Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letter_queue, max_receive_count=max_receive_count),
            # A working queue, nobody's dead-letter queue.
            redrive_allow_policy=sqs.RedriveAllowPolicy(redrive_permission=sqs.RedrivePermission.DENY_ALL),
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
    def table_arn(self) -> str | None:
        """This region's replica of the service's global table."""
        return cdk.Stack.of(self).format_arn(service="dynamodb", resource="table", resource_name=self.table_name) if self.table_name else None

    @property
    def table_index_arns(self) -> list[str]:
        """This region's replica of each of the table's indexes."""
        return [cdk.Stack.of(self).format_arn(service="dynamodb", resource="table", resource_name=f"{self.table_name}/index/{index}")
                for index in self.table_index_names]

    @property
    def signing_secret_arn_pattern(self) -> str | None:
        """The secret's ARN in this region, with the six random characters Secrets Manager appends as ``??????``."""
        if not self.signing_secret_name:
            return None
        return cdk.Stack.of(self).format_arn(service="secretsmanager", resource="secret", resource_name=f"{self.signing_secret_name}-??????",
                                             arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME)

    @property
    def environment(self) -> dict[str, str]:
        """Where the service finds its resources (the variables services/ reads)."""
        env = {}
        if self.table_name:
            env["TABLE_NAME"] = self.table_name
        if self.queue:
            env["QUEUE_URL"] = self.queue.queue_url
        if self.signing_secret_name:
            # A name, not an ARN: the same in every region, where each reads its own replica.
            env["JWT_SIGNING_SECRET_ID"] = self.signing_secret_name
        if self.publish_source:
            env["EVENT_BUS_NAME"] = self.event_bus.event_bus_name
            env["EVENT_SOURCE"] = self.publish_source
        return env

    def grant(self, role: iam.IRole, *, consume: bool = True) -> None:
        """Give ``role`` exactly what the service does with its resources, each statement on one ARN
        (the table's indexes: one statement for all; the keys: see ``_key_statements``). ``consume=False``: not
        the queue (a task that runs no worker, such as an App Mesh canary)."""
        statements = []
        if self.table_name:
            statements.append(iam.PolicyStatement(actions=list(self.table_actions), resources=[self.table_arn]))
        if self.table_index_names:
            statements.append(iam.PolicyStatement(actions=list(INDEX_ACTIONS), resources=self.table_index_arns))
        if self.signing_secret_name:
            statements.append(iam.PolicyStatement(actions=list(SECRET_ACTIONS), resources=[self.signing_secret_arn_pattern]))
        statements += self._key_statements()
        if self.queue and consume:
            statements.append(iam.PolicyStatement(actions=list(QUEUE_ACTIONS), resources=[self.queue.queue_arn]))
        if self.publish_source:
            statements.append(iam.PolicyStatement(
                actions=["events:PutEvents"], resources=[self.event_bus.event_bus_arn],
                conditions={"StringEquals": {"events:source": self.publish_source}},
            ))
        for statement in statements:
            role.add_to_principal_policy(statement)
        if self.table_name or self.signing_secret_name:
            acknowledge_nag(
                role,
                f"The {self.name} service's key in this region is the primary's replica (another region's stack creates it, so "
                "its key ID is unknown here at synth), so no resource-level key ARN can be named: the statements name any key of "
                "this account and region, and kms:ViaService "
                "plus the encryption context DynamoDB and Secrets Manager send (the table name, the secret's ARN) pin each to "
                "the service's own table or secret",
                f"AwsSolutions-IAM5[Resource::{self._any_key_arn_for_nag()}]",
            )

    def _key_statements(self) -> list[iam.PolicyStatement]:
        """KMS use through DynamoDB and Secrets Manager only, for this service's table and secret only.

        The key is the replica of a multi-Region key made in the primary region, so the resource is
        any key of this account and region; the conditions narrow it: ``kms:ViaService`` and the
        encryption context each service sends (DynamoDB: ``aws:dynamodb:tableName``; Secrets
        Manager: ``SecretARN``).
        """
        region = cdk.Stack.of(self).region
        any_key = [self._any_key_arn()]
        statements = []
        if self.table_name:
            via_dynamodb = {"kms:ViaService": f"dynamodb.{region}.amazonaws.com"}
            statements += [
                iam.PolicyStatement(actions=list(TABLE_KEY_ACTIONS), resources=any_key, conditions={"StringEquals": {
                    **via_dynamodb, "kms:EncryptionContext:aws:dynamodb:tableName": self.table_name}}),
                iam.PolicyStatement(actions=list(TABLE_KEY_DESCRIBE_ACTIONS), resources=any_key, conditions={"StringEquals": via_dynamodb}),
            ]
        if self.signing_secret_name:
            statements.append(iam.PolicyStatement(
                actions=["kms:Decrypt"], resources=any_key,
                conditions={"StringEquals": {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"},
                            "StringLike": {"kms:EncryptionContext:SecretARN": self.signing_secret_arn_pattern}}))
        return statements

    def _any_key_arn(self) -> str:
        return cdk.Stack.of(self).format_arn(service="kms", resource="key", resource_name="*")

    def _any_key_arn_for_nag(self) -> str:
        """How cdk-nag prints ``_any_key_arn``: unresolved pseudo parameters as <AWS::...>."""
        stack = cdk.Stack.of(self)

        def shown(value: str, pseudo: str) -> str:
            return f"<AWS::{pseudo}>" if cdk.Token.is_unresolved(value) else value

        return f"arn:{shown(stack.partition, 'Partition')}:kms:{stack.region}:{shown(stack.account, 'AccountId')}:key/*"
