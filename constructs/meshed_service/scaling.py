"""Target tracking on load signals beyond CPU and memory: requests per target and queue backlog per task.

Both policies use metric math, which CDK's target tracking L2 does not render, so they are written
as ``CfnScalingPolicy`` on the service's scalable target. Each adds what the service's CPU and
memory policies have: its cooldowns. Application Auto Scaling scales out when any policy asks and
in only when every policy agrees, so each metric here is filled with 0 where CloudWatch has no
data point (no requests, an empty queue): a policy without data would block every scale-in.
"""

from __future__ import annotations

from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_sqs as sqs

from .service import MeshedFargateService

_Query = appscaling.CfnScalingPolicy.TargetTrackingMetricDataQueryProperty


def _metric_query(query_id: str, metric: cloudwatch.Metric) -> _Query:
    stat = metric.to_metric_config().metric_stat
    return _Query(id=query_id, return_data=False, metric_stat=appscaling.CfnScalingPolicy.TargetTrackingMetricStatProperty(
        stat=stat.statistic,
        metric=appscaling.CfnScalingPolicy.TargetTrackingMetricProperty(
            namespace=stat.namespace, metric_name=stat.metric_name,
            dimensions=[appscaling.CfnScalingPolicy.TargetTrackingMetricDimensionProperty(name=d.name, value=d.value)
                        for d in stat.dimensions or []],
        ),
    ))


def _track(service: MeshedFargateService, construct_id: str, policy_name: str, target_value: float,
           queries: Sequence[_Query], expression: str, label: str) -> appscaling.CfnScalingPolicy:
    """A target tracking policy on ``expression`` over ``queries``, with the service's cooldowns."""
    props = service.props
    # ecs.ScalableTaskCount keeps its ScalableTarget as the child "Target" (BaseScalableAttribute).
    target = service.scaling.node.find_child("Target")
    return appscaling.CfnScalingPolicy(
        service, construct_id,
        policy_name=policy_name,
        policy_type="TargetTrackingScaling",
        scaling_target_id=target.scalable_target_id,
        target_tracking_scaling_policy_configuration=appscaling.CfnScalingPolicy.TargetTrackingScalingPolicyConfigurationProperty(
            target_value=target_value,
            scale_out_cooldown=props.scale_out_cooldown_seconds,
            scale_in_cooldown=props.scale_in_cooldown_seconds,
            customized_metric_specification=appscaling.CfnScalingPolicy.CustomizedMetricSpecificationProperty(
                metrics=[*queries, _Query(id="value", expression=expression, label=label, return_data=True)],
            ),
        ),
    )


def track_requests_per_target(service: MeshedFargateService, target_groups: Sequence[elbv2.IApplicationTargetGroup],
                              requests_per_target_per_minute: int) -> appscaling.CfnScalingPolicy:
    """Keep load balancer requests per healthy target near ``requests_per_target_per_minute``.

    The metric is ALB's RequestCountPerTarget, computed over all of the service's target groups:
    their requests summed, divided by their healthy targets summed. With ECS canary or linear
    deployments a service has two groups, and after each deployment the other one takes the
    production traffic, so a policy on one fixed group (the predefined ALBRequestCountPerTarget
    names exactly one) would see no requests half the time. During a canary the sum counts both
    revisions' tasks, which all serve traffic. With no healthy target the value is the request
    count itself, so the service scales out rather than waiting.
    """
    if not target_groups:
        raise ValueError("target_groups=[] is invalid: give the service's target groups")
    if requests_per_target_per_minute < 1:
        raise ValueError(f"requests_per_target_per_minute={requests_per_target_per_minute} is invalid: expected 1 or more")
    minute = cdk.Duration.minutes(1)
    queries: list[_Query] = []
    for i, group in enumerate(target_groups):
        queries.append(_metric_query(f"requests{i}", group.metrics.request_count(period=minute, statistic="Sum")))
        queries.append(_metric_query(f"hosts{i}", group.metrics.healthy_host_count(period=minute, statistic="Average")))
    requests = " + ".join(f"FILL(requests{i}, 0)" for i in range(len(target_groups)))
    hosts = " + ".join(f"FILL(hosts{i}, 0)" for i in range(len(target_groups)))
    return _track(
        service, "RequestsPerTargetScaling", f"{service.props.name}-requests-per-target", requests_per_target_per_minute,
        queries, f"IF(({hosts}) > 0, ({requests}) / ({hosts}), {requests})", "Requests per healthy target per minute",
    )


def track_backlog_per_task(service: MeshedFargateService, queue: sqs.IQueue, backlog_per_task: int) -> appscaling.CfnScalingPolicy:
    """Keep the queue's visible messages per running task near ``backlog_per_task``.

    Choose it as the acceptable wait of a message divided by the time one task takes per message:
    at that backlog the tasks drain the queue within the acceptable wait. The task count is ECS
    Container Insights' RunningTaskCount of the service (the cluster must have Container Insights).
    """
    if backlog_per_task < 1:
        raise ValueError(f"backlog_per_task={backlog_per_task} is invalid: expected 1 or more")
    minute = cdk.Duration.minutes(1)
    tasks = cloudwatch.Metric(
        namespace="ECS/ContainerInsights", metric_name="RunningTaskCount", statistic="Average", period=minute,
        dimensions_map={"ClusterName": service.cluster.cluster_name, "ServiceName": service.service.service_name},
    )
    queries = [
        _metric_query("messages", queue.metric_approximate_number_of_messages_visible(period=minute, statistic="Average")),
        _metric_query("tasks", tasks),
    ]
    return _track(
        service, "BacklogPerTaskScaling", f"{service.props.name}-backlog-per-task", backlog_per_task, queries,
        "IF(tasks > 0, FILL(messages, 0) / tasks, FILL(messages, 0))", "Visible queue messages per running task",
    )
