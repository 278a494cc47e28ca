"""FisExperiment: one AWS FIS experiment template with its own least-privilege role, stop condition and log."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_fis as fis
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from constructs.compliance import acknowledge_nag

# FIS writes experiment logs through CloudWatch Logs' vended-log delivery; none of these four
# actions takes a resource ARN (FIS user guide, "Experiment logging permissions").
TARGET = "targets"  # the target set an action acts on unless it names another
_LOG_DELIVERY_ACTIONS = ["logs:CreateLogDelivery", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups"]


@dataclass(frozen=True)
class ExperimentAction:
    """One FIS action: ``action_id`` on the template's target set ``target_set``, which the action names
    ``target_key`` (e.g. Tasks)."""

    action_id: str
    description: str
    target_key: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    start_after: Sequence[str] = ()
    target_set: str = TARGET


class FisExperiment(Construct):
    """An ``AWS::FIS::ExperimentTemplate`` named ``name`` (its Name tag), whose actions act on ``targets``
    (target set name -> CloudFormation's target entry), whose role may do only what its actions need
    (``statements``), which stops when ``stop_alarm`` goes to ALARM, and which logs to ``log_group``. The
    role trusts FIS only for experiments of this account and region.

    Exposes ``template`` (the CfnExperimentTemplate; ``template.ref`` is its ID) and ``role``.
    """

    def __init__(self, scope: Construct, construct_id: str, *, name: str, description: str,
                 targets: Mapping[str, dict[str, Any]], actions: Mapping[str, ExperimentAction],
                 statements: Sequence[iam.PolicyStatement], stop_alarm: cloudwatch.IAlarm, log_group: logs.ILogGroup,
                 wildcard_reason: str = "", finding_reasons: Mapping[str, str] | None = None,
                 role_name: str | None = None, skip_empty_targets: bool = False) -> None:
        unknown = sorted({action.target_set for action in actions.values()} - set(targets))
        if unknown:
            raise ValueError(f"{name}: an action acts on target set {unknown[0]!r}, which the template does not define")
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.role = iam.Role(
            self, "Role", role_name=role_name, description=f"AWS FIS experiment {name}: only what its actions need",
            assumed_by=iam.ServicePrincipal("fis.amazonaws.com", conditions={
                "StringEquals": {"aws:SourceAccount": stack.account},
                "ArnLike": {"aws:SourceArn": stack.format_arn(service="fis", resource="experiment", resource_name="*")},
            }),
        )
        for statement in statements:
            self.role.add_to_policy(statement)
        self.role.add_to_policy(iam.PolicyStatement(actions=_LOG_DELIVERY_ACTIONS, resources=["*"]))
        acknowledge_nag(
            self.role,
            "No resource-level permissions exist for the CloudWatch Logs (logs) log-delivery actions FIS needs to write "
            "the experiment log" + (f"; {wildcard_reason}" if wildcard_reason else ""),
            "AwsSolutions-IAM5[Resource::*]",
        )
        acknowledge_nag(self.role, "The role's grants live and die with the role, in its own inline policy",
                        "NIST.800.53.R5-IAMNoInlinePolicy")
        for finding, reason in (finding_reasons or {}).items():
            acknowledge_nag(self.role, reason, finding)

        self.template = fis.CfnExperimentTemplate(
            self, "Template",
            description=description,
            role_arn=self.role.role_arn,
            targets=dict(targets),
            actions={
                action_name: fis.CfnExperimentTemplate.ExperimentTemplateActionProperty(
                    action_id=action.action_id, description=action.description,
                    targets={action.target_key: action.target_set},
                    parameters=dict(action.parameters) or None,
                    start_after=list(action.start_after) or None,
                )
                for action_name, action in actions.items()
            },
            stop_conditions=[fis.CfnExperimentTemplate.ExperimentTemplateStopConditionProperty(
                source="aws:cloudwatch:alarm", value=stop_alarm.alarm_arn)],
            log_configuration=fis.CfnExperimentTemplate.ExperimentTemplateLogConfigurationProperty(
                log_schema_version=2,
                cloud_watch_logs_configuration={"LogGroupArn": log_group.log_group_arn},
            ),
            experiment_options=fis.CfnExperimentTemplate.ExperimentTemplateExperimentOptionsProperty(
                account_targeting="single-account",
                # No target (say, no running task) is a failed experiment, not a quiet success, unless the
                # experiment says an empty target set is a case it covers (its other actions still run).
                empty_target_resolution_mode="skip" if skip_empty_targets else "fail",
            ),
            tags={"Name": name},
        )
        # The role's policy must exist before FIS checks the template's role (the role itself: RoleArn).
        self.template.node.add_dependency(self.role.node.find_child("DefaultPolicy"))
