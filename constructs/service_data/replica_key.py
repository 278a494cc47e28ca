"""ReplicaKey: a replica of a multi-Region KMS key in another region, made from the primary's stack."""

from __future__ import annotations

from typing import Mapping

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import custom_resources as cr
from constructs import Construct

from constructs.compliance import acknowledge_nag

# KMS needs at least 7 days before it deletes a key; the shortest wait for a replica nobody uses.
REPLICA_DELETION_WINDOW_DAYS = 7


def replica_tags(stack: cdk.Stack, region: str) -> dict[str, str]:
    """The stack's tags for a replica it creates in ``region``, with a ``region`` tag (when the stack has
    one) naming where the replica lives rather than the stack's region."""
    tags = stack.tags.tag_values()
    return {**tags, "region": region} if "region" in tags else tags


class ReplicaKey(Construct):
    """``primary_key`` (created with ``multi_region=True``) replicated into ``region`` with
    ``KMS.ReplicateKey``, called in the primary's region by a custom resource.

    CloudFormation's own ``AWS::KMS::ReplicaKey`` must live in a stack of the replica region, which
    would have to deploy between the primary key and the resources that use the replica here (global
    table, replicated secret). A replica shares its primary's key ID, so its ARN is known at synth:
    ``key_arn``. The replica gets CDK's default key policy (the account's IAM policies decide) and the
    stack's tags, its ``region`` tag naming the replica's region (replica_tags). ``retain=False``: deleting
    the resource schedules the replica's deletion (7 days); ``retain=True``: the replica outlives the stack,
    like the primary key.
    """

    def __init__(self, scope: Construct, construct_id: str, *, primary_key: kms.Key, region: str, retain: bool,
                 description: str, log_group: logs.ILogGroup) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        if region == stack.region:
            raise ValueError(f"region={region!r} is invalid: a replica must be in another region than its primary key")
        self.region = region
        self.key_arn = stack.format_arn(service="kms", region=region, resource="key", resource_name=primary_key.key_id)
        tags: Mapping[str, str] = replica_tags(stack, region)
        replicate = cr.AwsSdkCall(
            service="KMS", action="replicateKey",
            parameters={"KeyId": primary_key.key_arn, "ReplicaRegion": region, "Description": description,
                        **({"Tags": [{"TagKey": k, "TagValue": v} for k, v in sorted(tags.items())]} if tags else {})},
            physical_resource_id=cr.PhysicalResourceId.of(self.key_arn),
            # The response holds the replica's key policy; keep it out of the custom resource's reply.
            output_paths=["ReplicaKeyMetadata.Arn"],
        )
        schedule_deletion = cr.AwsSdkCall(
            service="KMS", action="scheduleKeyDeletion", region=region,
            parameters={"KeyId": self.key_arn, "PendingWindowInDays": REPLICA_DELETION_WINDOW_DAYS},
            # Gone already, or already pending deletion: nothing left to do.
            ignore_error_codes_matching="NotFoundException|KMSInvalidStateException",
        )
        self.resource = cr.AwsCustomResource(
            self, "Resource",
            resource_type="Custom::KmsReplicaKey",
            on_create=replicate,
            on_delete=None if retain else schedule_deletion,
            policy=cr.AwsCustomResourcePolicy.from_statements([
                iam.PolicyStatement(actions=["kms:ReplicateKey"], resources=[primary_key.key_arn],
                                    conditions={"StringEquals": {"kms:ReplicaRegion": region}}),
                # KMS authorizes the replica as a kms:CreateKey (with kms:TagResource for its tags) in
                # the replica region, before the key exists: neither can name a resource.
                iam.PolicyStatement(actions=["kms:CreateKey", "kms:TagResource"], resources=["*"],
                                    conditions={"StringEquals": {"aws:RequestedRegion": [stack.region, region]}}),
                *([] if retain else [iam.PolicyStatement(actions=["kms:ScheduleKeyDeletion"], resources=[self.key_arn])]),
            ]),
            install_latest_aws_sdk=False,
            log_group=log_group,
        )
        acknowledge_nag(
            self.resource,
            "No resource-level scope exists for these KMS actions: KMS authorizes ReplicateKey as kms:CreateKey (and "
            "kms:TagResource for the replica's tags) in the replica region before the replica exists, so neither action "
            "can name a key ARN; the statement is limited "
            "to this stage's regions and only CDK's custom-resource handler assumes the role",
            "AwsSolutions-IAM5[Resource::*]",
        )
        acknowledge_nag(
            self.resource,
            "CDK writes the custom resource's grants (replicate this key, and in dev delete its replica) as an inline "
            "policy that lives and dies with the custom resource",
            "NIST.800.53.R5-IAMNoInlinePolicy",
        )
