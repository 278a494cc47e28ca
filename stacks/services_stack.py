"""Services stack: every service from config, meshed through the configured backend."""

from __future__ import annotations

import math

import aws_cdk as cdk
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_logs as logs
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from constructs.compliance import skip_cfn_lint
from constructs.container_registry import repository_name
from constructs.event_bus import restrict_publishers
from constructs.ingress import CloudFrontOriginFacing, IngressRoute, RegionalDnsRecord, RegionalIngress
from constructs.listener_rule_guard import GuardedRule, ListenerRuleGuard
from constructs.meshed_service import (
    AdotCollector,
    AppMeshBackend,
    AppMeshSettings,
    CanaryTraffic,
    FaultInjection,
    IMAGE_PLATFORM,
    LoadBalancerTarget,
    RollbackAlarms,
    MeshedFargateService,
    MeshedServiceProps,
    Rollout,
    ServiceConnectMesh,
    ShiftSettings,
    TrafficShift,
    WorkerContainer,
)
from constructs.meshed_service.adot import EXPORTER_ENVIRONMENT, VARIANT_ATTRIBUTE
from constructs.operations import ServiceRollbackAutomation
from constructs.service_config import ServiceConfigParameters
from constructs.service_resources import TABLE_ACTIONS, EventSubscription, ServiceResources
from constructs.strangler_fig import StranglerFig

from .config import (
    SERVICES_DIR,
    STOP_TIMEOUT_SECONDS,
    CONFIG_DIGEST,
    DeploymentConfig,
    FoundationConfig,
    ServiceConfig,
    env_prefix,
    legacy_target_group_name,
    min_task_count,
)
from .defaults import profile_defaults
from .network_stack import NetworkStack
from .platform_stack import PlatformStack

# Longer than the event consumer's claim lease (servicekit events.CLAIM_LEASE_SECONDS = 120): a worker
# that dies mid-message (killed at the end of the stop timeout, out of memory, task replaced) leaves
# its claim on the event until the lease runs out; 150 s lets it expire first, so the next receive takes
# the claim over. (An earlier receive finds the claim busy and sets the message visible at the lease's
# end, but it counts towards max_receive_count.) A failed handler's message comes back sooner, after
# servicekit's backoff (10 s per receive, at most 60 s), so a SessionStarted's first retries land within
# persona's 120 s slot hold.
QUEUE_VISIBILITY_TIMEOUT_SECONDS = 150
# What stays a plain environment variable: what the task definition itself is built around (its
# ports, the load balancer's path and the proxies in front of it, the collector sidecar), which a value
# changed elsewhere would contradict. Every other setting is the service's configuration in SSM
# (ServiceConfigParameters). The collector's exporter settings (histograms it can make percentiles of)
# come with the collector (AdotCollector).
TASK_DEFINITION_ENVIRONMENT = frozenset({"SERVICE_NAME", "PORT", "GRPC_PORT", "PUBLIC_PATH", "TRUSTED_PROXY_HOPS",
                                         "OTEL_EXPORTER_OTLP_ENDPOINT", *EXPORTER_ENVIRONMENT})
# servicekit's own default, published so that operators can change it per service.
DEFAULT_LOG_LEVEL = "INFO"


def ingress_parameter_name(prefix: str, name: str) -> str:
    """Where the services stack publishes its load balancer for the edge stage (in its own region)."""
    return f"/{prefix}/ingress/{name}"


def ingress_routes(config: FoundationConfig, protocol: str) -> list[IngressRoute]:
    """A load balancer route per service with a config path; ``protocol``: how the load balancer reaches the tasks."""
    return [IngressRoute(name=service.name, path=service.path, port=service.port, health_check_path=service.health_check_path,
                         deregistration_delay_seconds=STOP_TIMEOUT_SECONDS, priority=service.priority, protocol=protocol)
            for service in config.exposed_services]


def migration_parameter_name(prefix: str, service: str) -> str:
    """The strangler fig's flag: percent of the service path's requests that go to the service (0-100)."""
    return f"/{prefix}/{service}/migration/percent-to-service"


# What a rollback's deployment may take besides its bakes (tasks starting, draining), and at most 30 days:
# the longest step timeout SSM documents (aws:pause); aws:waitForAwsResourceProperty documents no maximum.
ROLLBACK_MARGIN_MINUTES = 30
MAX_ROLLBACK_MINUTES = 30 * 24 * 60


