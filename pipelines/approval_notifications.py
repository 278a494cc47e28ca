"""Tell people that a release waits for the manual approval before prod, instead of waiting until someone looks.

A CodeStar Notifications rule on the pipeline's manual-approval-needed event publishes to an SNS topic of its own,
which e-mails the configured approvers. The notifications service publishes, not the pipeline's roles: those and
their permissions boundary stay as they are. Why not ManualApprovalStep's ``notification_topic``: CodePipeline
would publish with the pipeline's role, which would then need sns:Publish and the topic key outside its boundary.
"""

from __future__ import annotations

from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_codepipeline as codepipeline
from aws_cdk import aws_codestarnotifications as notifications
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

NOTIFICATIONS_PRINCIPAL = "codestar-notifications.amazonaws.com"
# The event type ID (Developer Tools console guide, "Events for notification rules on pipelines"). Not
# PipelineNotificationEvents.MANUAL_APPROVAL_NEEDED.value: in Python that is the member's name, not its string.
APPROVAL_NEEDED = "codepipeline-pipeline-manual-approval-needed"


class ApprovalNotifications(Construct):
    """The rule ``rule`` (event ``codepipeline-pipeline-manual-approval-needed`` of ``pipeline``) and its target
    ``topic``, encrypted with ``key``; each of ``emails`` is subscribed (SNS mails a confirmation link first).

    The policies are those AWS documents for notification rules with an encrypted topic ("Configure Amazon SNS
    topics for notifications", Developer Tools console guide). CDK's own binding of a topic as a rule target
    (``pipeline.notify_on``) would add both grants without any condition, so the rule is written here.
    """

    def __init__(self, scope: Construct, construct_id: str, *, pipeline: codepipeline.IPipeline, topic_name: str,
                 emails: Sequence[str]) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.key = kms.Key(
            self, "Key", description=f"Encrypts the {topic_name} topic (a release awaits approval)",
            enable_key_rotation=True, removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        # The service encrypts through SNS only; AWS documents no aws:SourceArn for this principal's KMS calls.
        self.key.add_to_resource_policy(iam.PolicyStatement(
            sid="AllowCodeStarNotificationsThroughSns",
            principals=[iam.ServicePrincipal(NOTIFICATIONS_PRINCIPAL)],
            actions=["kms:Decrypt", "kms:GenerateDataKey*"],
            resources=["*"],  # in a key policy, "*" is this key
            conditions={"StringEquals": {"kms:ViaService": f"sns.{stack.region}.amazonaws.com"}},
        ))
        self.topic = sns.Topic(self, "Topic", topic_name=topic_name, master_key=self.key, enforce_ssl=True,
                               display_name=f"{topic_name}: a release awaits approval")
        # The topic policy replaces SNS's default one: only TLS (enforce_ssl) and only the notifications
        # service on behalf of this account may publish; this topic is this pipeline's alone.
        self.topic.add_to_resource_policy(iam.PolicyStatement(
            sid="AllowCodeStarNotificationsOfThisAccount",
            principals=[iam.ServicePrincipal(NOTIFICATIONS_PRINCIPAL)],
            actions=["sns:Publish"],
            resources=[self.topic.topic_arn],
            conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
        ))
        for email in emails:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))

        self.rule = notifications.CfnNotificationRule(
            self, "Rule",
            name=topic_name,
            resource=pipeline.pipeline_arn,
            event_type_ids=[APPROVAL_NEEDED],
            # FULL: the event plus what CodePipeline adds about the execution, not only the bare event.
            detail_type="FULL",
            targets=[notifications.CfnNotificationRule.TargetProperty(target_type="SNS", target_address=self.topic.topic_arn)],
        )
        # A target the service may not publish to shows as unreachable: the topic policy first.
        self.rule.node.add_dependency(self.topic.node.find_child("Policy"))
