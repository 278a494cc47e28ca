"""The three experiments: stop tasks, network faults in tasks, one AZ lost. Each role grants only its actions."""

from __future__ import annotations

from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from constructs.compliance import arn_as_nag_shows

from .experiment import TARGET, ExperimentAction, FisExperiment

# The SSM documents FIS runs for the two network actions when useEcsFaultInjectionEndpoints is true.
NETWORK_FAULT_DOCUMENTS = ("AWSFIS-Run-Network-Latency-ECS", "AWSFIS-Run-Network-Packet-Loss-ECS")
# The tag FIS puts on the network ACL it creates for aws:network:disrupt-connectivity.
FIS_NACL_TAG = "managedByFIS"


def slo_stop_condition(scope: Construct, construct_id: str, *, alarm_name: str, alarms: Sequence[cloudwatch.IAlarm],
                       summary: str) -> cloudwatch.CompositeAlarm:
    """A composite alarm in ALARM when any of ``alarms`` is: one stop condition for many SLO alarms.
    It notifies no one: the alarms it watches do that already."""
    if not alarms:
        raise ValueError(f"{alarm_name}: no SLO alarms to stop on; an experiment must be able to stop itself")
    return cloudwatch.CompositeAlarm(
        scope, construct_id, composite_alarm_name=alarm_name,
        alarm_rule=cloudwatch.AlarmRule.any_of(*alarms),
        alarm_description=f"{summary} is in ALARM: stops the AWS FIS experiments that name it. "
                          "Runbook: runbooks/chaos-experiments.md",
    )


def _task_target(cluster_name: str, service_name: str, selection_mode: str) -> dict:
    # Parameters, not ARNs: FIS lists the service's running tasks when the experiment starts.
    return {"resourceType": "aws:ecs:task", "selectionMode": selection_mode,
            "parameters": {"cluster": cluster_name, "service": service_name}}


def _tasks_in_zone(cluster_name: str, availability_zone: str) -> dict:
    # Every running task of the cluster (any service) that DescribeTasks places in the zone.
    return {"resourceType": "aws:ecs:task", "selectionMode": "ALL", "parameters": {"cluster": cluster_name},
            "filters": [{"path": "AvailabilityZone", "values": [availability_zone]}]}


def _tasks_of(scope: Construct, cluster_name: str) -> str:
    return cdk.Stack.of(scope).format_arn(service="ecs", resource="task", resource_name=f"{cluster_name}/*")


def _task_statements(scope: Construct, cluster_name: str, *task_actions: str) -> list[iam.PolicyStatement]:
    """Find the service's tasks (ListTasks in this cluster only) and act on tasks of this cluster only."""
    cluster_arn = cdk.Stack.of(scope).format_arn(service="ecs", resource="cluster", resource_name=cluster_name)
    return [
        iam.PolicyStatement(actions=["ecs:ListTasks"], resources=["*"], conditions={"ArnEquals": {"ecs:cluster": cluster_arn}}),
        iam.PolicyStatement(actions=["ecs:DescribeTasks", *task_actions], resources=[_tasks_of(scope, cluster_name)]),
    ]


def _tasks_finding(scope: Construct, cluster_name: str) -> dict[str, str]:
    return {f"AwsSolutions-IAM5[Resource::{arn_as_nag_shows(scope, 'ecs', f'task/{cluster_name}/*')}]":
            "ECS (ecs) task IDs are new each time a task starts, so no resource-level ARN can name them in advance: the "
            "experiment may act on any task of its own cluster only"}


_LIST_TASKS_REASON = ("ECS (ecs) ListTasks has no resource-level permissions; the statement's ecs:cluster condition "
                      "limits it to the experiment's cluster")


class StopTasksExperiment(FisExperiment):
    """``aws:ecs:stop-task`` on ``count`` of a service's running tasks, picked at random (``COUNT(n)``, not
    ``PERCENT(n)``: constructs/chaos/README.md, ``count``): ECS must replace them while the rest carry the load. Keep ``count``
    below the service's minimum task count, or it stops the whole service."""

    def __init__(self, scope: Construct, construct_id: str, *, name: str, cluster_name: str, service_name: str,
                 count: int, stop_alarm: cloudwatch.IAlarm, log_group: logs.ILogGroup) -> None:
        if count < 1:
            raise ValueError(f"{name}: count={count}; the experiment must stop at least one task")
        tasks = "1 task" if count == 1 else f"{count} tasks"
        super().__init__(
            scope, construct_id, name=name,
            description=f"Stop {tasks} of the {service_name} service; ECS starts replacements",
            targets={TARGET: _task_target(cluster_name, service_name, f"COUNT({count})")},
            actions={"stop-tasks": ExperimentAction("aws:ecs:stop-task", f"Stop {tasks} of {service_name}", "Tasks")},
            statements=_task_statements(scope, cluster_name, "ecs:StopTask"),
            stop_alarm=stop_alarm, log_group=log_group,
            wildcard_reason=_LIST_TASKS_REASON, finding_reasons=_tasks_finding(scope, cluster_name),
        )


