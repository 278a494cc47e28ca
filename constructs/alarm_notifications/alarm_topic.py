"""The SNS topic every alarm of a region notifies: encrypted, TLS only, publishable by CloudWatch."""

from __future__ import annotations

from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct


class AlarmTopic(Construct):
    """Exposes ``topic`` (subscribe on-call tooling to it) and ``key`` (its KMS key). Each of ``emails`` is
    subscribed (SNS mails it a confirmation link first)."""

    def __init__(self, scope: Construct, construct_id: str, *, topic_name: str, emails: Sequence[str] = ()) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.key = kms.Key(
            self, "Key", description=f"Encrypts the {topic_name} alarm topic", enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        # CloudWatch alarms publish to an encrypted topic only if they may use its key.
        self.key.add_to_resource_policy(iam.PolicyStatement(
            sid="AllowCloudWatchAlarmsOfThisAccount",
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=["kms:Decrypt", "kms:GenerateDataKey*"],
            resources=["*"],
            conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
        ))
        self.topic = sns.Topic(self, "Topic", topic_name=topic_name, master_key=self.key, enforce_ssl=True)
        # A topic policy replaces SNS's default one, so CloudWatch needs an explicit allow.
        self.topic.add_to_resource_policy(iam.PolicyStatement(
            sid="AllowCloudWatchAlarmsOfThisAccount",
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=["sns:Publish"],
            resources=[self.topic.topic_arn],
            conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
        ))
        for email in emails:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
