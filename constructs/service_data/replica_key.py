"""ReplicaKey: a replica of a multi-Region KMS key in another region, made from the primary's stack."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import custom_resources as cr
from constructs import Construct

from constructs.compliance import acknowledge_nag, skip_checkov, skip_role_dependency_lint
from constructs.lambda_layer import ARCHITECTURE, RUNTIME

# KMS needs at least 7 days before it deletes a key; the shortest wait for a replica nobody uses.
REPLICA_DELETION_WINDOW_DAYS = 7
FUNCTION_DIR = Path(__file__).resolve().parent / "replica_key_function"
# The stack's one provider of the Ready resources, shared by every ReplicaKey in it (a child of the stack, like
# CDK's singletons).
PROVIDER_ID = "ReplicaKeyReadyProvider"
# Lambda's limit: the handler waits at most 14 minutes for the replica (replica_key_function/handler.py).
FUNCTION_TIMEOUT = cdk.Duration.minutes(15)


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

    KMS creates a replica ``Creating``, a state in which it encrypts nothing, for seconds to minutes; ``ReplicateKey``
    returns at once. So a second custom resource, ``ready`` (``Custom::KmsReplicaKeyReady``, of the stack's one
    ``ReplicaKeyReadyProvider``), created after ``resource``, completes only once the replica is ``Enabled``; what
    uses the replica depends on ``ready``. ``resource`` stays the ``AwsCustomResource`` it always was (same logical
    ID and properties): CloudFormation cannot change a custom resource's ServiceToken, and replacing it would
    delete, in dev schedule the deletion of, the deployed replicas.
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
        provider = ReplicaKeyReadyProvider.of(stack, log_group)
        provider.allow_describe(self.key_arn)
        self.ready = cdk.CustomResource(
            self, "Ready", service_token=provider.service_token, resource_type="Custom::KmsReplicaKeyReady",
            properties={"ReplicaKeyArn": self.key_arn, "ReplicaRegion": region},
        )
        self.ready.node.add_dependency(self.resource)


class ReplicaKeyReadyProvider(Construct):
    """The stack's provider of ``Custom::KmsReplicaKeyReady``: CDK's ``cr.Provider`` with one Python on-event handler
    (``replica_key_function/handler.py``) that, on create and update, asks DescribeKey in the replica's region until
    the replica is ``Enabled`` (at most 14 minutes) and on delete does nothing. One per stack (``of``); each
    ReplicaKey lets its role describe its replica (``allow_describe``), nothing else.

    Why on-event only, not ``is_complete_handler``: the wait fits in one Lambda invocation (KMS's ``Creating``
    lasts minutes, Lambda allows 15), and the handler stays one straight loop; an is-complete handler would
    add a Step Functions state machine, its role and log group, and two more framework functions per stack.
    """

    @classmethod
    def of(cls, stack: cdk.Stack, log_group: logs.ILogGroup) -> ReplicaKeyReadyProvider:
        existing = stack.node.try_find_child(PROVIDER_ID)
        if existing is None:
            return cls(stack, PROVIDER_ID, log_group=log_group)
        if existing.log_group is not log_group:
            raise ValueError(f"{stack.stack_name}: every ReplicaKey of a stack shares one provider and so one log group")
        return existing

    def __init__(self, scope: Construct, construct_id: str, *, log_group: logs.ILogGroup) -> None:
        super().__init__(scope, construct_id)
        self.log_group = log_group
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                             description="Waits until each of the stack's replica keys is Enabled (DescribeKey only)")
        self.function = lambda_.Function(
            # Named after its stack: the stage's permissions boundary lets roles invoke only functions named so.
            self, "Function", function_name=f"{cdk.Stack.of(self).stack_name}-replica-key-ready", runtime=RUNTIME, architecture=ARCHITECTURE, role=self.role,
            code=lambda_.Code.from_asset(str(FUNCTION_DIR), exclude=["__pycache__", "*.pyc"]),
            handler="handler.handler", timeout=FUNCTION_TIMEOUT, memory_size=128, log_group=log_group,
            description="Waits until a replica KMS key is Enabled (Custom::KmsReplicaKeyReady)",
        )
        log_group.grant_write(self.role)
        self.provider = cr.Provider(self, "Provider", on_event_handler=self.function, log_group=log_group)
        self.service_token = self.provider.service_token
        self._acknowledge()

    def allow_describe(self, replica_arn: str) -> None:
        """The function may describe the replica, nothing more."""
        self.role.add_to_principal_policy(iam.PolicyStatement(actions=["kms:DescribeKey"], resources=[replica_arn]))

    def _acknowledge(self) -> None:
        acknowledge_nag(
            self.role,
            "CDK writes the function's grants (describe each replica key, write its log group) into the role's own "
            "inline policy, which lives and dies with the role",
            "NIST.800.53.R5-IAMNoInlinePolicy",
        )
        framework = self.provider.node.find_child("framework-onEvent")
        for function, what in ((self.function, "the handler"), (framework, "CDK's provider framework function")):
            acknowledge_nag(
                function,
                f"{what} of Custom::KmsReplicaKeyReady: CloudFormation invokes it once per replica key created, "
                "so reserved concurrency would only take from the account's unreserved pool and protect nothing",
                "NIST.800.53.R5-LambdaConcurrency",
            )
            acknowledge_nag(
                function,
                f"{what} of Custom::KmsReplicaKeyReady is invoked synchronously (by CloudFormation through the provider), "
                "which receives every failure and fails the deployment; a dead-letter queue would never be read",
                "NIST.800.53.R5-LambdaDLQ",
            )
            acknowledge_nag(
                function,
                f"{what} of Custom::KmsReplicaKeyReady only calls the KMS and Lambda APIs and reaches nothing inside a "
                "VPC; attaching it to one would add ENIs and a NAT dependency for no isolation gained",
                "NIST.800.53.R5-LambdaInsideVPC",
            )
            skip_checkov(function.node.default_child, {
                "CKV_AWS_115": f"{what} of Custom::KmsReplicaKeyReady runs once per replica key created; reserved "
                               "concurrency would protect nothing",
                "CKV_AWS_116": f"{what} of Custom::KmsReplicaKeyReady is invoked synchronously and its caller sees every "
                               "failure; a dead-letter queue would never be read",
                "CKV_AWS_117": f"{what} of Custom::KmsReplicaKeyReady only calls AWS APIs and needs no network path into "
                               "the VPC",
            })
            skip_role_dependency_lint(function.node.default_child)
        skip_checkov(framework.node.default_child, {
            "CKV_AWS_173": "CDK's provider framework function: its environment holds the handler function's ARN, nothing "
                           "secret; a customer key for it would protect nothing"})
        framework_role = framework.role
        stack = cdk.Stack.of(self)
        function_id = stack.resolve(stack.get_logical_id(self.function.node.default_child))
        acknowledge_nag(
            framework_role,
            "CDK's provider framework role: AWSLambdaBasicExecutionRole grants only CloudWatch Logs writes "
            "(CreateLogGroup, CreateLogStream, PutLogEvents); what the wait needs is granted to the handler's own role",
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
        )
        acknowledge_nag(
            framework_role,
            "CDK's provider framework may invoke the handler function and its versions (lambda:InvokeFunction on "
            "<function ARN>:*), nothing else: the wildcard is the version qualifier of one function",
            f"AwsSolutions-IAM5[Resource::<{function_id}.Arn>:*]",
        )
        acknowledge_nag(
            framework_role,
            "CDK writes the provider framework's one grant (invoke the handler) into its role's own inline policy, which "
            "lives and dies with the role",
            "NIST.800.53.R5-IAMNoInlinePolicy",
        )