class NetworkFaultsExperiment(FisExperiment):
    """``aws:ecs:task-network-latency`` then ``aws:ecs:task-network-packet-loss`` (they cannot run at the
    same time) on all of a service's running tasks, through the ECS fault-injection endpoints. The
    service's task definition needs ``FaultInjection`` (constructs/meshed_service)."""

    def __init__(self, scope: Construct, construct_id: str, *, name: str, cluster_name: str, service_name: str,
                 latency_ms: int, packet_loss_percent: int, duration: cdk.Duration, stop_alarm: cloudwatch.IAlarm,
                 log_group: logs.ILogGroup, role_name: str | None = None) -> None:
        stack = cdk.Stack.of(scope)
        iso = duration.to_iso_string()
        common = {"duration": iso, "useEcsFaultInjectionEndpoints": "true"}
        super().__init__(
            scope, construct_id, name=name,
            description=f"Add {latency_ms} ms latency, then drop {packet_loss_percent}% of packets, in the {service_name} service's tasks",
            targets={TARGET: _task_target(cluster_name, service_name, "ALL")},
            actions={
                "latency": ExperimentAction(
                    "aws:ecs:task-network-latency", f"{latency_ms} ms more latency on every packet", "Tasks",
                    {**common, "delayMilliseconds": str(latency_ms)}),
                "packet-loss": ExperimentAction(
                    "aws:ecs:task-network-packet-loss", f"Drop {packet_loss_percent}% of packets", "Tasks",
                    {**common, "lossPercent": str(packet_loss_percent)}, start_after=["latency"]),
            },
            statements=[
                *_task_statements(scope, cluster_name),
                # FIS runs its SSM documents on the managed instance the task's sidecar registered, which
                # the sidecar tagged with the task's ARN: only tasks of this cluster.
                iam.PolicyStatement(actions=["ssm:SendCommand"], resources=[
                    stack.format_arn(service="ssm", account="", resource="document", resource_name=document)
                    for document in NETWORK_FAULT_DOCUMENTS]),
                iam.PolicyStatement(
                    actions=["ssm:SendCommand"],
                    resources=[stack.format_arn(service="ssm", resource="managed-instance", resource_name="*")],
                    conditions={"StringLike": {"ssm:resourceTag/ECS_TASK_ARN": _tasks_of(scope, cluster_name)}}),
                iam.PolicyStatement(actions=["ssm:ListCommands", "ssm:CancelCommand", "tag:GetResources"], resources=["*"]),
            ],
            stop_alarm=stop_alarm, log_group=log_group,
            wildcard_reason=f"{_LIST_TASKS_REASON}; SSM (ssm) ListCommands and CancelCommand and the tagging API's (tag) "
                            "GetResources, with which FIS finds a task's managed instance by tag, have no resource-level permissions either",
            finding_reasons={
                **_tasks_finding(scope, cluster_name),
                f"AwsSolutions-IAM5[Resource::{arn_as_nag_shows(scope, 'ssm', 'managed-instance/*')}]":
                    "SSM (ssm) managed-instance IDs are assigned when a task registers, so no resource-level ARN can name "
                    "them in advance; the statement's condition allows only instances tagged with a task ARN of this cluster",
            },
            role_name=role_name,
        )


