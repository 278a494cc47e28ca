"""Global stack: account-wide settings that exist once, deployed with the primary region."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import Construct

from constructs.container_registry import RegistryReplication
from constructs.cost_budget import MonthlyCostBudget
from constructs.github_oidc import GitHubOidc, cdk_lookup_role_arns

from .config import FoundationConfig
from .edge_stack import EDGE_REGION


def bootstrap_qualifier(scope: Construct) -> str:
    """The CDK bootstrap qualifier the app's stacks use (context key, else CDK's default)."""
    return scope.node.try_get_context("@aws-cdk/core:bootstrapQualifier") or cdk.DefaultStackSynthesizer.DEFAULT_QUALIFIER


def diff_regions(config: FoundationConfig) -> list[str]:
    """Every region `cdk diff` reads stacks in: the app's regions and, with an edge, us-east-1."""
    return [*config.region_names, *([EDGE_REGION] if config.has_edge and EDGE_REGION not in config.region_names else [])]


def ci_assumable_role_arns(scope: Construct, config: FoundationConfig) -> list[str]:
    """The roles the CI diff role assumes: what the primary stage's permissions boundary must allow."""
    return cdk_lookup_role_arns(diff_regions(config), bootstrap_qualifier(scope)) if config.github else []


class GlobalStack(cdk.Stack):
    """Holds settings that must be configured once per account rather than per region.

    The deployment's monthly cost budget (AWS Budgets is global: one budget covers every region);
    when the app has more than one region, ECR replication from the primary region's registry to
    every other region; and, when ``github`` is configured, the GitHub OIDC provider and the CI roles.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: FoundationConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        budget = config.budget
        self.budget = MonthlyCostBudget(
            self, "Budget",
            budget_name=f"{config.prefix}-{config.profile}-monthly-cost",
            limit_usd=budget.limit_usd(config.profile),
            thresholds_percent=budget.alert_thresholds_percent,
            emails=budget.notify_emails,
            # The stage tags every resource project=<prefix>: that tag is this deployment's cost.
            cost_filter_tag=("project", config.prefix) if budget.filter_by_project_tag else None,
        )
        cdk.CfnOutput(self, "BudgetAlertTopicArn", value=self.budget.topic.topic_arn,
                      description="SNS topic of the monthly cost budget's alerts: subscribe on-call tooling here")
        # The name ends in a hash of the alerts, which changes with them: read it here, not from config.
        cdk.CfnOutput(self, "BudgetName", value=self.budget.budget_name,
                      description="The monthly cost budget: aws budgets describe-budget --account-id <account> --budget-name <this>")
        self.registry_replication = None
        if config.other_regions(self.region):
            self.registry_replication = RegistryReplication(
                self,
                "RegistryReplication",
                destination_regions=config.other_regions(self.region),
                repository_prefix=config.prefix,
            )
        self.github_oidc = None
        if config.github:
            # CI pushes to the primary region, and replication copies each push to the others. Before the push it
            # checks (DescribeImages only) that every other region has the repository (deploy every platform
            # stack first: constructs/container_registry/README.md) and does not hold the tag already.
            self.github_oidc = GitHubOidc(
                self, "GitHubOidc",
                repository=config.github.repository,
                branch=config.github.branch,
                role_name_prefix=config.prefix,
                image_repository_arns=[
                    self.format_arn(service="ecr", resource="repository", resource_name=f"{config.prefix}/{service.name}")
                    for service in config.services
                ],
                diff_regions=diff_regions(config),
                image_check_repository_arns=[
                    self.format_arn(service="ecr", region=region, resource="repository",
                                    resource_name=f"{config.prefix}/{service.name}")
                    for region in config.other_regions(self.region) for service in config.services
                ],
                bootstrap_qualifier=bootstrap_qualifier(self),
                existing_provider_arn=config.github.oidc_provider_arn,
            )
            cdk.CfnOutput(self, "GitHubImagePushRoleArn", value=self.github_oidc.image_push_role.role_arn,
                          description="Repository variable AWS_IMAGE_PUSH_ROLE_ARN: the role .github/workflows/containers.yml assumes")
            cdk.CfnOutput(self, "GitHubDiffRoleArn", value=self.github_oidc.diff_role.role_arn,
                          description="Repository variable AWS_DIFF_ROLE_ARN: the role .github/workflows/main.yml assumes for cdk diff")
