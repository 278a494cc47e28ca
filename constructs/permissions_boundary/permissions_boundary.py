"""A permissions boundary that caps every role of a scope and cannot be escaped from inside it."""

from __future__ import annotations

from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from constructs import Construct

from constructs.compliance import acknowledge_nag, skip_checkov

# The AWS services that roles of this platform use: tasks (their tables, queues, bus and secrets:
# dynamodb, sqs, events, secretsmanager, kms), sidecars, autoscaling, flow logs, ECS shifting load
# balancer traffic in deployments, the quota counter (servicequotas reads), and CDK's own custom resources. A role under the boundary can never
# act outside this list, whatever its identity policy says. Deliberately absent: iam and sts (no role
# may create, change or assume roles), ssmmessages (no ECS Exec), and every global service.
DEFAULT_ALLOWED_SERVICES = (
    "acm", "acm-pca", "application-autoscaling", "appmesh", "cloudwatch", "dynamodb", "ec2", "ecr", "ecs",
    "elasticloadbalancing", "events", "kms", "logs", "secretsmanager", "servicediscovery", "servicequotas", "sqs", "ssm",
    "xray",
)

# What the edge's region-failover function calls on its KeyValueStore (constructs/operations).
KEY_VALUE_STORE_WRITER_ACTIONS = (
    "cloudfront-keyvaluestore:DescribeKeyValueStore", "cloudfront-keyvaluestore:GetKey", "cloudfront-keyvaluestore:PutKey",
)

# The SSM agent's message channels, for ssm_managed_instance_role_arns only: all of ec2messages and the ssmmessages
# control channel (Run Command comes over either), without data channels (no Session Manager or ECS Exec).
# constructs/meshed_service FaultInjection grants its managed-instance role these same actions.
SSM_AGENT_CHANNEL_ACTIONS = (
    "ec2messages:AcknowledgeMessage", "ec2messages:DeleteMessage", "ec2messages:FailMessage",
    "ec2messages:GetEndpoint", "ec2messages:GetMessages", "ec2messages:SendReply",
    "ssmmessages:CreateControlChannel", "ssmmessages:OpenControlChannel",
)

# IAM actions that change a role's or user's permissions.
_PRINCIPAL_POLICY_ACTIONS = [
    "iam:AttachRolePolicy", "iam:DetachRolePolicy", "iam:PutRolePolicy", "iam:DeleteRolePolicy",
    "iam:AttachUserPolicy", "iam:DetachUserPolicy", "iam:PutUserPolicy", "iam:DeleteUserPolicy",
]


