"""SpotInterruptionMetric: a CloudWatch metric of Fargate Spot interruptions, which ECS does not publish.

ECS reports a reclaimed Spot task only as an "ECS Task State Change" event with stopCode
SpotInterruption. A rule on the default bus copies those events of one cluster into a log group,
and a metric filter counts each interrupted task once (its STOPPED event) per ECS service (the event's
``group``, ``service:<name>``).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from constructs.event_bus import target_dead_letter_queue

METRIC_NAME = "SpotInterruptions"


class SpotInterruptionMetric(Construct):
    """Exposes ``log_group`` (the events, for Logs Insights), ``rule``, ``dead_letter_queue`` (events the rule
    could not deliver) and ``metric(service_name)``."""

    def __init__(self, scope: Construct, construct_id: str, *, cluster_arn: str, metric_namespace: str,
                 log_group_name: str, rule_name: str, encryption_key: kms.IKey, retention: logs.RetentionDays) -> None:
        super().__init__(scope, construct_id)
        self.metric_namespace = metric_namespace
        self.log_group = logs.LogGroup(self, "Events", log_group_name=log_group_name, encryption_key=encryption_key,
                                       retention=retention, removal_policy=cdk.RemovalPolicy.DESTROY)
        stack = cdk.Stack.of(self)
        # The rule's ARN from its name: the rule depends on the policy below, which names the rule.
        rule_arn = stack.format_arn(service="events", resource="rule", resource_name=rule_name)
        # EventBridge writes to a log group under the group's resource policy (no role). It sends the rule's ARN as
        # aws:SourceArn with PutLogEvents but no source with CreateLogStream (AWS's eventbridge-cloudwatch pattern in
        # aws-samples/serverless-patterns conditions PutLogEvents only): an unconditioned CreateLogStream lets any
        # rule make empty streams here, never write into them.
        policy = self.log_group.add_to_resource_policy(iam.PolicyStatement(
            principals=[iam.ServicePrincipal("events.amazonaws.com")], actions=["logs:CreateLogStream"],
            resources=[self.log_group.log_group_arn]))
        self.log_group.add_to_resource_policy(iam.PolicyStatement(
            principals=[iam.ServicePrincipal("events.amazonaws.com")], actions=["logs:PutLogEvents"],
            resources=[self.log_group.log_group_arn], conditions={"ArnEquals": {"aws:SourceArn": rule_arn}}))
        # CloudWatch Logs' own delivery service, which AWS's EventBridge guide lists beside it, for this account only.
        self.log_group.add_to_resource_policy(iam.PolicyStatement(
            principals=[iam.ServicePrincipal("delivery.logs.amazonaws.com")], actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[self.log_group.log_group_arn], conditions={"StringEquals": {"aws:SourceAccount": stack.account}}))
        # An L1 target: the L2 CloudWatchLogGroup target would add a Lambda-backed custom resource for
        # the same resource policy.
        # Like every event target of the app: retries, then a dead-letter queue that an alarm watches.
        self.dead_letter_queue = target_dead_letter_queue(
            self, "DeadLetterQueue", dead_letter_of="the rule's target (its DeadLetterConfig)", senders="EventBridge")
        self.rule = events.CfnRule(
            self, "Rule", name=rule_name,
            description="Fargate Spot interruptions of this region's cluster, for the SpotInterruptions metric",
            event_pattern={"source": ["aws.ecs"], "detail-type": ["ECS Task State Change"],
                           "detail": {"clusterArn": [cluster_arn], "stopCode": ["SpotInterruption"]}},
            state="ENABLED",
            targets=[events.CfnRule.TargetProperty(id="log-group", arn=stack.format_arn(
                service="logs", resource="log-group", resource_name=log_group_name,
                arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME),
                dead_letter_config=events.CfnRule.DeadLetterConfigProperty(arn=self.dead_letter_queue.queue_arn),
                retry_policy=events.CfnRule.RetryPolicyProperty(maximum_retry_attempts=185, maximum_event_age_in_seconds=86400))],
        )
        self.rule.node.add_dependency(policy.policy_dependable)
        self.dead_letter_queue.add_to_resource_policy(iam.PolicyStatement(
            principals=[iam.ServicePrincipal("events.amazonaws.com")], actions=["sqs:SendMessage"],
            resources=[self.dead_letter_queue.queue_arn], conditions={"ArnEquals": {"aws:SourceArn": self.rule.attr_arn}},
        ))
        # ECS sends a task state change event at each step of the task's stop (the two-minute warning while it
        # still runs, STOPPING, DEPROVISIONING, STOPPED), each with the stopCode: the log group keeps them all
        # (the timeline of an interruption), the metric counts the final one, one per interrupted task.
        logs.MetricFilter(
            self, "Count", log_group=self.log_group, metric_namespace=metric_namespace, metric_name=METRIC_NAME,
            filter_pattern=logs.FilterPattern.all(
                logs.FilterPattern.string_value("$.detail.stopCode", "=", "SpotInterruption"),
                logs.FilterPattern.string_value("$.detail.lastStatus", "=", "STOPPED")),
            metric_value="1", dimensions={"group": "$.detail.group"}, unit=cloudwatch.Unit.COUNT,
        )

    def metric(self, ecs_service_name: str) -> cloudwatch.Metric:
        """Spot interruptions of one ECS service's tasks, per 5 minutes."""
        return cloudwatch.Metric(namespace=self.metric_namespace, metric_name=METRIC_NAME,
                                 dimensions_map={"group": f"service:{ecs_service_name}"}, statistic="Sum",
                                 period=cdk.Duration.minutes(5), label=f"{ecs_service_name}: Spot interruptions")
