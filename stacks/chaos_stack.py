"""Chaos stack: the region's AWS FIS experiment templates. They cost nothing until someone starts one."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_logs as logs
from constructs import Construct

from constructs.chaos import AzOutageExperiment, NetworkFaultsExperiment, StopTasksExperiment, slo_stop_condition

from .config import FoundationConfig
from .defaults import profile_defaults
from .network_stack import NetworkStack
from .observability_stack import ObservabilityStack
from .platform_stack import PlatformStack
from .services_stack import ServicesStack

# The alarms the experiments stop on: the ones a deployment rolls back on (constructs/meshed_service/alarms.py
# and, with App Mesh, the observability stack's load balancer alarms).
# A service with no task left answers nothing the rate and latency alarms could judge (their minutes below 20
# requests count as 0 %), so the experiment also stops when one has no running task.
SLO_ALARM_SUFFIXES = ("-5xx-rate", "-p95-latency", "-grpc-server-error-rate", "-no-running-tasks")


def experiment_names(prefix: str, service: str) -> dict[str, str]:
    """The Name tag of each template (the same in every region; the runbooks use them)."""
    return {"stop_tasks": f"{prefix}-{service}-stop-tasks", "network_faults": f"{prefix}-{service}-network-faults",
            "az_outage": f"{prefix}-az-outage"}


def slo_alarm_names(services: ServicesStack, observability: ObservabilityStack, name: str) -> list[str]:
    """A service's 5xx-rate, p95-latency (HTTP and gRPC), gRPC error-rate and no-running-tasks alarms, wherever the app
    made them (their names are fixed)."""
    primary = services.services[name]
    candidates = [alarm for extension in primary.extensions for alarm in getattr(extension, "alarms", [])]
    names = {alarm.node.default_child.alarm_name for alarm in candidates} | set(observability.services[name].alarm_names)
    # Not the App Mesh canary's own alarms (<prefix>-<name>-canary-5xx-rate...): they judge a release on its share
    # of the mesh's calls, not the service's SLO, and the experiments disturb the primary's tasks.
    return sorted(alarm_name for alarm_name in names
                  if alarm_name.endswith(SLO_ALARM_SUFFIXES) and f"-{name}-canary-" not in alarm_name)


class ChaosStack(cdk.Stack):
    """Three experiment templates per region, from the ``chaos`` config: stop some of one service's tasks
    (FoundationConfig.stop_task_count); add latency, then packet loss, to that service's tasks (only with
    ``task_network_faults``; the services stack gives that service's task definition fault injection); lose one AZ (stop
    every task there and cut its subnets off the network). Each stops when an SLO alarm fires and logs to
    one KMS-encrypted log group.

    Exposes ``experiments`` (key -> FisExperiment; keys as in ``experiment_names``) and ``log_group``.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: FoundationConfig, network: NetworkStack,
                 platform: PlatformStack, services: ServicesStack, observability: ObservabilityStack, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        chaos = config.chaos
        assert chaos is not None, "the region stage makes this stack only when chaos is configured"
        defaults = profile_defaults(config.profile)
        prefix = config.prefix
        names = experiment_names(prefix, chaos.service)

        self.log_group = logs.LogGroup(
            self, "ExperimentLogs", log_group_name=f"/aws/fis/{prefix}", encryption_key=network.logs_key,
            retention=logs.RetentionDays[defaults.log_retention], removal_policy=cdk.RemovalPolicy.DESTROY)

        # FIS allows only a few stop conditions per template (5), fewer than the alarms: one composite each.
        service_slo = slo_stop_condition(
            self, "ServiceSlo", alarm_name=f"{prefix}-{chaos.service}-slo",
            alarms=self._alarms(slo_alarm_names(services, observability, chaos.service)),
            summary=f"{chaos.service}: a 5xx-rate, gRPC error-rate, p95-latency or no-running-tasks alarm")
        all_slo = slo_stop_condition(
            self, "AllServicesSlo", alarm_name=f"{prefix}-services-slo",
            alarms=self._alarms([name for service in config.services
                                 for name in slo_alarm_names(services, observability, service.name)]
                                # The load balancer's own 5xx: what an AZ lost to its targets shows first.
                                + [name for name in observability.platform.alarm_names if name.endswith("-load-balancer-5xx-rate")]),
            summary="any service: a 5xx-rate, gRPC error-rate, p95-latency or no-running-tasks alarm, or the load balancer's own 5xx")

        cluster_name = platform.cluster_name
        duration = cdk.Duration.minutes(chaos.duration_minutes)
        self.experiments = {
            "stop_tasks": StopTasksExperiment(
                self, "StopTasks", name=names["stop_tasks"], cluster_name=cluster_name, service_name=chaos.service,
                count=config.stop_task_count, stop_alarm=service_slo, log_group=self.log_group),
        }
        if chaos.task_network_faults:
            self.experiments["network_faults"] = NetworkFaultsExperiment(
                self, "NetworkFaults", name=names["network_faults"], cluster_name=cluster_name, service_name=chaos.service,
                latency_ms=chaos.latency_ms, packet_loss_percent=chaos.packet_loss_percent, duration=duration,
                stop_alarm=service_slo, log_group=self.log_group,
                # Named: the stage's permissions boundary lets exactly this role read tags.
                role_name=config.fault_injection_role_names(self.region)[1])
        zone = f"{self.region}{chaos.availability_zone}"
        vpc = network.vpc
        subnets = [subnet for subnet in (*vpc.public_subnets, *vpc.private_subnets, *vpc.isolated_subnets)
                   if subnet.availability_zone == zone]
        self.experiments["az_outage"] = AzOutageExperiment(
            self, "AzOutage", name=names["az_outage"], vpc=vpc, availability_zone=zone, subnets=subnets,
            cluster_name=cluster_name, duration=duration, stop_alarm=all_slo, log_group=self.log_group)

        for key, experiment in self.experiments.items():
            cdk.CfnOutput(self, f"{_camel(key)}TemplateId", value=experiment.template.ref,
                          description=f"FIS experiment template {names[key]}: aws fis start-experiment --experiment-template-id <this>")

    def _alarms(self, names: list[str]) -> list[cloudwatch.IAlarm]:
        # By name: the ARNs are built here, with no export from the stacks that own the alarms.
        return [self.node.try_find_child(f"Alarm-{name}") or cloudwatch.Alarm.from_alarm_name(self, f"Alarm-{name}", name)
                for name in names]


def _camel(key: str) -> str:
    return "".join(part.capitalize() for part in key.split("_"))
