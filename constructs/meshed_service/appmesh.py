"""App Mesh backend (legacy: AWS ended App Mesh support on 2026-09-30). Selectable, complete, tested.

Per service: a virtual service ``<name>.<namespace>`` backed by a virtual router whose route
splits traffic between a primary and a canary virtual node, with a retry policy; each node has
an HTTP listener with health check, outlier detection, connection pool, timeouts and strict TLS,
and lists the virtual services its service calls as its only backends (the mesh drops all other
egress). A service with a gRPC port gets a second listener on router and nodes and a gRPC route.
Each task runs the Envoy sidecar; the app starts once Envoy is healthy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import aws_cdk as cdk
from aws_cdk import aws_acmpca as acmpca
from aws_cdk import aws_appmesh as appmesh
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from constructs import Construct

from constructs.compliance import skip_cfn_lint

from .extensions import ServiceExtension
from .service import APP_CONTAINER, SIDECAR_TMPFS_MIB, MeshedFargateService, tmpfs_mounts

ENVOY_IMAGE = "public.ecr.aws/appmesh/aws-appmesh-envoy:v1.29.6.0-prod"
ENVOY_CONTAINER = "envoy"
ENVOY_UID = 1337
END_OF_SUPPORT = "2026-09-30"
_W3696_REASON = (
    "App Mesh is the legacy backend, chosen explicitly with mesh=appmesh for teams migrating off it; "
    f"its end of support ({END_OF_SUPPORT}) is the point of this warning and is printed at synth"
)
VARIANTS = ("primary", "canary")


@dataclass(frozen=True)
class AppMeshSettings:
    canary_weight_percent: int = 5
    max_retries: int = 2
    per_retry_timeout_ms: int = 2000
    per_request_timeout_seconds: int = 15
    idle_timeout_seconds: int = 300

    def __post_init__(self) -> None:
        if not 1 <= self.canary_weight_percent <= 5:
            raise ValueError(f"canary_weight_percent={self.canary_weight_percent} is invalid: expected 1 to 5")


class AppMeshBackend(Construct):
    """The mesh (egress DROP_ALL) and every service's routing; hands out one extension per task variant.

    Call ``extension(...)`` for each service's primary and canary ECS service, then ``add_routes()``
    once all of them exist.
    """

    # Envoy takes only TLS on the app port, from a load balancer too (which does not verify it).
    load_balancer_protocol = "HTTPS"

    def caller_port(self, container_port: int, *, behind_load_balancer: bool) -> int:
        """Mesh callers reach a service's Envoy on its app port, load balancer or not."""
        return container_port

    def callee_address(self, name: str, port: int) -> str:
        """``host:port`` a caller's app uses to reach service ``name`` on ``port``: the virtual
        service name, which resolves through the primary's DNS registration; the caller's Envoy
        intercepts the connection and adds TLS."""
        return f"{name}.{self.namespace_name}:{port}"

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        mesh_name: str,
        namespace_name: str,
        certificate_authority_arn: str,
        settings: AppMeshSettings,
    ) -> None:
        super().__init__(scope, construct_id)
        cdk.Annotations.of(self).add_warning_v2(
            "foundation:appmesh-end-of-support",
            f"mesh=appmesh: AWS App Mesh reached end of support on {END_OF_SUPPORT}. It stays selectable for "
            "migrations; use mesh=service-connect for new deployments.",
        )
        self.namespace_name = namespace_name
        self.settings = settings
        self.certificate_authority = acmpca.CertificateAuthority.from_certificate_authority_arn(
            self, "CertificateAuthority", certificate_authority_arn
        )
        self.mesh = appmesh.Mesh(self, "Mesh", mesh_name=mesh_name, egress_filter=appmesh.MeshFilterType.DROP_ALL)
        self._legacy(self.mesh)
        self.virtual_services: dict[str, appmesh.VirtualService] = {}
        self.routers: dict[str, appmesh.VirtualRouter] = {}
        self.nodes: dict[tuple[str, str], appmesh.VirtualNode] = {}
        # Service name -> (HTTP port, gRPC port or None): what its router and nodes listen on.
        self.ports: dict[str, tuple[int, int | None]] = {}
        # Service name -> its routes (HTTP, then gRPC), filled by add_routes(); a traffic shift moves their weights.
        self.routes: dict[str, list[appmesh.Route]] = {}

    def virtual_service(self, name: str, port: int, grpc_port: int | None = None) -> appmesh.VirtualService:
        """The virtual service ``<name>.<namespace>`` and its router (created on first use)."""
        if name in self.ports and self.ports[name] != (port, grpc_port):
            raise ValueError(f"service {name!r} was declared with ports {self.ports[name]}, now {(port, grpc_port)}: pass the same ports everywhere")
        if name not in self.virtual_services:
            self.ports[name] = (port, grpc_port)
            router = appmesh.VirtualRouter(
                self, f"{name}-router", mesh=self.mesh, virtual_router_name=name,
                listeners=[appmesh.VirtualRouterListener.http(port),
                           *([appmesh.VirtualRouterListener.grpc(grpc_port)] if grpc_port else [])],
            )
            self.routers[name] = router
            self.virtual_services[name] = appmesh.VirtualService(
                self, f"{name}-service", virtual_service_name=f"{name}.{self.namespace_name}",
                virtual_service_provider=appmesh.VirtualServiceProvider.virtual_router(router),
            )
            self._legacy(router, self.virtual_services[name])
            for owned in (router, self.virtual_services[name]):  # the router's routes too; the mesh is every service's
                cdk.Tags.of(owned).add("service", name)
        return self.virtual_services[name]

    def extension(self, *, name: str, port: int, health_check_path: str, calls: Sequence[tuple[str, int] | tuple[str, int, int | None]],
                  variant: str, grpc_port: int | None = None, rollback_alarm_names: Sequence[str] = ()) -> ServiceExtension:
        """``calls``: (service name, port) or (service name, port, gRPC port) of every service this one calls.

        Envoy's listeners take TLS only (STRICT), from mesh callers and from a load balancer alike:
        a load balancer in front of the service must send HTTPS (it does not verify the certificate).

        ``rollback_alarm_names``: CloudWatch alarms a rolling deployment of this variant's ECS service rolls back on,
        by name, so they may live in a stack deployed after this one (ECS reads them only while a deployment runs).
        """
        if variant not in VARIANTS:
            raise ValueError(f"variant={variant!r} is invalid: use one of {', '.join(VARIANTS)}")
        self.virtual_service(name, port, grpc_port)
        backends = [self.virtual_service(*callee) for callee in calls]
        return _AppMeshExtension(self, name=name, port=port, grpc_port=grpc_port, health_check_path=health_check_path,
                                 backends=backends, variant=variant, rollback_alarm_names=list(rollback_alarm_names))

    def add_routes(self) -> None:
        """One route per service and port: weighted primary/canary targets and a retry policy."""
        settings = self.settings
        for name, router in self.routers.items():
            missing = [v for v in VARIANTS if (name, v) not in self.nodes]
            if missing:
                raise ValueError(f"service {name!r} has no {' or '.join(missing)} node: create both variants before add_routes()")
            port, grpc_port = self.ports[name]

            def targets(target_port: int, name: str = name) -> list[appmesh.WeightedTarget]:
                # With two listeners on each side, routes and targets name their port.
                return [
                    appmesh.WeightedTarget(virtual_node=self.nodes[(name, "primary")], port=target_port, weight=100 - settings.canary_weight_percent),
                    appmesh.WeightedTarget(virtual_node=self.nodes[(name, "canary")], port=target_port, weight=settings.canary_weight_percent),
                ]

            route = router.add_route(
                "Route",
                route_spec=appmesh.RouteSpec.http(
                    match=appmesh.HttpRouteMatch(path=appmesh.HttpRoutePathMatch.starts_with("/"), port=port),
                    weighted_targets=targets(port),
                    retry_policy=appmesh.HttpRetryPolicy(
                        retry_attempts=settings.max_retries,
                        retry_timeout=cdk.Duration.millis(settings.per_retry_timeout_ms),
                        http_retry_events=[appmesh.HttpRetryEvent.SERVER_ERROR, appmesh.HttpRetryEvent.GATEWAY_ERROR,
                                           appmesh.HttpRetryEvent.STREAM_ERROR],
                        tcp_retry_events=[appmesh.TcpRetryEvent.CONNECTION_ERROR],
                    ),
                    timeout=appmesh.HttpTimeout(per_request=cdk.Duration.seconds(settings.per_request_timeout_seconds)),
                ),
            )
            self._legacy(route)
            self.routes[name] = [route]
            if grpc_port:
                grpc_route = router.add_route(
                    "GrpcRoute",
                    route_spec=appmesh.RouteSpec.grpc(
                        match=appmesh.GrpcRouteMatch(port=grpc_port),
                        weighted_targets=targets(grpc_port),
                        # UNAVAILABLE: the server did not take the call, so a retry cannot run it twice.
                        retry_policy=appmesh.GrpcRetryPolicy(
                            retry_attempts=settings.max_retries,
                            retry_timeout=cdk.Duration.millis(settings.per_retry_timeout_ms),
                            grpc_retry_events=[appmesh.GrpcRetryEvent.UNAVAILABLE],
                            tcp_retry_events=[appmesh.TcpRetryEvent.CONNECTION_ERROR],
                        ),
                        timeout=appmesh.GrpcTimeout(per_request=cdk.Duration.seconds(settings.per_request_timeout_seconds)),
                    ),
                )
                self._legacy(grpc_route)
                self.routes[name].append(grpc_route)

    def _legacy(self, *constructs: Construct) -> None:
        for construct in constructs:
            skip_cfn_lint(construct.node.default_child, {"W3696": _W3696_REASON})


