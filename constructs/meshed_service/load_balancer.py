"""Extension: puts a service's app container behind an Application Load Balancer target group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2

from constructs.compliance import acknowledge_nag, skip_cfn_lint

from .alarms import deployment_alarm, error_rate, floor_note, latency_p95
from .extensions import ServiceExtension
from .scaling import track_requests_per_target
from .service import APP_CONTAINER, MeshedFargateService


@dataclass(frozen=True)
class RollbackAlarms:
    """Thresholds of the load balancer's deployment alarms, and where they notify."""

    alarm_name_prefix: str
    action: cloudwatch.IAlarmAction
    max_5xx_percent: float
    max_p95_latency_ms: int


class LoadBalancerTarget(ServiceExtension):
    """Registers every task's app container in ``target_group`` (IP targets on the app port).

    CDK opens the service's security group to the load balancer's on that port. New tasks get
    ``health_check_grace_period_seconds`` (default 60) before failed load balancer health checks
    count against them.

    For ECS canary and linear deployments, also give ``alternate_target_group`` (empty) and the
    ``listener_rule`` that forwards to both: ECS registers the new revision's tasks in the
    alternate group and shifts the rule's weights, through a role it assumes for that.

    With ``rollback_alarms``, each target group gets a 5xx-rate and a p95-latency alarm that the
    deployment rolls back on. During a canary one group carries only the new revision, so its
    alarms judge the new revision alone, whatever share of the traffic it has.

    With ``requests_per_target_per_minute``, a scaling service also tracks requests per healthy
    target across both groups (``scaling.track_requests_per_target``).
    """

    def __init__(self, target_group: elbv2.IApplicationTargetGroup, *, health_check_grace_period_seconds: int = 60,
                 alternate_target_group: elbv2.IApplicationTargetGroup | None = None,
                 listener_rule: elbv2.ApplicationListenerRule | None = None,
                 rollback_alarms: RollbackAlarms | None = None,
                 requests_per_target_per_minute: int | None = None) -> None:
        if (alternate_target_group is None) != (listener_rule is None):
            raise ValueError("alternate_target_group and listener_rule go together: give both for canary or linear deployments, or neither")
        if requests_per_target_per_minute is not None and requests_per_target_per_minute < 1:
            raise ValueError(f"requests_per_target_per_minute={requests_per_target_per_minute} is invalid: expected 1 or more, or None")
        self.requests_per_target_per_minute = requests_per_target_per_minute
        self.target_group = target_group
        self.health_check_grace_period = cdk.Duration.seconds(health_check_grace_period_seconds)
        self.alternate_target_group = alternate_target_group
        self.listener_rule = listener_rule
        self.rollback_alarms = rollback_alarms
        self.alarms: list[cloudwatch.Alarm] = []
        self._service: MeshedFargateService | None = None

    def use_task_definition(self, service: MeshedFargateService) -> None:
        self._service = service

    def modify_service_props(self, props: dict[str, Any]) -> dict[str, Any]:
        props["health_check_grace_period"] = self.health_check_grace_period
        if self.rollback_alarms:
            self._create_alarms(self._service, self.rollback_alarms)
            existing = props.get("deployment_alarms")
            props["deployment_alarms"] = ecs.DeploymentAlarmConfig(
                alarm_names=[*(existing.alarm_names if existing else []), *(alarm.alarm_name for alarm in self.alarms)],
                behavior=ecs.AlarmBehavior.ROLLBACK_ON_ALARM,
            )
        return props

    def _create_alarms(self, service: MeshedFargateService, settings: RollbackAlarms) -> None:
        name = service.props.name
        groups = [group for group in (self.target_group, self.alternate_target_group) if group is not None]
        for i, group in enumerate(groups):
            minute = cdk.Duration.minutes(1)
            # Failed answers and failed connections: a hanging or crashing revision shows as the latter.
            errors = cloudwatch.MathExpression(
                expression="FILL(answered, 0) + FILL(unreached, 0)", period=minute,
                using_metrics={
                    "answered": group.metrics.http_code_target(elbv2.HttpCodeTarget.TARGET_5XX_COUNT, period=minute, statistic="Sum"),
                    "unreached": group.metrics.custom("TargetConnectionErrorCount", period=minute, statistic="Sum"),
                },
            )
            requests = group.metrics.request_count(period=minute)
            self.alarms += [
                deployment_alarm(
                    service, f"LoadBalancerGroup{i}FiveXxRateAlarm", error_rate(errors, requests),
                    alarm_name=f"{settings.alarm_name_prefix}-{name}-lb-group{i}-5xx-rate", threshold=settings.max_5xx_percent,
                    summary=(f"{name}, load balancer target group {i}: more than {settings.max_5xx_percent:g}% of requests answered 5xx; "
                             + floor_note(rate=True)),
                    runbook="elevated-5xx", action=settings.action),
                deployment_alarm(
                    service, f"LoadBalancerGroup{i}P95LatencyAlarm",
                    latency_p95(group.metrics.target_response_time(period=minute, statistic="p95"), requests),
                    # CloudWatch reports TargetResponseTime in seconds.
                    alarm_name=f"{settings.alarm_name_prefix}-{name}-lb-group{i}-p95-latency", threshold=settings.max_p95_latency_ms / 1000,
                    summary=(f"{name}, load balancer target group {i}: p95 response time above {settings.max_p95_latency_ms} ms; "
                             + floor_note(rate=False)),
                    runbook="latency-slo-breach", action=settings.action),
            ]

    def use_service(self, service: MeshedFargateService) -> None:
        alternate = None
        if self.alternate_target_group is not None:
            alternate = ecs.AlternateTarget(
                "AlternateTarget", alternate_target_group=self.alternate_target_group,
                production_listener=ecs.ListenerRuleConfiguration.application_listener_rule(self.listener_rule),
            )
        target = service.service.load_balancer_target(
            container_name=APP_CONTAINER, container_port=service.props.container_port, alternate_target=alternate)
        target.attach_to_application_target_group(self.target_group)
        if self.requests_per_target_per_minute is not None and service.scaling is not None:
            groups = [group for group in (self.target_group, self.alternate_target_group) if group is not None]
            track_requests_per_target(service, groups, self.requests_per_target_per_minute)
        if alternate is not None:
            skip_cfn_lint(service.service.node.default_child, {
                "W3005": "CDK makes the service depend on its production listener rule, which the service's AdvancedConfiguration also references",
            })
            role = service.service.node.find_child("AlternateTargetRole")  # created by ecs.AlternateTarget
            acknowledge_nag(
                role,
                "The role ECS assumes to shift a deployment's traffic between the target groups carries AWS's "
                "AmazonECSInfrastructureRolePolicyForLoadBalancers, which AWS keeps in step with what ECS calls",
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonECSInfrastructureRolePolicyForLoadBalancers]",
            )
