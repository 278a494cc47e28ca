"""EventArchiveAndSchemas: an archive for replay and a schema registry of the events on a custom bus;
restrict_publishers: the bus policy that lets only the producers' roles put events."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import aws_cdk as cdk
from aws_cdk import aws_eventschemas as eventschemas
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from constructs import Construct

from .schemas import registry_schema


@dataclass(frozen=True)
class EventContract:
    """One kind of event on the bus: its detail-type, the producer's source, and the JSON Schema of its data."""

    detail_type: str
    source: str
    data_schema: Mapping[str, Any]

    @property
    def schema_name(self) -> str:
        # The shape EventBridge's schema discovery gives names too: <source>@<detail-type>.
        return f"{self.source}@{self.detail_type}"


class EventArchiveAndSchemas(Construct):
    """For the custom bus the services publish to: an archive of every event put on it (replay after a
    consumer bug), and a schema registry holding each contract as the whole EventBridge event.

    Takes the bus rather than creating it, so that the bus keeps its own logical ID (rules and
    policies elsewhere name it). Exposes ``archive``, ``registry`` and ``schemas`` (detail-type -> CfnSchema).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        event_bus: events.EventBus,
        archive_name: str,
        archive_retention: cdk.Duration,
        registry_name: str,
        envelope_schema: Mapping[str, Any],
        contracts: Sequence[EventContract] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        if archive_retention.to_days() < 1:
            raise ValueError(f"archive_retention={archive_retention.to_days()} days is invalid: keep events at least 1 day")
        # Only events this account's services put (the pattern must match something; account does). Encrypted
        # with EventBridge's AWS owned key, like the bus.
        self.archive = events.Archive(
            self, "Archive",
            source_event_bus=event_bus,
            archive_name=archive_name,
            description="Every event this account's services put on the bus, for replay",
            event_pattern=events.EventPattern(account=[cdk.Stack.of(self).account]),
            retention=archive_retention,
        )
        # CDK writes KmsKeyIdentifier "" when no key is given, which CloudFormation refuses in some regions
        # (aws/aws-cdk#37847): without the property the archive uses EventBridge's AWS owned key, as meant.
        self.archive.node.default_child.add_property_deletion_override("KmsKeyIdentifier")
        self.registry = eventschemas.CfnRegistry(
            self, "Registry", registry_name=registry_name,
            description="The events on the services' bus, from the contracts in services/contracts/events",
        )
        self.schemas: dict[str, eventschemas.CfnSchema] = {}
        for contract in contracts:
            document = registry_schema(detail_type=contract.detail_type, source=contract.source,
                                       envelope=envelope_schema, data=contract.data_schema)
            self.schemas[contract.detail_type] = eventschemas.CfnSchema(
                self, f"Schema-{contract.detail_type}",
                registry_name=self.registry.attr_registry_name,
                schema_name=contract.schema_name,
                type="JSONSchemaDraft4",
                content=json.dumps(document, sort_keys=True),
                description=f"{contract.detail_type} from {contract.source}",
            )


def restrict_publishers(scope: Construct, construct_id: str, *, event_bus: events.IEventBus,
                        publishers: Sequence[iam.IRole]) -> events.CfnEventBusPolicy:
    """Deny PutEvents on ``event_bus`` to every principal but the ``publishers`` roles (whose own IAM
    policies limit each to its service's event source).

    Within one account an IAM policy that allows PutEvents would be enough, so the bus policy is a
    deny: a role someone later grants ``events:*`` still cannot put events on the services' bus.
    AWS services acting for EventBridge itself (archive replays) are not principals of this account
    and stay allowed. Create it beside the roles (the services stack), not the bus: the bus's stack
    must not depend on the services.
    """
    if not publishers:
        raise ValueError("publishers=[] is invalid: name at least one role that may put events")
    # The L1 resource: the L2 EventBusPolicy cannot render an anonymous principal (its token resolution loops).
    return events.CfnEventBusPolicy(
        scope, construct_id,
        event_bus_name=event_bus.event_bus_name,
        statement_id="OnlyTheProducersPutEvents",
        statement={
            "Sid": "OnlyTheProducersPutEvents",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "events:PutEvents",
            "Resource": event_bus.event_bus_arn,
            "Condition": {
                "ArnNotEquals": {"aws:PrincipalArn": [role.role_arn for role in publishers]},
                "Bool": {"aws:PrincipalIsAWSService": "false"},
            },
        },
    )