def rollback_timeout(deployment: DeploymentConfig) -> cdk.Duration:
    """How long the rollback document waits for ECS: the deployment's bakes (a canary's one step, or every
    linear step) and the final bake, plus a margin; at least an hour (a rolling deployment)."""
    steps = {"CANARY": 1, "LINEAR": math.ceil(100 / deployment.linear_step_percent)}.get(deployment.strategy, 0)
    minutes = steps * deployment.step_bake_minutes + (deployment.bake_time_minutes if steps else 0) + ROLLBACK_MARGIN_MINUTES
    return cdk.Duration.minutes(min(MAX_ROLLBACK_MINUTES, max(60, minutes)))


class ServicesStack(cdk.Stack):
    """One MeshedFargateService per configured service (with App Mesh, a primary and a canary each),
    and the resources each service owns (ServiceResources), granted to its task roles only.

    Exposes ``services``: name -> MeshedFargateService (the primary), ``canaries`` (App Mesh),
    ``resources``: name -> ServiceResources (services that own or publish anything),
    ``config_parameters``: name -> ServiceConfigParameters (each service's settings in SSM),
    ``strangler_figs``: name -> StranglerFig (services with a config ``legacy`` function),
    ``listener_rule_guard``: the ListenerRuleGuard of the other exposed services' rules (None without any),
    ``rollback``: the ServiceRollbackAutomation document `<prefix>-rollback-service`, and for the services with a
    ``legacy`` function ``legacy_target_groups`` (name -> {smoke test variable: the service's own target group})
    and ``legacy_target_group_outputs`` (variable -> output of the group's ARN).
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, config: FoundationConfig, network: NetworkStack,
        platform: PlatformStack, **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.platform = platform
        self.network = network
        self.defaults = profile_defaults(config.profile)
        self.services: dict[str, MeshedFargateService] = {}
        self.canaries: dict[str, MeshedFargateService] = {}
        self.traffic_shifts: dict[str, TrafficShift] = {}  # App Mesh only
        self._image_assets: dict[str, ecr_assets.DockerImageAsset] = {}
        self.config_parameters: dict[str, ServiceConfigParameters] = {}
        self.resources = {service.name: self._resources(service) for service in config.services if self._owns_resources(service)}
        self.mesh = self._mesh()
        self.ingress = self._ingress() if config.exposed_services else None

        mesh = self.mesh
        # The services some other service calls through the mesh: only they get mesh traffic.
        called = {callee for caller in config.services for callee in caller.calls}
        if isinstance(mesh, ServiceConnectMesh):
            for service in config.services:
                extension = mesh.extension(behind_load_balancer=self._behind_load_balancer(service),
                                           mesh_callers=service.name in called)
                self.services[service.name] = self._service(service.name, service, [extension, *self._ingress_extensions(service)])
        else:
            ports = {service.name: (service.port, service.grpc_port) for service in config.services}
            for service in config.services:
                for variant in ("primary", "canary"):
                    extension = mesh.extension(
                        name=service.name, port=service.port, grpc_port=service.grpc_port,
                        health_check_path=service.health_check_path,
                        calls=[(callee, *ports[callee]) for callee in service.calls], variant=variant,
                        rollback_alarm_names=self._appmesh_rollback_alarms(service, variant, mesh_callers=service.name in called),
                    )
                    if variant == "primary":
                        # Only the primary takes load balancer traffic; the canary's share is the router's weight.
                        self.services[service.name] = self._service(
                            service.name, service, [extension, *self._ingress_extensions(service)], variant=variant)
                    else:
                        # The canary takes the router's canary weight (one task is enough for that; a
                        # traffic shift scales it with its share, and back on a rollback) and
                        # runs canary_image_tag when set: the release being tried. It runs no worker: a
                        # worker there would take its share of the queue's events (about 1/(n+1) with n
                        # primary tasks) whatever the router's weight.
                        self.canaries[service.name] = self._service(
                            f"{service.name}-canary", service, [extension], tasks=(1, 1), image_tag=service.canary_image_tag,
                            worker=False, variant=variant, external_task_count=True)  # the traffic shift sets its count
            mesh.add_routes()
            # The router's weights move only calls from other services: the load balancer sends the primary
            # everything. A service nothing calls would give its canary no traffic to judge, so it gets no
            # state machine (a run would "promote" an untested release).
            self.traffic_shifts = {service.name: self._traffic_shift(mesh, service) for service in config.services
                                   if service.name in called}
        self.strangler_figs = {service.name: self._strangler_fig(service) for service in config.services if service.legacy}
        self.listener_rule_guard = self._listener_rule_guard()

        # Each service admits exactly the services that call it, on the ports the mesh reaches it on.
        by_name = {service.name: service for service in config.services}
        for caller in config.services:
            for callee in caller.calls:
                target = by_name[callee]
                ports = [(mesh.caller_port(target.port, behind_load_balancer=self._behind_load_balancer(target)), f"from {caller.name}")]
                if target.grpc_port:
                    ports.append((target.grpc_port, f"gRPC from {caller.name}"))
                for callee_service in self._variants(callee):
                    for caller_service in self._variants(caller.name):
                        for port, description in ports:
                            callee_service.allow_from(caller_service.security_group, description, port=port)

        # Only a service's own task roles (primary and, with App Mesh, canary) reach its resources; the
        # canary runs no worker, so not its queue.
        for name, resources in self.resources.items():
            for variant in self._variants(name):
                resources.grant(variant.task_role, consume=variant is self.services[name])
        publishers = [variant.task_role for name in sorted(config.producers) for variant in self._variants(name)]
        if publishers:
            restrict_publishers(self, "EventBusPublishers", event_bus=platform.event_bus, publishers=publishers)
        self.rollback = self._rollback_automation()
        self.legacy_target_groups, self.legacy_target_group_outputs = self._legacy_target_group_outputs()

    def _legacy_target_group_outputs(self) -> tuple[dict[str, dict[str, elbv2.IApplicationTargetGroup]], dict[str, cdk.CfnOutput]]:
        """The own target groups (not the legacy function's) of each service that shares its path with a legacy
        function, by the variable the pipeline's smoke test names each by (``<SERVICE>_TARGET_GROUP``,
        ``<SERVICE>_ALTERNATE_TARGET_GROUP``): service name -> {variable: group}, and variable -> this stack's
        output of the group's ARN. The smoke test reads the outputs of the deploy it follows, like
        ``LoadBalancerDnsName``: current even where its own stack's references would be stale (pipelines/smoke_test.py)."""
        groups: dict[str, dict[str, elbv2.IApplicationTargetGroup]] = {}
        outputs: dict[str, cdk.CfnOutput] = {}
        for service in self.config.exposed_services:
            if not service.legacy:
                continue
            routed = self.ingress.routes[service.name]
            prefix = env_prefix(service.name)
            groups[service.name] = {variable: group for variable, group in (
                (f"{prefix}_TARGET_GROUP", routed.target_group), (f"{prefix}_ALTERNATE_TARGET_GROUP", routed.alternate_target_group))
                if group is not None}
            for variable, group in groups[service.name].items():
                outputs[variable] = cdk.CfnOutput(
                    self, "SmokeTest" + variable.title().replace("_", ""), value=group.target_group_arn,
                    description=f"Target group the pipeline's smoke test checks ({variable})")
        return groups, outputs

    def _rollback_automation(self) -> ServiceRollbackAutomation:
        """`<prefix>-rollback-service` (runbooks): back to the previous task definition revision. CloudFormation
        deregisters a replaced revision, and ECS cannot return a service to a deregistered one: keep them."""
        variants = [*self.services.values(), *self.canaries.values()]
        for variant in variants:
            definition = variant.task_definition.node.default_child
            definition.cfn_options.update_replace_policy = cdk.CfnDeletionPolicy.RETAIN
            skip_cfn_lint(definition, {"W3011": "Only replaced revisions are kept, so a rollback finds them registered; "
                                                "deleting the stack should deregister the last one"})
        return ServiceRollbackAutomation(
            self, "RollbackAutomation", document_name=f"{self.config.prefix}-rollback-service",
            cluster_name=self.config.prefix,  # the platform stack names the cluster after the prefix
            service_names=[variant.props.service_name for variant in variants],
            deployment_timeout=rollback_timeout(self.config.deployment))

    def _strangler_fig(self, service: ServiceConfig) -> StranglerFig:
        """The service's path shared with its legacy function, split by the flag in SSM (runbooks/strangler-fig-traffic-shift.md)."""
        routed = self.ingress.routes[service.name]
        log_group = logs.LogGroup(
            self, f"{service.name}-migration-logs", log_group_name=f"/{self.config.prefix}/{service.name}/migration-weights",
            encryption_key=self.network.logs_key,
            retention=logs.RetentionDays[self.defaults.log_retention], removal_policy=cdk.RemovalPolicy.DESTROY)
        cdk.Tags.of(log_group).add("service", service.name)
        return StranglerFig(
            self, f"{service.name}-strangler-fig", name=service.name, listener_rule=routed.listener_rule,
            service_target_groups=[group for group in (routed.target_group, routed.alternate_target_group) if group],
            legacy_function_arn=service.legacy.function_arn(self.region, self.partition, self.account),
            target_group_name=legacy_target_group_name(self.config.prefix, service.name),
            parameter_name=migration_parameter_name(self.config.prefix, service.name),
            initial_percent_to_service=service.legacy.initial_percent_to_service,
            function_name=f"{self.config.prefix}-{service.name}-migration-weights",  # runbooks name it
            dead_letter_queue_name=f"{self.config.prefix}-{service.name}-migration-dlq",
            log_group=log_group,
            # ECS canary and linear deployments rewrite the rule's weights; each end re-applies the flag.
            deployment_service_arns=[self.services[service.name].service.service_arn] if self._shifts_traffic else [],
        )

    def _listener_rule_guard(self) -> ListenerRuleGuard | None:
        """Stack updates write the template's weights over the ones ECS's deployments left (aws/aws-cdk#36649): one
        guard for every rule ECS shifts traffic on, but those of a strangler fig, whose own function guards them."""
        shifting = {name: routed for name, routed in (self.ingress.routes.items() if self.ingress else ())
                    if routed.alternate_target_group and name not in self.strangler_figs}
        if not shifting:
            return None
        prefix = self.config.prefix
        return ListenerRuleGuard(
            self, "ListenerRuleGuard",
            rules=[GuardedRule(listener_rule=routed.listener_rule, service=self.services[name].service) for name, routed in shifting.items()],
            function_name=f"{prefix}-listener-rule-guard", dead_letter_queue_name=f"{prefix}-listener-rule-guard-dlq",
            log_group=logs.LogGroup(
                self, "ListenerRuleGuardLogs", log_group_name=f"/{prefix}/listener-rule-guard", encryption_key=self.network.logs_key,
                retention=logs.RetentionDays[self.defaults.log_retention], removal_policy=cdk.RemovalPolicy.DESTROY),
        )

    def _owns_resources(self, service: ServiceConfig) -> bool:
        return service.table or service.signing_key or bool(service.consumes) or service.name in self.config.producers

    def _resources(self, service: ServiceConfig) -> ServiceResources:
        config = self.config
        return ServiceResources(
            self, f"{service.name}-resources",
            name_prefix=config.prefix,
            name=service.name,
            retain=config.is_prod,
            # The service's global table and secret (the primary region's data stack), by name in this region.
            table_name=config.table_name(service.name) if service.table else None,
            # What the service's code calls (config); a service without a table has none and gets no table grant.
            table_actions=[f"dynamodb:{action}" for action in service.table_actions] or TABLE_ACTIONS,
            # Query on each of its table's indexes (the data stack creates them), on the index ARNs only.
            table_index_names=[index.name for index in service.table_indexes],
            event_bus=self.platform.event_bus,
            publish_source=config.event_source(service.name) if service.name in config.producers else None,
            subscriptions=[EventSubscription(producer=producer, source=config.event_source(producer), detail_types=detail_types)
                           for producer, detail_types in service.consumes],
            max_receive_count=config.events.max_receive_count,
            visibility_timeout=cdk.Duration.seconds(QUEUE_VISIBILITY_TIMEOUT_SECONDS),
            signing_secret_name=config.signing_secret_name(service.name) if service.signing_key else None,
        )

    def _environment(self, service: ServiceConfig) -> dict[str, str]:
        """The variables services/ reads (servicekit settings): who the service is, where its resources
        are, and how its app reaches each callee through the mesh."""
        config = self.config
        by_name = {other.name: other for other in config.services}
        env = {
            "LOG_LEVEL": DEFAULT_LOG_LEVEL,
            **dict(service.environment),
            "SERVICE_NAME": service.name,
            "PORT": str(service.port),
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
            # The same share of new traces as the region's X-Ray sampling rules (observability stack).
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": str(config.observability.xray_sampling_rate),
            # The load balancer passes the edge path on unchanged; the service answers under it.
            **({"PUBLIC_PATH": service.path} if service.path else {}),
            # Proxies that append the caller's address to X-Forwarded-For on the way in (servicekit.forwarded):
            # CloudFront and the load balancer, or the load balancer alone in an app without the edge.
            **({"TRUSTED_PROXY_HOPS": "2" if config.has_edge else "1"} if service.path else {}),
            **({"GRPC_PORT": str(service.grpc_port)} if service.grpc_port else {}),
        }
        if service.name in self.resources:
            env.update(self.resources[service.name].environment)
        for callee in (by_name[name] for name in service.calls):
            # <CALLEE>_URL for HTTP (AUTH_URL), <CALLEE>_GRPC_TARGET for gRPC (PERSONA_GRPC_TARGET).
            env[f"{env_prefix(callee.name)}_URL"] = f"http://{self.mesh.callee_address(callee.name, callee.port)}"
            if callee.grpc_port:
                env[f"{env_prefix(callee.name)}_GRPC_TARGET"] = self.mesh.callee_address(callee.name, callee.grpc_port)
        signer = config.token_signer
        if signer and (signer.name == service.name or signer.name in service.calls):
            # The signer puts these into its tokens; its callers verify them.
            env["JWT_ISSUER"] = f"{config.prefix}-{signer.name}"
            env["JWT_AUDIENCE"] = f"{config.prefix}-services"
        return env

    def _mesh(self) -> ServiceConnectMesh | AppMeshBackend:
        config, platform = self.config, self.platform
        if config.mesh == "service-connect":
            return ServiceConnectMesh(
                self, "ServiceConnect",
                namespace=platform.namespace,
                alarm_name_prefix=config.prefix,
                alarm_topic=platform.alarm_topic,
                rollout=Rollout(**vars(config.deployment)),
                per_request_timeout=cdk.Duration.seconds(config.mesh_options.per_request_timeout_seconds),
                idle_timeout=cdk.Duration.seconds(config.mesh_options.idle_timeout_seconds),
                tls_authority_arn=platform.certificate_authority_arn,
            )
        return AppMeshBackend(
            self, "AppMesh",
            mesh_name=config.prefix,
            namespace_name=config.namespace,
            certificate_authority_arn=platform.certificate_authority_arn,
            settings=AppMeshSettings(
                canary_weight_percent=config.appmesh.canary_weight_percent,
                max_retries=config.appmesh.max_retries,
                per_retry_timeout_ms=config.appmesh.per_retry_timeout_ms,
                per_request_timeout_seconds=config.mesh_options.per_request_timeout_seconds,
                idle_timeout_seconds=config.mesh_options.idle_timeout_seconds,
            ),
        )

    @property
    def metrics_namespace(self) -> str:
        """Where the tasks' collectors put the services' metrics (the observability stack reads the same)."""
        return f"{self.config.prefix}/services"

    # App Mesh alarms, by name: the observability stack makes them (it depends on this stack, not the other way round).
    def _load_balancer_alarms(self, service: ServiceConfig) -> list[str]:
        """The primary's target group (the load balancer sends the canary nothing): its 5xx rate and p95."""
        prefix = self.config.prefix
        return [f"{prefix}-{service.name}-lb-group0-5xx-rate", f"{prefix}-{service.name}-lb-group0-p95-latency"] \
            if self._behind_load_balancer(service) else []

    def _canary_traffic_alarms(self, service: ServiceConfig) -> list[str]:
        """The canary's own 5xx rate and p95 (and gRPC pair), from its tasks' metrics by deployment.variant."""
        prefix = self.config.prefix
        alarms = [f"{prefix}-{service.name}-canary-5xx-rate", f"{prefix}-{service.name}-canary-p95-latency"]
        if service.grpc_port:
            alarms += [f"{prefix}-{service.name}-canary-grpc-error-rate", f"{prefix}-{service.name}-canary-grpc-p95-latency"]
        return alarms

    def _appmesh_rollback_alarms(self, service: ServiceConfig, variant: str, *, mesh_callers: bool) -> list[str]:
        """What a rolling deployment of the variant's ECS service rolls back on: the alarms that see that variant's
        tasks alone (the router's weights judge mesh calls, and only when a traffic shift runs). The primary: its
        load balancer group and its task count. The canary: its own traffic where mesh callers give it any (the
        router's canary weight), and its task count. By name: ECS reads them while a deployment runs, so a first
        deployment before the observability stack exists does not fail; it has nothing to roll back to anyway."""
        own_tasks = f"{self.config.prefix}-{service.name}{'' if variant == 'primary' else '-canary'}-no-running-tasks"
        if variant == "primary":
            return [*self._load_balancer_alarms(service), own_tasks]
        return [*(self._canary_traffic_alarms(service) if mesh_callers else []), own_tasks]

    def _traffic_shift(self, mesh: AppMeshBackend, service: ServiceConfig) -> TrafficShift:
        """The service's progressive rollout (runbooks/canary-rollback.md). One state machine per service:
        each role reaches only its own service's routes, and a run of one service cannot touch another's."""
        prefix = self.config.prefix
        # The load balancer's alarms see the primary's tasks only (it sends the canary nothing), so the
        # canary's own alarms, the error-log alarm (both variants' logs) and the canary's task count watch the
        # canary itself.
        alarms = [*self._load_balancer_alarms(service), *self._canary_traffic_alarms(service),
                  f"{prefix}-{service.name}-error-logs", f"{prefix}-{service.name}-canary-tasks-below-desired",
                  f"{prefix}-{service.name}-canary-no-running-tasks"]
        shift = TrafficShift(
            self, f"{service.name}-traffic-shift", state_machine_name=f"{prefix}-{service.name}-traffic-shift",
            mesh=mesh.mesh, routes=mesh.routes[service.name],
            primary_node=mesh.nodes[(service.name, "primary")], canary_node=mesh.nodes[(service.name, "canary")],
            alarm_names=alarms,
            settings=ShiftSettings(steps_percent=self.config.appmesh.shift_steps_percent,
                                   bake_minutes=self.config.appmesh.shift_bake_minutes),
            log_encryption_key=self.network.logs_key, log_retention=logs.RetentionDays[self.defaults.log_retention],
            # Before each step the canary gets its share of the primary's tasks; on a rollback its own count again.
            primary_service=self.services[service.name].service, canary_service=self.canaries[service.name].service,
            primary_max_tasks=self.services[service.name].props.max_tasks,
            canary_tasks=self.canaries[service.name].props.min_tasks,
            # After each bake: the canary's own requests, where its collector sends them (and its alarms read them).
            canary_traffic=CanaryTraffic(namespace=self.metrics_namespace, service_name=service.name,
                                         grpc=bool(service.grpc_port), min_requests=self.config.appmesh.shift_min_canary_requests),
        )
        cdk.Tags.of(shift).add("service", service.name)
        cdk.CfnOutput(self, f"TrafficShiftArn{env_prefix(service.name).title().replace('_', '')}",
                      value=shift.state_machine.state_machine_arn,
                      description=f"{service.name}: state machine that shifts traffic to the canary (runbooks/canary-rollback.md)")
        return shift

    def _ingress(self) -> RegionalIngress:
        """The region's internal load balancer, with a route per service that has a config path."""
        config, stage_region = self.config, self.region
        certificate, zone = None, None
        if config.domain:
            zone = route53.HostedZone.from_hosted_zone_attributes(
                self, "Zone", hosted_zone_id=config.domain.hosted_zone_id, zone_name=config.domain.zone_name)
            certificate = acm.Certificate(
                self, "IngressCertificate", domain_name=config.domain.regional_name(stage_region),
                validation=acm.CertificateValidation.from_dns(zone),
            )
        ingress = RegionalIngress(
            self, "Ingress",
            vpc=self.network.vpc,
            routes=ingress_routes(config, self.mesh.load_balancer_protocol),
            origin_peer=CloudFrontOriginFacing(self, "CloudFrontOriginFacing", log_group=logs.LogGroup(
                self, "CustomResourceLogs", encryption_key=self.network.logs_key,
                retention=logs.RetentionDays[self.defaults.log_retention], removal_policy=cdk.RemovalPolicy.DESTROY,
            )).peer,
            access_log_days=config.ingress.access_log_days,
            deletion_protection=config.is_prod,
            certificate=certificate,
            # With a domain, each region has a name of its own for callers inside the VPC (operators,
            # smoke tests): runbooks/region-failover.md.
            direct_access_peers=[ec2.Peer.ipv4(self._vpc_cidr)] if config.domain else [],
            # ECS's own canary and linear deployments (Service Connect backend) shift load balancer
            # traffic between two target groups per service.
            alternate_target_groups=self._shifts_traffic,
        )
        if config.domain:
            dns = RegionalDnsRecord(
                self, "IngressDns", zone=zone, record_name=config.domain.regional_name(stage_region),
                load_balancer=ingress.load_balancer,
                target_groups={name: [group for group in (routed.target_group, routed.alternate_target_group) if group]
                               for name, routed in ingress.routes.items()},
                alarm_name_prefix=f"{config.prefix}-{stage_region}", alarm_topic=self.platform.alarm_topic,
            )
            cdk.CfnOutput(self, "RegionHealthCheckId", value=dns.health_check.attr_health_check_id,
                          description="Route 53 health check of the region: healthy while as many target groups are healthy as there are services")
        # What the edge (another stage, in us-east-1) reads from this region at deploy time.
        for name, value in (("load-balancer-arn", ingress.load_balancer.load_balancer_arn),
                            ("load-balancer-dns-name", ingress.load_balancer.load_balancer_dns_name)):
            ssm.StringParameter(self, f"Edge-{name}", parameter_name=ingress_parameter_name(config.prefix, name), string_value=value,
                                description=f"{stage_region} load balancer {name.removeprefix('load-balancer-')}, read by the edge stage")
        cdk.CfnOutput(self, "LoadBalancerDnsName", value=ingress.load_balancer.load_balancer_dns_name,
                      description="Internal DNS name of this region's load balancer")
        return ingress

    @property
    def _vpc_cidr(self) -> str:
        """The region's VPC range, from config (a literal the security group checks can read)."""
        return next(region.cidr for region in self.config.regions if region.name == self.region)

    def _behind_load_balancer(self, service: ServiceConfig) -> bool:
        return bool(self.ingress and service.path)

    def _ingress_extensions(self, service: ServiceConfig) -> list:
        if not (self.ingress and service.path):
            return []
        routed = self.ingress.routes[service.name]
        # Service Connect deployments roll back on alarms; the load balancer adds its own per target
        # group: with mesh TLS its traffic bypasses the proxy whose metrics the mesh's alarms read, and
        # during a canary one group alone shows the new revision's health.
        alarms = RollbackAlarms(
            alarm_name_prefix=self.config.prefix, action=cloudwatch_actions.SnsAction(self.platform.alarm_topic),
            max_5xx_percent=self.config.deployment.alarm_5xx_percent,
            max_p95_latency_ms=self.config.deployment.alarm_p95_latency_ms,
        ) if self.config.mesh == "service-connect" else None
        requests = self.defaults.requests_per_task_per_minute
        if not self._shifts_traffic:
            return [LoadBalancerTarget(routed.target_group, rollback_alarms=alarms, requests_per_target_per_minute=requests)]
        return [LoadBalancerTarget(routed.target_group, alternate_target_group=routed.alternate_target_group,
                                   listener_rule=routed.listener_rule, rollback_alarms=alarms,
                                   requests_per_target_per_minute=requests)]

    @property
    def _shifts_traffic(self) -> bool:
        return self.config.mesh == "service-connect" and self.config.deployment.strategy != "ROLLING"

    def _variants(self, name: str) -> list[MeshedFargateService]:
        return [s for s in (self.services.get(name), self.canaries.get(name)) if s is not None]

    def _service(self, construct_id: str, service: ServiceConfig, mesh_extensions: list,
                 tasks: tuple[int, int] | None = None, image_tag: str | None = None,
                 worker: bool = True, variant: str | None = None, external_task_count: bool = False) -> MeshedFargateService:
        """``variant`` (App Mesh: primary or canary) tags the task's telemetry, so alarms can judge the canary alone."""
        min_tasks, max_tasks = tasks or (
            min_task_count(service, self.config.profile),
            service.max_tasks or max(self.defaults.max_tasks, service.min_tasks or 0),
        )
        environment, parameters = self._configuration(service)
        props = MeshedServiceProps(
            name=service.name,
            image=self._image(service, image_tag or service.image_tag),
            container_port=service.port,
            cpu=service.cpu,
            memory_limit_mib=service.memory_mib,
            health_check_path=service.health_check_path,
            liveness_path=service.liveness_path,
            health_check_command=service.health_check_command,
            user=service.user,
            min_tasks=min_tasks,
            max_tasks=max_tasks,
            calls=service.calls,
            grpc_port=service.grpc_port,
            environment=environment,
            secrets={**parameters.secrets, **self._secrets(construct_id, service)},
            stop_timeout_seconds=STOP_TIMEOUT_SECONDS,
            service_name=construct_id,  # runbooks name services: aws ecs ... --service <name>
            scale_out_cooldown_seconds=self.defaults.scale_out_cooldown_seconds,
            scale_in_cooldown_seconds=self.defaults.scale_in_cooldown_seconds,
            external_task_count=external_task_count,
        )
        return MeshedFargateService(
            self, construct_id,
            props=props,
            cluster=self.platform.cluster,
            capacity_strategy=self.platform.capacity_strategy,
            log_encryption_key=self.network.logs_key,
            log_retention=logs.RetentionDays[self.defaults.log_retention],
            # The worker last: it starts after every container the app starts after.
            extensions=[AdotCollector(metrics_namespace=self.metrics_namespace,
                                      resource_attributes={VARIANT_ATTRIBUTE: variant} if variant else None),
                        *mesh_extensions,
                        *([self._worker(service)] if worker and service.worker else []),
                        *([self._fault_injection()] if self._network_faults_target(construct_id) else [])],
        )

    def _network_faults_target(self, construct_id: str) -> bool:
        """Fault injection only where an experiment needs it: the chaos service's primary tasks."""
        chaos = self.config.chaos
        return chaos is not None and chaos.task_network_faults and construct_id == chaos.service

    def _fault_injection(self) -> FaultInjection:
        # Named: the stage's permissions boundary lets exactly this role be passed to SSM.
        instance_role_name, _ = self.config.fault_injection_role_names(self.region)
        return FaultInjection(managed_instance_role_name=instance_role_name)

    def _worker(self, service: ServiceConfig) -> WorkerContainer:
        queue = self.resources[service.name].queue
        return WorkerContainer(command=service.worker_command, queue=queue, backlog_per_task=self.defaults.backlog_per_task)

    def _configuration(self, service: ServiceConfig) -> tuple[dict[str, str], ServiceConfigParameters]:
        """The service's settings split: what the task definition is built around stays its
        environment; the rest goes to SSM under /<prefix>/<service>/config/ and reaches the
        containers through ECS ``secrets`` (one set of parameters per service, shared by its canary)."""
        settings = self._environment(service)
        in_ssm = {name: value for name, value in settings.items() if name not in TASK_DEFINITION_ENVIRONMENT and value != ""}
        if service.name not in self.config_parameters:
            self.config_parameters[service.name] = ServiceConfigParameters(
                self, f"{service.name}-config", prefix=self.config.prefix, service=service.name, values=in_ssm)
        parameters = self.config_parameters[service.name]
        # A value changed in cdk.json changes only its parameter, which starts no ECS deployment: the digest of the
        # values makes it change the task definition, so the change rolls out through the deployment and its alarms.
        environment = {name: value for name, value in settings.items() if name not in in_ssm} | {CONFIG_DIGEST: parameters.digest}
        return environment, parameters

    def _image(self, service: ServiceConfig, image_tag: str | None) -> ecs.ContainerImage:
        if image_tag:
            # CI pushes release images to the platform stack's repository; from_ecr_repository also grants the
            # pull. By name, not through the platform stack's output: CDK splits the repository's ARN for the
            # image URI, and CloudFormation's Fn::Split takes no Fn::GetStackOutput (cfn-lint E1022).
            repository = self.node.try_find_child(f"{service.name}-repository") or ecr.Repository.from_repository_name(
                self, f"{service.name}-repository", repository_name(self.config.prefix, service.name))  # the canary's too
            return ecs.ContainerImage.from_ecr_repository(repository, image_tag)
        if service.image:
            return ecs.ContainerImage.from_registry(service.image)
        # services/<name>/Dockerfile exists: the config check requires it (stacks/config.py, _check_images).
        # Built by `cdk deploy` (Docker needed there, not at synth); the context is services/ so
        # that every image can use the shared code beside it. One asset per service: its app, its
        # worker and (App Mesh) its canary run the same image. What no image needs (tests, tooling,
        # sources of generated code, caches, dot-files) is in services/.dockerignore, which
        # DockerImageAsset reads itself (Docker ignore semantics, CDK v2's default) before `exclude`.
        # Each build also leaves out the other services' folders, so a change to one service does not
        # rebuild the others' images: excluded files do not count towards the asset's hash. Built for the
        # tasks' architecture whatever the deploying machine's (`docker build --platform`; emulated on arm64).
        if service.name not in self._image_assets:
            others = [other.name for other in self.config.services
                      if other.name != service.name and (SERVICES_DIR / other.name / "Dockerfile").exists()]
            self._image_assets[service.name] = ecr_assets.DockerImageAsset(
                self, f"{service.name}-image", directory=str(SERVICES_DIR), file=f"{service.name}/Dockerfile",
                exclude=others, platform=IMAGE_PLATFORM,
            )
        return ecs.ContainerImage.from_docker_image_asset(self._image_assets[service.name])

    def _secrets(self, construct_id: str, service: ServiceConfig) -> dict[str, ecs.Secret]:
        secrets = {}
        for env_name, reference in service.secrets:
            kind, _, name = reference.partition(":")
            scope_id = f"{construct_id}-{env_name}"
            if kind == "secretsmanager":
                secrets[env_name] = ecs.Secret.from_secrets_manager(secretsmanager.Secret.from_secret_name_v2(self, scope_id, name))
            else:
                secrets[env_name] = ecs.Secret.from_ssm_parameter(
                    ssm.StringParameter.from_secure_string_parameter_attributes(self, scope_id, parameter_name=name))
        return secrets
