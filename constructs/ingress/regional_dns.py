"""Domain mode: a region's own DNS name for its load balancer, and a Route 53 health check of the region."""

from __future__ import annotations

from typing import Mapping, Sequence

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_route53_targets as targets
from aws_cdk import aws_sns as sns
from constructs import Construct

from constructs.compliance import acknowledge_nag

RUNBOOK = "runbooks/region-failover.md"


class RegionalDnsRecord(Construct):
    """``record_name`` (A alias) -> the region's internal load balancer, plus a health check of the region.

    The name resolves publicly to private addresses: it serves callers inside the VPCs and networks
    joined to them (operators, smoke tests), not the internet. Route 53's own checkers cannot reach
    an internal load balancer, so the region's health is the load balancer's: target group health
    checks probe each service's health path.

    ``target_groups`` maps each service to its target groups: the live one and, with ECS canary or
    linear deployments, the alternate one. ECS swaps their roles at every such deployment, so the
    idle group is empty by design. Hence:

    * per service, an alarm ``<prefix>-<service>-no-healthy-targets`` (sum over its groups below 1),
      notifying ``alarm_topic``;
    * per target group, an alarm without actions (in ALARM whenever the group is empty) and a
      Route 53 CLOUDWATCH_METRIC health check on it (Route 53 takes single-metric alarms only);
    * ``health_check``: CALCULATED, healthy while at least as many groups are healthy as there are
      services: one per service in steady state. During one service's deployment both its groups
      are healthy, which can mask another service that is down at that moment. A group check without
      data (its alarm INSUFFICIENT_DATA: just created, or no metric) is unhealthy, never its last status.

    Attributes: ``record``, ``health_check``, ``alarms`` (service -> notifying alarm).
    """

    def __init__(self, scope: Construct, construct_id: str, *, zone: route53.IHostedZone, record_name: str,
                 load_balancer: elbv2.IApplicationLoadBalancer,
                 target_groups: Mapping[str, Sequence[elbv2.ApplicationTargetGroup]],
                 alarm_name_prefix: str, alarm_topic: sns.ITopic) -> None:
        super().__init__(scope, construct_id)
        if not target_groups or not all(target_groups.values()):
            raise ValueError("target_groups is invalid: give every service at least one target group")
        region = cdk.Stack.of(self).region
        self.record = route53.ARecord(self, "Record", zone=zone, record_name=record_name,
                                      target=route53.RecordTarget.from_alias(targets.LoadBalancerTarget(load_balancer)))
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        children = []
        for name, groups in target_groups.items():
            healthy = {f"g{i}": group.metrics.healthy_host_count(period=cdk.Duration.minutes(1), statistic="Minimum")
                       for i, group in enumerate(groups)}
            alarm = cloudwatch.MathExpression(
                expression=" + ".join(f"FILL({key}, 0)" for key in healthy), using_metrics=healthy,
                period=cdk.Duration.minutes(1), label=f"{name} healthy targets",
            ).create_alarm(
                self, f"{name}-no-healthy-targets",
                alarm_name=f"{alarm_name_prefix}-{name}-no-healthy-targets",
                alarm_description=f"{name} in {region}: no task passes the load balancer's health check of its health "
                                  f"path. Runbook: {RUNBOOK}",
                threshold=1, evaluation_periods=2,
                comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
            )
            alarm.add_alarm_action(cloudwatch_actions.SnsAction(alarm_topic))
            alarm.add_ok_action(cloudwatch_actions.SnsAction(alarm_topic))
            self.alarms[name] = alarm
            owned: list[Construct] = [alarm]
            for i in range(len(groups)):
                group_alarm = healthy[f"g{i}"].create_alarm(
                    self, f"{name}-group{i}-empty",
                    alarm_name=f"{alarm_name_prefix}-{name}-group{i}-empty",
                    alarm_description=f"Route 53 health check input, no notification: no healthy target in this "
                                      f"{name} target group (the idle group of a deployment is empty by design). "
                                      f"Runbook: {RUNBOOK}",
                    threshold=1, evaluation_periods=2,
                    comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                    treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
                )
                acknowledge_nag(
                    group_alarm,
                    "An input to a Route 53 health check, not a page: the idle target group of an ECS deployment is "
                    "empty by design, so this alarm is often in ALARM; the service's no-healthy-targets alarm notifies.",
                    "NIST.800.53.R5-CloudWatchAlarmAction",
                )
                owned.append(group_alarm)
                children.append(route53.CfnHealthCheck(
                    self, f"{name}-group{i}-health",
                    health_check_config=route53.CfnHealthCheck.HealthCheckConfigProperty(
                        type="CLOUDWATCH_METRIC",
                        alarm_identifier=route53.CfnHealthCheck.AlarmIdentifierProperty(name=group_alarm.alarm_name, region=region),
                        # No data is no evidence of health. LastKnownStatus would keep a group that stopped reporting
                        # healthy (and a new check starts healthy), masking a dead region in the calculated check.
                        # Unhealthy costs nothing in steady state: the idle group counts as unhealthy anyway (its alarm
                        # breaches on 0 or no data) and the threshold needs only the live group of each service.
                        insufficient_data_health_status="Unhealthy",
                    ),
                    health_check_tags=[route53.CfnHealthCheck.HealthCheckTagProperty(key="Name", value=f"{alarm_name_prefix}-{name}-group{i}")],
                ))
                owned.append(children[-1])
            # The service's alarms and health checks; the region's calculated health check is every service's.
            for construct in owned:
                cdk.Tags.of(construct).add("service", name)
        self.health_check = route53.CfnHealthCheck(
            self, "RegionHealth",
            health_check_config=route53.CfnHealthCheck.HealthCheckConfigProperty(
                type="CALCULATED", child_health_checks=[child.attr_health_check_id for child in children],
                health_threshold=len(target_groups),
            ),
            health_check_tags=[route53.CfnHealthCheck.HealthCheckTagProperty(key="Name", value=f"{alarm_name_prefix}-region")],
        )
