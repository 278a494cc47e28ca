"""ServiceData: a service's state that must survive a region: its global table, its replicated
signing-key secret and rotation, and the multi-Region key both are encrypted with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from constructs.compliance import acknowledge_nag

from .replica_key import ReplicaKey, replica_tags
from .signing_key_rotation import SigningKeyRotation

TTL_ATTRIBUTE = "expires_at"
# How long a retired signing key stays in the JWKS: auth signs with a key for up to its secret cache
# (300 s, services/auth/auth_service/keys.py) after a rotation; a token it signed lives 900 s
# (access_token_ttl_seconds); verifiers cache the JWKS for 300 s (servicekit auth.py) and allow 5 s
# of clock skew. 1505 s, rounded up with a margin.
PREVIOUS_KEY_RETENTION = cdk.Duration.minutes(30)
DEFAULT_ROTATION_INTERVAL = cdk.Duration.days(30)


@dataclass(frozen=True)
class TableIndex:
    """A global secondary index: a string partition key, a string or number sort key (``sort_key_type``: "string"
    or "number"), keys-only projection (a reader gets the item itself)."""

    name: str
    partition_key: str
    sort_key: str
    sort_key_type: str = "string"

    def __post_init__(self) -> None:
        if self.sort_key_type not in _KEY_TYPES:
            raise ValueError(f"{self.name}: sort_key_type={self.sort_key_type!r} is invalid: expected one of {', '.join(_KEY_TYPES)}")


_KEY_TYPES = {"string": dynamodb.AttributeType.STRING, "number": dynamodb.AttributeType.NUMBER}


class ServiceData(Construct):
    """Creates, in the stack's (primary) region, what is asked for and replicates it to ``replica_regions``:

    - always: a multi-Region customer managed KMS key (alias ``<name_prefix>/<name>``) with a replica
      in each replica region (``ReplicaKey``);
    - ``table_name``: a DynamoDB global table (``TableV2``, pk/sk strings, TTL ``expires_at``,
      on-demand, point-in-time recovery) with a replica per region, each encrypted with its region's key,
      and a global secondary index per ``table_indexes`` entry (every replica has them);
    - ``signing_secret_name``: a Secrets Manager secret replicated to each region (encrypted with that
      region's replica key) and rotated every ``rotation_interval`` by ``SigningKeyRotation``.

    It grants nothing: each region's services stack grants its task roles by name
    (constructs/service_resources), so a region's services need nothing from this stack's outputs.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, name_prefix: str, name: str, retain: bool,
        replica_regions: Sequence[str], custom_resource_log_group: logs.ILogGroup, rotation_log_group: logs.ILogGroup | None = None,
        table_name: str | None = None, table_indexes: Sequence[TableIndex] = (),
        signing_secret_name: str | None = None, rotation_interval: cdk.Duration = DEFAULT_ROTATION_INTERVAL,
        previous_key_retention: cdk.Duration = PREVIOUS_KEY_RETENTION,
    ) -> None:
        super().__init__(scope, construct_id)
        if signing_secret_name and rotation_log_group is None:
            raise ValueError(f"{name}: signing_secret_name needs rotation_log_group, where the rotation function logs")
        if not (table_name or signing_secret_name):
            raise ValueError(f"{name}: give table_name, signing_secret_name or both; there is nothing to create")
        if table_indexes and not table_name:
            raise ValueError(f"{name}: table_indexes needs table_name (the indexes are on the table)")
        if not 1 <= rotation_interval.to_days() <= 365:
            raise ValueError(f"rotation_interval={rotation_interval.to_days()} days is invalid: rotate every 1 to 365 days")
        self.name = name
        # Everything below is this service's: key, table (CDK copies the table's tags to every replica), secret, rotation.
        cdk.Tags.of(self).add("service", name)
        removal = cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY
        self.key = kms.Key(
            self, "Key", alias=f"{name_prefix}/{name}", enable_key_rotation=True, multi_region=True, removal_policy=removal,
            description=f"Encrypts the {name} service's table and secrets in every region (default key policy: IAM policies decide who uses it)",
        )
        self.replica_keys = {
            region: ReplicaKey(self, f"Key-{region}", primary_key=self.key, region=region, retain=retain, log_group=custom_resource_log_group,
                               description=f"Replica of the {name} service's key: its table and secrets in {region}")
            for region in replica_regions
        }
        self.table = self._table(table_name, table_indexes, retain, removal) if table_name else None
        self.signing_secret: secretsmanager.Secret | None = None
        self.rotation: SigningKeyRotation | None = None
        if signing_secret_name:
            self.signing_secret = secretsmanager.Secret(
                self, "SigningKey", secret_name=signing_secret_name, encryption_key=self.key,
                description=f"{name}: the private key that signs access tokens, and the previous public keys",
                replica_regions=[secretsmanager.ReplicaRegion(
                    region=region, encryption_key=kms.Key.from_key_arn(self, f"ReplicaKeyRef-{region}", replica.key_arn))
                    for region, replica in self.replica_keys.items()],
                removal_policy=removal,
            )
            for replica in self.replica_keys.values():
                self.signing_secret.node.add_dependency(replica.ready)
            self.rotation = SigningKeyRotation(
                self, "Rotation", secret=self.signing_secret, key=self.key,
                replica_keys=[(region, replica.key_arn) for region, replica in self.replica_keys.items()],
                rotation_interval=rotation_interval, previous_key_retention=previous_key_retention,
                log_group=rotation_log_group,
            )

    def _table(self, table_name: str, indexes: Sequence[TableIndex], retain: bool, removal: cdk.RemovalPolicy) -> dynamodb.TableV2:
        table = dynamodb.TableV2(
            self, "Table",
            table_name=table_name,
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
            # Added or removed in place, one index per deployment (DynamoDB creates or deletes one per table update);
            # the table and its data stay.
            global_secondary_indexes=[dynamodb.GlobalSecondaryIndexPropsV2(
                index_name=index.name,
                partition_key=dynamodb.Attribute(name=index.partition_key, type=dynamodb.AttributeType.STRING),
                sort_key=dynamodb.Attribute(name=index.sort_key, type=_KEY_TYPES[index.sort_key_type]),
                projection_type=dynamodb.ProjectionType.KEYS_ONLY,
            ) for index in indexes] or None,
            billing=dynamodb.Billing.on_demand(),
            time_to_live_attribute=TTL_ATTRIBUTE,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(point_in_time_recovery_enabled=True),
            encryption=dynamodb.TableEncryptionV2.customer_managed_key(
                self.key, {region: replica.key_arn for region, replica in self.replica_keys.items()}),
            # CDK copies the table's tags to every replica; a replica's own tags override them (its region tag).
            replicas=[dynamodb.ReplicaTableProps(region=region, tags=[
                cdk.CfnTag(key=key, value=value) for key, value in replica_tags(cdk.Stack.of(self), region).items()])
                for region in self.replica_keys],
            deletion_protection=retain,
            removal_policy=removal,
        )
        for replica in self.replica_keys.values():
            table.node.add_dependency(replica.ready)
        acknowledge_nag(
            table,
            "Point-in-time recovery keeps 35 days of continuous backups of every replica of this global table; an AWS "
            "Backup plan (vault, cross-account copies) belongs to the backup and disaster-recovery work, not to this service",
            "NIST.800.53.R5-DynamoDBInBackupPlan",
        )
        return table
