"""Global stack: account-wide settings that exist once, deployed with the primary region."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import Construct

from constructs.container_registry import RegistryReplication
from constructs.cost_budget import MonthlyCostBudget

from .config import FoundationConfig


class GlobalStack(cdk.Stack):
    """Holds settings that must be configured once per account rather than per region.

    The deployment's monthly cost budget (AWS Budgets is global: one budget covers every region),
    and, when the app has more than one region, ECR replication from the primary region's registry
    to every other region.
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
        self.registry_replication = RegistryReplication(
            self,
            "RegistryReplication",
            destination_regions=config.other_regions(self.region),
            repository_prefix=config.prefix,
        ) if config.other_regions(self.region) else None
