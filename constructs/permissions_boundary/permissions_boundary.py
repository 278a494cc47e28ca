"""A permissions boundary that caps every role of a scope and cannot be escaped from inside it."""

from __future__ import annotations

from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from constructs import Construct

from constructs.compliance import acknowledge_nag, skip_checkov

# The AWS services that roles of this platform use: tasks, sidecars, autoscaling, flow logs and
# CDK's own custom resources. A role under the boundary can never act outside this list, whatever
# its identity policy says.
DEFAULT_ALLOWED_SERVICES = (
    "application-autoscaling", "appmesh", "cloudwatch", "dynamodb", "ec2", "ecr", "ecs", "events",
    "kms", "logs", "secretsmanager", "servicediscovery", "sqs", "ssm", "ssmmessages", "sts", "xray",
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
        allowed_services: Sequence[str] = DEFAULT_ALLOWED_SERVICES,
    ) -> None:
        super().__init__(scope, construct_id)
        if not allowed_services:
            raise ValueError("allowed_services=[] is invalid: name at least one AWS service prefix")
        if "iam" in allowed_services:
            raise ValueError("allowed_services contains 'iam': a boundary that allows IAM can be escaped")
        stack = cdk.Stack.of(self)
        self.policy_name = policy_name
        self.policy_arn = stack.format_arn(
            service="iam", region="", resource="policy", resource_name=policy_name
        )
        is_not_this_boundary = {"StringNotEquals": {"iam:PermissionsBoundary": self.policy_arn}}

        self.policy = iam.ManagedPolicy(
            self,
            "Policy",
            managed_policy_name=policy_name,
            description="Permissions boundary: caps every role of this stage and denies escaping the cap",
            statements=[
                iam.PolicyStatement(
                    sid="AllowOnlyThePlatformsServices",
                    actions=[f"{service}:*" for service in sorted(allowed_services)],
                    resources=["*"],
                ),
                iam.PolicyStatement(
                    sid="DenyCreatingPrincipalsWithoutThisBoundary",
                    effect=iam.Effect.DENY,
                    actions=["iam:CreateRole", "iam:CreateUser", "iam:PutRolePermissionsBoundary", "iam:PutUserPermissionsBoundary"],
                    resources=["*"],
                    conditions=is_not_this_boundary,
                ),
                iam.PolicyStatement(
                    sid="DenyChangingPermissionsOfPrincipalsWithoutThisBoundary",
                    effect=iam.Effect.DENY,
                    actions=_PRINCIPAL_POLICY_ACTIONS,
                    resources=["*"],
                    conditions=is_not_this_boundary,
                ),
                iam.PolicyStatement(
                    sid="DenyRemovingTheBoundary",
                    effect=iam.Effect.DENY,
                    actions=["iam:DeleteRolePermissionsBoundary", "iam:DeleteUserPermissionsBoundary"],
                    resources=["*"],
                ),
                iam.PolicyStatement(
                    sid="DenyEditingTheBoundary",
                    effect=iam.Effect.DENY,
                    actions=["iam:CreatePolicyVersion", "iam:DeletePolicy", "iam:DeletePolicyVersion", "iam:SetDefaultPolicyVersion"],
                    resources=[self.policy_arn],
                ),
            ],
        )
        # A boundary is a ceiling, not a grant: its allow statement must name whole services, and
        # identity policies narrow that down. These findings are intended, not oversights.
        ceiling = "Permissions boundary: the service-wide allow is the ceiling roles can never exceed; identity policies grant the narrow actions and resources"
        for rule_id in (
            "AwsSolutions-IAM5[Resource::*]",
            "NIST.800.53.R5-IAMPolicyNoStatementsWithFullAccess",
            *(f"AwsSolutions-IAM5[Action::{service}:*]" for service in allowed_services),
        ):
            acknowledge_nag(self.policy, rule_id, ceiling)
        boundary_resource = self.policy.node.default_child
        for check_id in ("CKV_AWS_107", "CKV_AWS_108", "CKV_AWS_109", "CKV_AWS_111"):
            skip_checkov(boundary_resource, check_id, ceiling)

    def apply_to(self, scope: Construct) -> None:
        """Attach the boundary to every role and user under ``scope``, in any stack.

        The boundary is referenced by its name-derived ARN, not by a cross-stack export, so other
        stacks only need to deploy after the one that holds the policy.
        """
        iam.PermissionsBoundary.of(scope).apply(
            iam.ManagedPolicy.from_managed_policy_arn(self, "Reference", self.policy_arn)
        )