class _AppMeshExtension(ServiceExtension):
    def __init__(self, backend: AppMeshBackend, *, name: str, port: int, grpc_port: int | None, health_check_path: str,
                 backends: list[appmesh.VirtualService], variant: str, rollback_alarm_names: list[str]) -> None:
        self.backend, self.name, self.port, self.grpc_port, self.variant = backend, name, port, grpc_port, variant
        self.rollback_alarm_names = rollback_alarm_names
        self.health_check_path = health_check_path
        self.backends = backends
        self.envoy: ecs.ContainerDefinition | None = None

    def modify_task_definition_props(self, props: dict[str, Any]) -> dict[str, Any]:
        # Envoy intercepts the app's traffic, except its own, the task metadata endpoints and
        # HTTPS to AWS APIs (the mesh carries plain HTTP between services and adds TLS itself).
        props["proxy_configuration"] = ecs.AppMeshProxyConfiguration(
            container_name=ENVOY_CONTAINER,
            properties=ecs.AppMeshProxyConfigurationProps(
                app_ports=[self.port, *([self.grpc_port] if self.grpc_port else [])], proxy_ingress_port=15000, proxy_egress_port=15001, ignored_uid=ENVOY_UID,
                egress_ignored_i_ps=["169.254.170.2", "169.254.169.254"], egress_ignored_ports=[443],
            ),
        )
        return props

    def use_task_definition(self, service: MeshedFargateService) -> None:
        backend, settings = self.backend, self.backend.settings
        certificate = acm.PrivateCertificate(
            service, "MeshCertificate", domain_name=f"{self.name}.{backend.namespace_name}",
            certificate_authority=backend.certificate_authority,
        )
        tls = appmesh.ListenerTlsOptions(mode=appmesh.TlsMode.STRICT, certificate=appmesh.TlsCertificate.acm(certificate))
        outlier_detection = appmesh.OutlierDetection(
            base_ejection_duration=cdk.Duration.seconds(30), interval=cdk.Duration.seconds(10),
            max_ejection_percent=50, max_server_errors=5,
        )
        checks = {"interval": cdk.Duration.seconds(10), "timeout": cdk.Duration.seconds(5), "healthy_threshold": 2, "unhealthy_threshold": 3}
        idle, per_request = cdk.Duration.seconds(settings.idle_timeout_seconds), cdk.Duration.seconds(settings.per_request_timeout_seconds)
        listeners = [appmesh.VirtualNodeListener.http(
            port=self.port,
            health_check=appmesh.HealthCheck.http(path=self.health_check_path, **checks),
            outlier_detection=outlier_detection,
            connection_pool=appmesh.HttpConnectionPool(max_connections=1024, max_pending_requests=1024),
            timeout=appmesh.HttpTimeout(idle=idle, per_request=per_request),
            tls=tls,
        )]
        if self.grpc_port:
            # The gRPC health checking protocol (grpc.health.v1), which the app serves on this port.
            listeners.append(appmesh.VirtualNodeListener.grpc(
                port=self.grpc_port, health_check=appmesh.HealthCheck.grpc(**checks), outlier_detection=outlier_detection,
                connection_pool=appmesh.GrpcConnectionPool(max_requests=1024),
                timeout=appmesh.GrpcTimeout(idle=idle, per_request=per_request), tls=tls,
            ))
        node = appmesh.VirtualNode(
            service, "VirtualNode", mesh=backend.mesh, virtual_node_name=f"{self.name}-{self.variant}",
            # The service's own DNS registration: <name> for the primary, <name>-canary for the canary.
            service_discovery=appmesh.ServiceDiscovery.cloud_map(service.cloud_map_service),
            listeners=listeners,
            backends=[appmesh.Backend.virtual_service(vs) for vs in self.backends],
            backend_defaults=appmesh.BackendDefaults(tls_client_policy=appmesh.TlsClientPolicy(
                enforce=True,
                validation=appmesh.TlsValidation(trust=appmesh.TlsValidationTrust.acm([backend.certificate_authority])),
            )),
            access_log=appmesh.AccessLog.from_file_path("/dev/stdout", appmesh.LoggingFormat.from_json({
                "start": "%START_TIME%", "method": "%REQ(:METHOD)%", "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
                "status": "%RESPONSE_CODE%", "duration_ms": "%DURATION%", "upstream": "%UPSTREAM_HOST%",
                "trace_id": "%REQ(X-AMZN-TRACE-ID)%", "correlation_id": "%REQ(X-CORRELATION-ID)%",
            })),
        )
        backend.nodes[(self.name, self.variant)] = node
        backend._legacy(node)

        self.envoy = service.task_definition.add_container(
            ENVOY_CONTAINER,
            image=ecs.ContainerImage.from_registry(ENVOY_IMAGE),
            essential=True,
            cpu=256,
            memory_limit_mib=256,
            user=str(ENVOY_UID),
            readonly_root_filesystem=True,
            # Envoy's agent writes its bootstrap config to the temp dir, and exits if it cannot (aws-app-mesh-roadmap#433).
            linux_parameters=tmpfs_mounts(service, f"{ENVOY_CONTAINER}-tmp", paths=["/tmp"], size_mib=SIDECAR_TMPFS_MIB),
            environment={"APPMESH_RESOURCE_ARN": node.virtual_node_arn, "ENVOY_LOG_LEVEL": "info"},
            health_check=ecs.HealthCheck(
                command=["CMD-SHELL", "curl -s http://localhost:9901/server_info | grep state | grep -q LIVE"],
                interval=cdk.Duration.seconds(5), timeout=cdk.Duration.seconds(2), retries=3,
                start_period=cdk.Duration.seconds(10),
            ),
            logging=service.container_logs(ENVOY_CONTAINER),
        )
        # Envoy fetches only its own node's configuration, and the certificate material for its TLS.
        service.task_role.add_to_principal_policy(iam.PolicyStatement(
            actions=["appmesh:StreamAggregatedResources"], resources=[node.virtual_node_arn]))
        service.task_role.add_to_principal_policy(iam.PolicyStatement(
            actions=["acm:ExportCertificate"], resources=[certificate.certificate_arn]))
        service.task_role.add_to_principal_policy(iam.PolicyStatement(
            actions=["acm-pca:GetCertificateAuthorityCertificate"],
            resources=[backend.certificate_authority.certificate_authority_arn]))

    def resolve_container_dependencies(self, service: MeshedFargateService) -> None:
        service.task_definition.find_container(APP_CONTAINER).add_container_dependencies(
            ecs.ContainerDependency(container=self.envoy, condition=ecs.ContainerDependencyCondition.HEALTHY)
        )

    def modify_service_props(self, props: dict[str, Any]) -> dict[str, Any]:
        # Traffic moves between versions through the router's weights, so ECS deploys rolling.
        props["deployment_strategy"] = ecs.DeploymentStrategy.ROLLING
        if self.rollback_alarm_names:
            # The weights judge a release only for mesh calls; a rolling deployment of this variant (the primary takes
            # every load balancer request) needs its own alarms. ECS polls them during the deployment and its bake
            # time only (what it does with one already in ALARM at the start: README, App Mesh default settings).
            props["deployment_alarms"] = ecs.DeploymentAlarmConfig(
                alarm_names=self.rollback_alarm_names, behavior=ecs.AlarmBehavior.ROLLBACK_ON_ALARM)
        return props

    def use_service(self, service: MeshedFargateService) -> None:
        # Service Connect explicitly off: ECS UpdateService treats a missing serviceConnectConfiguration as "no change",
        # so a service rolled back from Service Connect (runbooks/appmesh-to-service-connect.md) would keep its proxy
        # next to Envoy. CDK writes the property only to turn Service Connect on.
        service.service.node.default_child.add_property_override("ServiceConnectConfiguration", {"Enabled": False})