class PermissionsBoundary(Construct):
    """A named customer-managed policy to use as the permissions boundary of every role in a scope.

    Call ``apply_to(scope)`` to attach it to every IAM role and user created under ``scope``
    (including roles CDK creates for custom resources).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        policy_name: str,
        allowed_regions: Sequence[str],
        allowed_services: Sequence[str] = DEFAULT_ALLOWED_SERVICES,
        assumable_role_arns: Sequence[str] = (),
        ssm_managed_instance_role_arns: Sequence[str] = (),
        tag_reader_role_arns: Sequence[str] = (),
        key_value_store_writer_role_arns: Sequence[str] = (),
        invokable_function_name_prefix: str | None = None,
        describable_repository_arns: Sequence[str] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        if not allowed_services:
            raise ValueError("allowed_services=[] is invalid: name at least one AWS service prefix")
        if {"iam", "sts"} & set(allowed_services):
            raise ValueError("allowed_services contains iam or sts: a boundary that allows them can be escaped")
        if not allowed_regions:
            raise ValueError("allowed_regions=[] is invalid: name the regions the app runs in")
        stack = cdk.Stack.of(self)
        self.policy_name = policy_name
        self.policy_arn = stack.format_arn(
            service="iam", region="", resource="policy", resource_name=policy_name
        )
        # What apply_to attaches: the ARN built from the policy's name, not a reference to the policy.
        self._reference = iam.ManagedPolicy.from_managed_policy_arn(self, "Reference", self.policy_arn)
        unless_this_boundary = {"StringNotEquals": {"iam:PermissionsBoundary": self.policy_arn}}

        # Written as one policy document (rather than PolicyStatement objects) so it reads like
        # the JSON a reviewer checks in the IAM console.
        self.policy = iam.ManagedPolicy(
            self,
            "Policy",
            managed_policy_name=policy_name,
            description="Permissions boundary: caps every role of this stage and denies escaping the cap",
            document=iam.PolicyDocument.from_json({
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "AllowOnlyThePlatformsServicesInTheAppsRegions",
                        "Effect": "Allow",
                        "Action": [f"{service}:*" for service in sorted(allowed_services)],
                        "Resource": "*",
                        "Condition": {"StringEquals": {"aws:RequestedRegion": sorted(allowed_regions)}},
                    },
                    # sts stays out of allowed_services: only sts:AssumeRole, and only of the roles named
                    # here (CI's `cdk diff` reads through the CDK lookup roles; a delivery pipeline assumes
                    # CDK's bootstrap roles to deploy).
                    *([{
                        "Sid": "AllowAssumingOnlyTheNamedRoles",
                        "Effect": "Allow",
                        "Action": "sts:AssumeRole",
                        "Resource": sorted(assumable_role_arns),
                    }] if assumable_role_arns else []),
                    # AWS FIS network faults (constructs/meshed_service FaultInjection): the task's SSM agent
                    # sidecar registers it as a managed instance with these roles, which the task role must
                    # pass to SSM and nothing else; the agent then talks over its message channels as that
                    # role only (the control channel, no data channels). Nothing else in the stage gets iam,
                    # ec2messages or ssmmessages.
                    *([{
                        "Sid": "AllowPassingOnlyTheManagedInstanceRolesToSsm",
                        "Effect": "Allow",
                        "Action": "iam:PassRole",
                        "Resource": sorted(ssm_managed_instance_role_arns),
                        "Condition": {"StringEquals": {"iam:PassedToService": "ssm.amazonaws.com"}},
                    }, {
                        "Sid": "AllowTheSsmAgentChannelsToTheManagedInstanceRolesOnly",
                        "Effect": "Allow",
                        "Action": list(SSM_AGENT_CHANNEL_ACTIONS),
                        "Resource": "*",
                        "Condition": {"ArnEquals": {"aws:PrincipalArn": sorted(ssm_managed_instance_role_arns)},
                                      "StringEquals": {"aws:RequestedRegion": sorted(allowed_regions)}},
                    }] if ssm_managed_instance_role_arns else []),
                    # FIS finds the managed instance of a task by its ECS_TASK_ARN tag.
                    *([{
                        "Sid": "AllowReadingTagsToTheNamedRolesOnly",
                        "Effect": "Allow",
                        "Action": "tag:GetResources",
                        "Resource": "*",
                        "Condition": {"ArnEquals": {"aws:PrincipalArn": sorted(tag_reader_role_arns)},
                                      "StringEquals": {"aws:RequestedRegion": sorted(allowed_regions)}},
                    }] if tag_reader_role_arns else []),
                    # The edge's region-failover function (constructs/operations): reads and sets keys of the
                    # account's CloudFront KeyValueStores, for the named roles only. No region condition: the
                    # KeyValueStore API is global and signed for every region (SigV4A), and AWS does not document
                    # which aws:RequestedRegion its requests carry. The store's ARN (an ID CloudFront assigns) is not
                    # known here; the role's own policy names the one store.
                    *([{
                        "Sid": "AllowSettingKeyValueStoreKeysToTheNamedRolesOnly",
                        "Effect": "Allow",
                        "Action": list(KEY_VALUE_STORE_WRITER_ACTIONS),
                        "Resource": stack.format_arn(service="cloudfront", region="", resource="key-value-store", resource_name="*"),
                        "Condition": {"ArnEquals": {"aws:PrincipalArn": sorted(key_value_store_writer_role_arns)}},
                    }] if key_value_store_writer_role_arns else []),
                    # CDK's provider framework (a custom resource's cr.Provider) calls its handler function with a
                    # role of the stage: lambda:GetFunction (waits until it is active) and lambda:InvokeFunction, on
                    # the functions named with the prefix only (the app names each such handler after its stack).
                    *([{
                        "Sid": "AllowInvokingOnlyTheFunctionsNamedWithThePrefix",
                        "Effect": "Allow",
                        "Action": ["lambda:GetFunction", "lambda:InvokeFunction"],
                        "Resource": stack.format_arn(service="lambda", region="*", resource="function",
                                                     resource_name=f"{invokable_function_name_prefix}*",
                                                     arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME),
                        "Condition": {"StringEquals": {"aws:RequestedRegion": sorted(allowed_regions)}},
                    }] if invokable_function_name_prefix else []),
                    # A delivery pipeline's image checks (pipelines/image_check.py) list the images of these ECR
                    # repositories, nothing else of ECR. No region condition: each ARN names its region.
                    *([{
                        "Sid": "AllowDescribingImagesOfTheNamedRepositoriesOnly",
                        "Effect": "Allow",
                        "Action": "ecr:DescribeImages",
                        "Resource": list(describable_repository_arns),
                    }] if describable_repository_arns else []),
                    # IAM is outside the allows above (but for passing the named managed-instance roles to
                    # SSM), so the denies below change nothing today. They are the boundary's contract, kept
                    # explicit: they still hold if a later change allows more of IAM.
                    {
                        "Sid": "DenyCreatingPrincipalsWithoutThisBoundary",
                        "Effect": "Deny",
                        "Action": ["iam:CreateRole", "iam:CreateUser", "iam:PutRolePermissionsBoundary", "iam:PutUserPermissionsBoundary"],
                        "Resource": "*",
                        "Condition": unless_this_boundary,
                    },
                    {
                        "Sid": "DenyChangingPermissionsOfPrincipalsWithoutThisBoundary",
                        "Effect": "Deny",
                        "Action": _PRINCIPAL_POLICY_ACTIONS,
                        "Resource": "*",
                        "Condition": unless_this_boundary,
                    },
                    {
                        "Sid": "DenyRemovingTheBoundary",
                        "Effect": "Deny",
                        "Action": ["iam:DeleteRolePermissionsBoundary", "iam:DeleteUserPermissionsBoundary"],
                        "Resource": "*",
                    },
                    {
                        "Sid": "DenyEditingTheBoundary",
                        "Effect": "Deny",
                        "Action": ["iam:CreatePolicyVersion", "iam:DeletePolicy", "iam:DeletePolicyVersion", "iam:SetDefaultPolicyVersion"],
                        "Resource": self.policy_arn,
                    },
                ],
            }),
        )
        # A boundary is a ceiling, not a grant: its allow statement must name whole services, and
        # identity policies narrow that down. These findings are intended, not oversights.
        ceiling = "Permissions boundary: the service-wide allow is the ceiling roles can never exceed; identity policies grant the narrow actions and resources"
        acknowledge_nag(
            self.policy,
            ceiling,
            "AwsSolutions-IAM5[Resource::*]",
            "NIST.800.53.R5-IAMPolicyNoStatementsWithFullAccess",
            *(f"AwsSolutions-IAM5[Action::{service}:*]" for service in allowed_services),
        )
        # As cdk-nag prints an ARN: unresolved pseudo parameters as <AWS::...>.
        partition, account = (f"<AWS::{pseudo}>" if cdk.Token.is_unresolved(value) else value
                              for value, pseudo in ((stack.partition, "Partition"), (stack.account, "AccountId")))
        if key_value_store_writer_role_arns:
            acknowledge_nag(
                self.policy,
                "Permissions boundary: a ceiling for the named region-failover role only (aws:PrincipalArn), over the "
                "account's KeyValueStores because the store's ARN is assigned after this boundary deploys; the role's "
                "identity policy grants the three calls on the one store",
                f"AwsSolutions-IAM5[Resource::arn:{partition}:cloudfront::{account}:key-value-store/*]",
            )
        if invokable_function_name_prefix:
            acknowledge_nag(
                self.policy,
                "Permissions boundary: a ceiling over the functions named with the stage's prefix, in the app's regions; "
                "each provider framework role's identity policy grants its one handler",
                f"AwsSolutions-IAM5[Resource::arn:{partition}:lambda:*:{account}:function:{invokable_function_name_prefix}*]",
            )
        skip_checkov(
            self.policy.node.default_child,
            {check_id: ceiling for check_id in ("CKV_AWS_107", "CKV_AWS_108", "CKV_AWS_109", "CKV_AWS_111")},
        )

    def apply_to(self, scope: Construct) -> None:
        """Attach the boundary to every role and user under ``scope``, in any stack.

        The boundary is referenced by its name-derived ARN, not by a cross-stack export, so other
        stacks only need to deploy after the one that holds the policy.
        """
        iam.PermissionsBoundary.of(scope).apply(self._reference)
