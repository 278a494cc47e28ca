"""Service Connect mesh backend (the default): named endpoints, TLS, access logs, canary rollback."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_servicediscovery as servicediscovery
from aws_cdk import aws_sns as sns
from constructs import Construct

from constructs.compliance import acknowledge_nag

from .adot import AdotCollector
from .alarms import (
    deployment_alarm,
    floor_note,
    grpc_alarm_specs,
    service_connect_error_rate,
    service_connect_latency_p95,
)
from .extensions import ServiceExtension
from .service import GRPC_PORT_MAPPING_NAME, PORT_MAPPING_NAME, MeshedFargateService

_STRATEGIES = ("CANARY", "LINEAR", "ROLLING")
# Where a service's proxy listens for mesh callers when a load balancer takes the app port (TLS on).
PROXY_PORT_BEHIND_LOAD_BALANCER = 15443


@dataclass(frozen=True)
class Rollout:
    """How a new revision takes traffic, and the alarms that roll it back."""

    strategy: str = "CANARY"  # CANARY | LINEAR | ROLLING
    canary_percent: float = 5.0
    linear_step_percent: float = 20.0
    step_bake_minutes: int = 10
    bake_time_minutes: int = 10
    alarm_5xx_percent: float = 1.0
    alarm_p95_latency_ms: int = 1000

    def __post_init__(self) -> None:
        if self.strategy not in _STRATEGIES:
            raise ValueError(f"strategy={self.strategy!r} is invalid: use one of {', '.join(_STRATEGIES)}")
        if self.strategy == "CANARY" and self.alarm_5xx_percent >= self.canary_percent:
            # The alarms see the whole service (HTTP 5xx and gRPC server errors alike): a canary failing every
            # request adds only canary_percent.
            raise ValueError(
                f"alarm_5xx_percent={self.alarm_5xx_percent} is invalid: keep it below canary_percent={self.canary_percent}"
            )


def discovery_name(service_name: str) -> str:
    return f"{service_name}-sc"


def grpc_discovery_name(service_name: str) -> str:
    return f"{service_name}-grpc-sc"


class ServiceConnectMesh(Construct):
    """One per cluster namespace: holds what all services share (TLS role), hands out extensions.

    ``tls_authority_arn`` turns on TLS between services, with certificates from that AWS Private
    CA; ``None`` leaves service-to-service traffic in plain text inside the VPC.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        namespace: servicediscovery.INamespace,
        alarm_name_prefix: str,
        alarm_topic: sns.ITopic,
        rollout: Rollout,
        per_request_timeout: cdk.Duration,
        idle_timeout: cdk.Duration,
        tls_authority_arn: str | None = None,
        tls_key: kms.IKey | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.namespace = namespace
        self.alarm_name_prefix = alarm_name_prefix
        self.alarm_action = cloudwatch_actions.SnsAction(alarm_topic)
        self.rollout = rollout
        self.per_request_timeout = per_request_timeout
        self.idle_timeout = idle_timeout
        self.tls: ecs.ServiceConnectTlsConfiguration | None = None
        if tls_authority_arn:
            # ECS uses this role to issue and rotate the services' certificates from the CA.
            stack = cdk.Stack.of(self)
            role = iam.Role(
                self, "TlsRole",
                description="ECS infrastructure role: Service Connect TLS certificates from Private CA",
                assumed_by=iam.ServicePrincipal(
                    "ecs.amazonaws.com", conditions={"StringEquals": {"aws:SourceAccount": stack.account}}),
                managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(
                    "service-role/AmazonECSInfrastructureRolePolicyForServiceConnectTransportLayerSecurity")],
            )
            acknowledge_nag(
                role,
                "AWS maintains this infrastructure-role policy for Service Connect TLS; it follows the certificate workflow ECS runs, which a hand-written copy would not",
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonECSInfrastructureRolePolicyForServiceConnectTransportLayerSecurity]",
            )
            self.tls = ecs.ServiceConnectTlsConfiguration(aws_pca_authority_arn=tls_authority_arn, kms_key=tls_key, role=role)

    # A load balancer reaches a Service Connect service in plain HTTP: on the proxy without TLS,
    # past the proxy with it (see caller_port).
    load_balancer_protocol = "HTTP"

    def caller_port(self, container_port: int, *, behind_load_balancer: bool) -> int:
        """The port mesh callers reach a service on. With TLS the proxy takes only TLS 1.3 on its
        port, which load balancer health checks do not speak: a service behind a load balancer moves
        its proxy to PROXY_PORT_BEHIND_LOAD_BALANCER (ECS ingressPortOverride), and the load balancer
        reaches the app port directly."""
        return PROXY_PORT_BEHIND_LOAD_BALANCER if behind_load_balancer and self.tls else container_port

    def callee_address(self, name: str, port: int) -> str:
        """``host:port`` a caller's app uses to reach service ``name`` on ``port``: the client alias,
        served by the caller's own Service Connect proxy (which adds TLS when it is on)."""
        return f"{name}:{port}"

    def extension(self, *, behind_load_balancer: bool = False, mesh_callers: bool = True) -> ServiceExtension:
        """The Service Connect wiring of one service (``behind_load_balancer``: see ``caller_port``).

        ``mesh_callers``: whether another service calls this one through the mesh. Service Connect measures a
        service's responses in its callers' proxies only, so without callers its 5xx-rate and p95-latency alarms
        would never get data: none are made."""
        return _ServiceConnectExtension(self, behind_load_balancer, mesh_callers)


