"""Data stack (primary region only): each service's global table and the signer's replicated, rotated secret."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from constructs import Construct

from constructs.service_data import ServiceData, TableIndex

from .config import FoundationConfig
from .defaults import profile_defaults
from .network_stack import NetworkStack


class DataStack(cdk.Stack):
    """One ServiceData per service with ``table`` or ``signing_key``, replicated to every other region.

    Deployed in the primary region's stage after baseline and network, before its services; the other
    regions' services stacks find the replicas by name, so the primary stage deploys first.
    Exposes ``data``: service name -> ServiceData, and ``rotation_alarms``: service name -> the alarm on
    its signing-key rotation function's errors (notifies ``alarm_topic`` on ALARM and OK).
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: FoundationConfig, network: NetworkStack,
                 alarm_topic: sns.ITopic, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        retention = logs.RetentionDays[profile_defaults(config.profile).log_retention]
        # CDK's custom-resource handler (replica keys) and the rotation function log apart.
        def log_group(construct_id: str) -> logs.LogGroup:
            return logs.LogGroup(self, construct_id, encryption_key=network.logs_key, retention=retention,
                                 removal_policy=cdk.RemovalPolicy.DESTROY)

        custom_resource_logs = log_group("CustomResourceLogs")
        rotation_logs = log_group("RotationLogs") if config.token_signer else None
        if rotation_logs:  # only the signer's secret rotates (at most one service signs)
            cdk.Tags.of(rotation_logs).add("service", config.token_signer.name)
        self.data = {
            service.name: ServiceData(
                self, f"{service.name}-data",
                name_prefix=config.prefix, name=service.name, retain=config.is_prod,
                replica_regions=config.other_regions(self.region),
                custom_resource_log_group=custom_resource_logs, rotation_log_group=rotation_logs,
                table_name=config.table_name(service.name) if service.table else None,
                table_indexes=[TableIndex(name=index.name, partition_key=index.partition_key, sort_key=index.sort_key,
                                          sort_key_type=index.sort_key_type) for index in service.table_indexes],
                signing_secret_name=config.signing_secret_name(service.name) if service.signing_key else None,
                rotation_interval=cdk.Duration.days(config.data.signing_key_rotation_days),
            )
            for service in config.services if service.table or service.signing_key
        }
        self.rotation_alarms = {
            name: _rotation_failure_alarm(self, f"{name}-rotation-errors", alarm_name=f"{config.prefix}-{name}-signing-key-rotation-errors",
                                          data=data, alarm_topic=alarm_topic)
            for name, data in self.data.items() if data.rotation
        }


def _rotation_failure_alarm(scope: Construct, construct_id: str, *, alarm_name: str, data: ServiceData,
                            alarm_topic: sns.ITopic) -> cloudwatch.Alarm:
    """Any error of the rotation function: Secrets Manager calls it once per step and a step that raises
    leaves the rotation unfinished (the secret keeps its AWSCURRENT key and retries at the next schedule)."""
    secret_name = data.signing_secret.node.default_child.name
    alarm = cloudwatch.Alarm(
        scope, construct_id, alarm_name=alarm_name,
        metric=data.rotation.function.metric_errors(period=cdk.Duration.minutes(5), statistic="Sum"),
        threshold=0, comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD, evaluation_periods=1,
        # The function runs a few times per rotation interval: no invocation is the normal state.
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        alarm_description=f"The rotation function of {secret_name} failed a step; the secret keeps its current key. "
                          "Runbook: runbooks/secret-rotation-failure.md",
    )
    cdk.Tags.of(alarm).add("service", data.name)
    action = cloudwatch_actions.SnsAction(alarm_topic)
    alarm.add_alarm_action(action)
    alarm.add_ok_action(action)
    return alarm