class AzOutageExperiment(FisExperiment):
    """One AZ lost, as in a power failure there: at the same moment ``aws:ecs:stop-task`` stops every
    running task of the cluster in the AZ, and ``aws:network:disrupt-connectivity`` (scope all) cuts every
    subnet of the AZ off the network for ``duration`` (FIS swaps in a deny-all network ACL and puts the
    original back). What ECS starts in the AZ instead, and the load balancer nodes, NAT gateway and
    endpoints there, reach nothing and are reached by nothing until then: the tasks must come back in the
    other AZs. An AZ with no running task is still an outage: FIS skips the stop and cuts the network."""

    def __init__(self, scope: Construct, construct_id: str, *, name: str, vpc: ec2.IVpc, availability_zone: str,
                 subnets: Sequence[ec2.ISubnet], cluster_name: str, duration: cdk.Duration,
                 stop_alarm: cloudwatch.IAlarm, log_group: logs.ILogGroup) -> None:
        if not subnets:
            raise ValueError(f"availability_zone={availability_zone!r}: the VPC has no subnet there")
        stack = cdk.Stack.of(scope)
        subnet_arns = [stack.format_arn(service="ec2", resource="subnet", resource_name=subnet.subnet_id) for subnet in subnets]
        acls = stack.format_arn(service="ec2", resource="network-acl", resource_name="*")
        fis_tag = {f"aws:ResourceTag/{FIS_NACL_TAG}": "true"}
        super().__init__(
            scope, construct_id, name=name,
            description=f"Stop every task in {availability_zone} and cut its subnets off the network for "
                        f"{duration.to_minutes()} minutes",
            targets={"subnets": {"resourceType": "aws:ec2:subnet", "selectionMode": "ALL", "resourceArns": subnet_arns},
                     "tasks": _tasks_in_zone(cluster_name, availability_zone)},
            actions={
                "stop-tasks": ExperimentAction(
                    "aws:ecs:stop-task", f"Stop every task of the cluster in {availability_zone}", "Tasks",
                    target_set="tasks"),
                "disrupt-connectivity": ExperimentAction(
                    "aws:network:disrupt-connectivity", f"Deny all traffic in and out of {availability_zone}'s subnets",
                    "Subnets", {"duration": duration.to_iso_string(), "scope": "all"}, target_set="subnets"),
            },
            statements=[
                *_task_statements(scope, cluster_name, "ecs:StopTask"),
                iam.PolicyStatement(actions=["ec2:DescribeSubnets", "ec2:DescribeNetworkAcls", "ec2:DescribeVpcs",
                                             "ec2:DescribeManagedPrefixLists", "ec2:GetManagedPrefixListEntries"], resources=["*"]),
                # FIS's own ACL: created tagged in this VPC, edited and deleted only while tagged. The tag
                # condition sits on the ACL alone, as in AWS's AWSFaultInjectionSimulatorNetworkAccess: a
                # request tag is a property of the resource being created, so the VPC gets a statement of its own.
                iam.PolicyStatement(actions=["ec2:CreateNetworkAcl"], resources=[acls],
                                    conditions={"StringEquals": {f"aws:RequestTag/{FIS_NACL_TAG}": "true"}}),
                iam.PolicyStatement(actions=["ec2:CreateNetworkAcl"],
                                    resources=[stack.format_arn(service="ec2", resource="vpc", resource_name=vpc.vpc_id)]),
                iam.PolicyStatement(actions=["ec2:CreateTags"], resources=[acls], conditions={"StringEquals": {
                    "ec2:CreateAction": "CreateNetworkAcl", f"aws:RequestTag/{FIS_NACL_TAG}": "true"}}),
                iam.PolicyStatement(actions=["ec2:CreateNetworkAclEntry", "ec2:DeleteNetworkAcl"], resources=[acls],
                                    conditions={"StringEquals": fis_tag}),
                # Swap the ACLs of the AZ's subnets only (and back).
                iam.PolicyStatement(actions=["ec2:ReplaceNetworkAclAssociation"], resources=[acls, *subnet_arns]),
            ],
            stop_alarm=stop_alarm, log_group=log_group,
            wildcard_reason=f"{_LIST_TASKS_REASON}; EC2's (ec2) Describe actions and GetManagedPrefixListEntries, which FIS "
                            "calls to read the subnets' current network ACLs, have no resource-level permissions",
            finding_reasons={
                **_tasks_finding(scope, cluster_name),
                f"AwsSolutions-IAM5[Resource::{arn_as_nag_shows(scope, 'ec2', 'network-acl/*')}]":
                    "EC2 (ec2): FIS's network ACL does not exist before the experiment, so no resource-level ARN can name it; "
                    "creating, editing and deleting it is limited by its managedByFIS tag, and swapping ACLs by the AZ's subnet ARNs",
            },
            skip_empty_targets=True,
        )
