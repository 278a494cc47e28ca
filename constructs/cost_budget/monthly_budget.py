"""A monthly AWS Budgets cost budget that alerts an encrypted SNS topic (and e-mail) at set percentages."""

from __future__ import annotations

from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_budgets as budgets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct
from constructs.fingerprint import fingerprint

BUDGETS_PRINCIPAL = "budgets.amazonaws.com"
# AWS Budgets: at most 10 notifications per budget, each with 1 SNS and up to 10 e-mail subscribers.
_MAX_NOTIFICATIONS, _MAX_EMAILS = 10, 10
# Budget names have at most 100 characters; the construct appends "-" and an 8-character hash.
_MAX_NAME = 100 - 9


class MonthlyCostBudget(Construct):
    """A COST budget of ``limit_usd`` per calendar month.

    For each percentage in ``thresholds_percent`` it alerts twice: when the month's ACTUAL cost
    passes it, and when AWS's FORECASTED cost for the month does (days before the money is spent).
    Every alert goes to ``topic`` (created here: KMS-encrypted, TLS only, publishable by AWS Budgets
    of this account only) and to each of ``emails``. With ``cost_filter_tag`` (key, value) the budget
    counts only costs whose resources carry that tag; the key must be activated as a cost allocation
    tag in the account's Billing console first, or the budget sees no cost at all.

    The budget is named ``<budget_name>-<hash of its alerts>``, so that new thresholds or e-mails, which
    replace the budget, give the replacement a new name (why: README.md, Default settings).

    Attributes: ``budget`` (the ``CfnBudget``), ``budget_name``, ``topic``, ``key``.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, budget_name: str, limit_usd: float,
        thresholds_percent: Sequence[float], emails: Sequence[str] = (), cost_filter_tag: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        if not 1 <= len(budget_name) <= _MAX_NAME:
            raise ValueError(f"budget_name={budget_name!r} is invalid: expected 1 to {_MAX_NAME} characters "
                             "(AWS Budgets' 100 less the hash suffix)")
        if limit_usd <= 0:
            raise ValueError(f"limit_usd={limit_usd} is invalid: expected a positive amount")
        if not thresholds_percent or 2 * len(thresholds_percent) > _MAX_NOTIFICATIONS or len(set(thresholds_percent)) != len(thresholds_percent):
            raise ValueError(f"thresholds_percent={list(thresholds_percent)} is invalid: expected 1 to {_MAX_NOTIFICATIONS // 2} "
                             "distinct percentages (each is an ACTUAL and a FORECASTED notification)")
        if len(emails) > _MAX_EMAILS:
            raise ValueError(f"emails has {len(emails)} addresses: AWS Budgets allows at most {_MAX_EMAILS} per notification")
        stack = cdk.Stack.of(self)
        # Budgets publishes on behalf of this account's budgets only (confused-deputy guard).
        from_this_accounts_budgets = {
            "StringEquals": {"aws:SourceAccount": stack.account},
            "ArnLike": {"aws:SourceArn": stack.format_arn(service="budgets", region="", resource="*")},
        }
        self.key = kms.Key(
            self, "Key", description=f"Encrypts the {budget_name} budget alert topic", enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        # An encrypted topic takes Budgets' messages only if Budgets may use its key.
        self.key.add_to_resource_policy(iam.PolicyStatement(
            sid="AllowAwsBudgetsOfThisAccount",
            principals=[iam.ServicePrincipal(BUDGETS_PRINCIPAL)],
            actions=["kms:Decrypt", "kms:GenerateDataKey*"],
            resources=["*"],  # in a key policy, "*" is this key
            conditions=from_this_accounts_budgets,
        ))
        self.topic = sns.Topic(self, "Topic", topic_name=budget_name, master_key=self.key, enforce_ssl=True,
                               display_name=f"{budget_name} budget alerts")
        self.topic.add_to_resource_policy(iam.PolicyStatement(
            sid="AllowAwsBudgetsOfThisAccount",
            principals=[iam.ServicePrincipal(BUDGETS_PRINCIPAL)],
            actions=["sns:Publish"],
            resources=[self.topic.topic_arn],
            conditions=from_this_accounts_budgets,
        ))

        subscribers = [budgets.CfnBudget.SubscriberProperty(subscription_type="SNS", address=self.topic.topic_arn),
                       *(budgets.CfnBudget.SubscriberProperty(subscription_type="EMAIL", address=email) for email in emails)]
        notifications = [
            budgets.CfnBudget.NotificationWithSubscribersProperty(
                notification=budgets.CfnBudget.NotificationProperty(
                    notification_type=kind, comparison_operator="GREATER_THAN", threshold=threshold,
                    threshold_type="PERCENTAGE",
                ),
                subscribers=subscribers,
            )
            for threshold in sorted(thresholds_percent) for kind in ("ACTUAL", "FORECASTED")
        ]
        self.budget_name = f"{budget_name}-{fingerprint(stack.resolve(notifications), 8)}"
        self.budget = budgets.CfnBudget(
            self, "Budget",
            budget=budgets.CfnBudget.BudgetDataProperty(
                budget_name=self.budget_name,
                budget_type="COST",
                time_unit="MONTHLY",
                budget_limit=budgets.CfnBudget.SpendProperty(amount=limit_usd, unit="USD"),
                # Budgets' documented tag filter form: "user:<key>$<value>".
                cost_filters={"TagKeyValue": ["user:{}${}".format(*cost_filter_tag)]} if cost_filter_tag else None,
            ),
            notifications_with_subscribers=notifications,
        )
        # Budgets checks that it may publish when the budget is created: the topic's policy first (the
        # budget's Ref already orders the topic itself).
        self.budget.node.add_dependency(self.topic.node.find_child("Policy"))