class _ServiceConnectExtension(ServiceExtension):
    def __init__(self, mesh: ServiceConnectMesh, behind_load_balancer: bool, mesh_callers: bool) -> None:
        self.mesh = mesh
        self.behind_load_balancer = behind_load_balancer
        self.mesh_callers = mesh_callers
        self.alarms: list[cloudwatch.Alarm] = []
        self._service: MeshedFargateService | None = None

    def use_task_definition(self, service: MeshedFargateService) -> None:
        self._service = service

    def modify_service_props(self, props: dict[str, Any]) -> dict[str, Any]:
        service, mesh, rollout = self._service, self.mesh, self.mesh.rollout
        name = service.props.name
        port = mesh.caller_port(service.props.container_port, behind_load_balancer=self.behind_load_balancer)
        if port == PROXY_PORT_BEHIND_LOAD_BALANCER == service.props.container_port:
            raise ValueError(f"{name}: container_port={port} is taken by the Service Connect proxy behind a load balancer")
        endpoints = [ecs.ServiceConnectService(
            port_mapping_name=PORT_MAPPING_NAME,
            # Service Connect creates its own, API-only Cloud Map service under this name; the
            # plain name is taken by the service's DNS registration (MeshedFargateService).
            discovery_name=discovery_name(name),
            dns_name=name,  # callers use http://<name>:<port>
            port=service.props.container_port,
            ingress_port_override=port if port != service.props.container_port else None,
            per_request_timeout=mesh.per_request_timeout,
            idle_timeout=mesh.idle_timeout,
            tls=mesh.tls,
        )]
        if service.props.grpc_port:
            # The same name on the gRPC port (<name>:<grpc_port>): a client alias is a name and a port.
            # No load balancer reaches this port, so the proxy keeps it.
            endpoints.append(ecs.ServiceConnectService(
                port_mapping_name=GRPC_PORT_MAPPING_NAME, discovery_name=grpc_discovery_name(name), dns_name=name,
                port=service.props.grpc_port, per_request_timeout=mesh.per_request_timeout,
                idle_timeout=mesh.idle_timeout, tls=mesh.tls,
            ))
        props["service_connect_configuration"] = ecs.ServiceConnectProps(
            namespace=mesh.namespace.namespace_arn,
            services=endpoints,
            log_driver=service.container_logs("service-connect"),
            access_log_configuration=ecs.ServiceConnectAccessLogConfiguration(
                format=ecs.ServiceConnectAccessLogFormat.JSON, include_query_parameters=False,
            ),
        )
        props["deployment_strategy"] = getattr(ecs.DeploymentStrategy, rollout.strategy)
        step_bake = cdk.Duration.minutes(rollout.step_bake_minutes)
        if rollout.strategy == "CANARY":
            props["canary_configuration"] = ecs.TrafficShiftConfig(step_percent=rollout.canary_percent, step_bake_time=step_bake)
        elif rollout.strategy == "LINEAR":
            props["linear_configuration"] = ecs.TrafficShiftConfig(step_percent=rollout.linear_step_percent, step_bake_time=step_bake)
        if rollout.strategy != "ROLLING":
            props["bake_time"] = cdk.Duration.minutes(rollout.bake_time_minutes)
        # The service refers to the alarms (Ref), so CloudFormation creates them first and the
        # service's first deployment can already use them.
        self._create_alarms(service)
        if self.alarms:
            props["deployment_alarms"] = ecs.DeploymentAlarmConfig(
                alarm_names=[alarm.alarm_name for alarm in self.alarms],
                behavior=ecs.AlarmBehavior.ROLLBACK_ON_ALARM,
            )
        return props

    def _create_alarms(self, service: MeshedFargateService) -> None:
        rollout, action = self.mesh.rollout, self.mesh.alarm_action
        name = service.props.name
        self.alarms = []
        if self.mesh_callers:
            endpoint = discovery_name(name)
            self.alarms += [
                deployment_alarm(
                    service, "FiveXxRateAlarm", service_connect_error_rate(endpoint),
                    alarm_name=self._alarm_name("5xx-rate"), threshold=rollout.alarm_5xx_percent,
                    summary=(f"{name}: more than {rollout.alarm_5xx_percent:g}% of requests answered 5xx; "
                             + floor_note(rate=True)),
                    runbook="elevated-5xx", action=action),
                deployment_alarm(
                    service, "P95LatencyAlarm", service_connect_latency_p95(endpoint),
                    alarm_name=self._alarm_name("p95-latency"), threshold=rollout.alarm_p95_latency_ms,
                    summary=f"{name}: p95 response time above {rollout.alarm_p95_latency_ms} ms; " + floor_note(rate=False),
                    runbook="latency-slo-breach", action=action),
            ]
        if service.props.grpc_port:
            # gRPC status codes travel in trailers, which no Service Connect metric reads: the service's own
            # metrics judge its gRPC calls (every caller's), so they need its collector. Named `grpc-server-*`,
            # not `grpc-error-rate` as the observability stack's notify-only alarms were: CloudFormation fails to
            # create an alarm whose name another stack still holds, so an upgrade must not move a name.
            collector = next((e for e in service.extensions if isinstance(e, AdotCollector)), None)
            if collector is None:
                raise ValueError(f"{name}: grpc_port needs an AdotCollector extension; its gRPC deployment alarms read the service's own metrics")
            specs = grpc_alarm_specs(name, collector.metrics_namespace, max_error_percent=rollout.alarm_5xx_percent,
                                     max_p95_latency_ms=rollout.alarm_p95_latency_ms)
            self.alarms += [
                deployment_alarm(service, construct_id, spec.metric, alarm_name=self._alarm_name(spec.what),
                                 threshold=spec.threshold, summary=spec.summary, runbook=spec.runbook, action=action)
                for construct_id, spec in zip(("GrpcErrorRateAlarm", "GrpcP95LatencyAlarm"), specs, strict=True)
            ]

    def _alarm_name(self, what: str) -> str:
        return f"{self.mesh.alarm_name_prefix}-{self._service.props.name}-{what}"
