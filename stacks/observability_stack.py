"""Observability stack: per-service and platform dashboards, the alarms no other stack owns, X-Ray sampling."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from constructs.meshed_service import MeshedFargateService
from constructs.meshed_service.adot import CONTAINER as COLLECTOR_CONTAINER
from constructs.meshed_service.service_connect import discovery_name
from constructs.observability import (
    LoadBalancerErrors,
    MeshedService,
    MonitoredQueue,
    MonitoredTasks,
    QUOTAS,
    PlatformMonitoring,
    QuotaCounter,
    ReplicatedTable,
    ServiceMonitoring,
    ServiceTable,
    SloThresholds,
    SpotInterruptionMetric,
    TraceSampling,
)

from .config import FoundationConfig, ServiceConfig
from .defaults import profile_defaults
from .network_stack import NetworkStack
from .platform_stack import PlatformStack
from .services_stack import ServicesStack


class ObservabilityStack(cdk.Stack):
    """Reads what the other stacks of the region built; owns no state. Every alarm notifies the
    platform's alarm topic on ALARM and on OK. Exposes ``services`` (name -> ServiceMonitoring),
    ``platform`` (PlatformMonitoring), ``sampling`` (TraceSampling), ``spot_interruptions`` and ``quota_counter``.

    The 5xx-rate and p95-latency alarms of Service Connect deployments (the mesh's, the load balancer's and,
    for a service with a gRPC port, those of its own gRPC calls) stay with the services stack: they roll
    deployments back; the dashboards show them. With App Mesh the load balancer's and the gRPC calls' alarms are made
    here, under the same names; the services stack names the load balancer's, the task-count and the canary alarms
    made here as its ECS services' deployment alarms (by name: this stack depends on that one).
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: FoundationConfig, network: NetworkStack,
                 platform: PlatformStack, services: ServicesStack, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        defaults = profile_defaults(config.profile)
        prefix, region = config.prefix, self.region
        topic = platform.alarm_topic
        service_connect = config.mesh == "service-connect"

        self.spot_interruptions = SpotInterruptionMetric(
            self, "SpotInterruptions", cluster_arn=platform.cluster.cluster_arn, metric_namespace=f"{prefix}/ecs",
            log_group_name=f"/aws/events/{prefix}-spot-interruptions", rule_name=f"{prefix}-spot-interruptions", encryption_key=network.logs_key,
            retention=logs.RetentionDays[defaults.log_retention])

        # Cloud Map and ECR counts, which AWS/Usage does not publish: the platform's namespace and repositories.
        self.quota_counter = QuotaCounter(
            self, "QuotaCounter", function_name=f"{prefix}-quota-counter", metric_namespace=f"{prefix}/quotas", cloud_map_namespaces=[config.namespace],
            ecr_repositories=[f"{prefix}/{service.name}" for service in config.services],
            encryption_key=network.logs_key, retention=logs.RetentionDays[defaults.log_retention])

        self.services: dict[str, ServiceMonitoring] = {}
        # One set of SLO thresholds for every alarm kind that judges a service: the deployment config's.
        slo = SloThresholds(max_error_percent=config.deployment.alarm_5xx_percent,
                            max_p95_latency_ms=config.deployment.alarm_p95_latency_ms)
        for service in config.services:
            primary = services.services[service.name]
            variants = [v for v in (primary, services.canaries.get(service.name)) if v is not None]
            routed = services.ingress.routes.get(service.name) if services.ingress else None
            target_groups = [g for g in (routed.target_group, routed.alternate_target_group) if g] if routed else []
            self.services[service.name] = ServiceMonitoring(
                self, f"{service.name}-monitoring", name=service.name, dashboard_name=f"{prefix}-{region}-{service.name}",
                alarm_name_prefix=prefix, alarm_topic=topic, cluster_name=platform.cluster.cluster_name,
                tasks=[MonitoredTasks(ecs_service_name=v.props.service_name, fargate_service=v.service, log_group=v.log_group,
                                      collector_container=COLLECTOR_CONTAINER)
                       for v in variants],
                metrics_namespace=services.metrics_namespace, error_log_namespace=f"{prefix}/logs",
                load_balancer=services.ingress.load_balancer if target_groups else None, target_groups=target_groups,
                load_balancer_alarms=None if service_connect else slo,
                mesh_discovery_name=discovery_name(service.name) if service_connect else None,
                grpc=service.grpc_port is not None,
                grpc_alarms=None if service_connect else slo,
                deployment_alarms=[alarm for v in variants for alarm in _deployment_alarms(v)],
                spot_interruptions=self.spot_interruptions,
                # App Mesh: the canary's own 5xx rate and p95, which its traffic shift rolls back on.
                canary_alarms=slo if service.name in services.canaries else None,
                replicated_table=ReplicatedTable(config.table_name(service.name), config.other_regions(region))
                if service.table else None,
                table=ServiceTable(config.table_name(service.name), table_operations(service),
                                   index_names=[index.name for index in service.table_indexes]) if service.table else None,
                max_throttled_requests_per_minute=config.observability.table_throttle_alarm_requests,
                max_table_system_errors_per_minute=config.observability.table_system_error_alarm_requests,
            )

        vpc = network.vpc
        nat_gateways = [subnet.node.try_find_child("NATGateway") for subnet in vpc.public_subnets]
        self.platform = PlatformMonitoring(
            self, "platform-monitoring", dashboard_name=f"{prefix}-{region}-platform", alarm_name_prefix=prefix,
            alarm_topic=topic, vpc_id=vpc.vpc_id,
            nat_gateway_ids=[gateway.ref for gateway in nat_gateways if isinstance(gateway, ec2.CfnNatGateway)],
            interface_endpoints={name: endpoint.vpc_endpoint_id for name, endpoint in network.network.interface_endpoints.items()},
            cluster_name=platform.cluster.cluster_name,
            meshed_services=[MeshedService(ecs_service_name=service.name,
                                           discovery_name=discovery_name(service.name) if service_connect else None)
                             for service in config.services],
            queues=[MonitoredQueue(service=name, queue=resources.queue, dead_letter_queue=resources.dead_letter_queue)
                    for name, resources in services.resources.items() if getattr(resources, "queue", None) is not None],
            max_queue_age=cdk.Duration.minutes(config.observability.queue_age_alarm_minutes),
            dead_letter_queues={"spot-interruptions": self.spot_interruptions.dead_letter_queue,
                                "counted-quotas": self.quota_counter.dead_letter_queue,
                                **{f"{name}-migration": fig.dead_letter_queue for name, fig in services.strangler_figs.items()},
                                **({"listener-rule-guard": services.listener_rule_guard.dead_letter_queue}
                                   if services.listener_rule_guard else {})},
            # A migration flag that could not be applied is answered by re-applying it, not by a redrive.
            dead_letter_runbooks={"counted-quotas": "quota-exhaustion", "listener-rule-guard": "canary-rollback",
                                  **{f"{name}-migration": "strangler-fig-traffic-shift" for name in services.strangler_figs}},
            dead_letter_queue_services={f"{name}-migration": name for name in services.strangler_figs},
            quota_alarm_percent=config.observability.quota_alarm_percent, quotas=QUOTAS + self.quota_counter.quotas,
            # No service with a path: no load balancer (and no ingress) at all.
            load_balancer_errors=LoadBalancerErrors(services.ingress.load_balancer, config.deployment.alarm_5xx_percent)
            if services.ingress else None,
        )

        self.sampling = TraceSampling(
            self, "TraceSampling", rule_name_prefix=prefix, services=[service.name for service in config.services],
            rate=config.observability.xray_sampling_rate,
            reservoir_per_second=config.observability.xray_reservoir_per_second)


def _deployment_alarms(service: MeshedFargateService) -> list:
    """The alarms the service's extensions made for its deployments (Service Connect, load balancer)."""
    return [alarm for extension in service.extensions for alarm in getattr(extension, "alarms", [])]


def table_operations(service: ServiceConfig) -> list[str]:
    """The DynamoDB operations the service's role can call on its table (constructs/service_resources): its item
    actions, Query through an index, and the transactions, which IAM authorizes per item, with no action of their
    own (TransactWriteItems with Put/Update/Delete, TransactGetItems with Get). DynamoDB publishes ThrottledRequests
    and SystemErrors per operation: these are the ones the table alarms sum."""
    operations = set(service.table_actions) | ({"Query"} if service.table_indexes else set())
    if operations & {"PutItem", "UpdateItem", "DeleteItem"}:
        operations.add("TransactWriteItems")
    if "GetItem" in operations:
        operations.add("TransactGetItems")
    return sorted(operations)
