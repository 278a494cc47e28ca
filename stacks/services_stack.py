"""Services stack: every service from config, meshed through the configured backend."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from constructs.meshed_service import (
    AdotCollector,
    AppMeshBackend,
    AppMeshSettings,
    MeshedFargateService,
    MeshedServiceProps,
    Rollout,
    ServiceConnectMesh,
)

from .config import FoundationConfig, ServiceConfig
from .defaults import profile_defaults
from .network_stack import NetworkStack
from .platform_stack import PlatformStack

SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"


class ServicesStack(cdk.Stack):
    """One MeshedFargateService per configured service (with App Mesh, a primary and a canary each).

    Exposes ``services``: name -> MeshedFargateService (the primary), and ``canaries`` (App Mesh).
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

        if config.mesh == "service-connect":
            mesh = ServiceConnectMesh(
                self, "ServiceConnect",
                namespace=platform.namespace,
                alarm_name_prefix=config.prefix,
                alarm_topic=platform.alarm_topic,
                rollout=Rollout(**vars(config.deployment)),
                per_request_timeout=cdk.Duration.seconds(config.mesh_options.per_request_timeout_seconds),
                idle_timeout=cdk.Duration.seconds(config.mesh_options.idle_timeout_seconds),
                tls_authority_arn=platform.certificate_authority_arn,
            )
            for service in config.services:
                self.services[service.name] = self._service(service.name, service, [mesh.extension()])
        else:
            mesh = AppMeshBackend(
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
            ports = {service.name: service.port for service in config.services}
            for service in config.services:
                for variant in ("primary", "canary"):
                    extension = mesh.extension(
                        name=service.name, port=service.port, health_check_path=service.health_check_path,
                        calls=[(callee, ports[callee]) for callee in service.calls], variant=variant,
                    )
                    if variant == "primary":
                        self.services[service.name] = self._service(service.name, service, [extension])
                    else:
                        # The canary takes the router's canary weight (one task is enough for that) and
                        # runs canary_image_tag when set: the release being tried.
                        self.canaries[service.name] = self._service(
                            f"{service.name}-canary", service, [extension], tasks=(1, 1), image_tag=service.canary_image_tag)
            mesh.add_routes()
        self.mesh = mesh

        # Each service admits exactly the services that call it, on its app port.
        for caller in config.services:
            for callee in caller.calls:
                for callee_service in self._variants(callee):
                    for caller_service in self._variants(caller.name):
                        callee_service.allow_from(caller_service.security_group, f"from {caller.name}")

    def _variants(self, name: str) -> list[MeshedFargateService]:
        return [s for s in (self.services.get(name), self.canaries.get(name)) if s is not None]

    def _service(self, construct_id: str, service: ServiceConfig, mesh_extensions: list,
                 tasks: tuple[int, int] | None = None, image_tag: str | None = None) -> MeshedFargateService:
        min_tasks, max_tasks = tasks or (
            service.min_tasks or self.defaults.min_tasks,
            service.max_tasks or max(self.defaults.max_tasks, service.min_tasks or 0),
        )
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
            environment={
                **dict(service.environment),
                "SERVICE_NAME": service.name,
                "PORT": str(service.port),
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
            },
            secrets=self._secrets(construct_id, service),
            service_name=construct_id,  # runbooks name services: aws ecs ... --service <name>
        )
        return MeshedFargateService(
            self, construct_id,
            props=props,
            cluster=self.platform.cluster,
            capacity_strategy=self.platform.capacity_strategy,
            log_encryption_key=self.network.logs_key,
            log_retention=logs.RetentionDays[self.defaults.log_retention],
            extensions=[AdotCollector(metrics_namespace=f"{self.config.prefix}/services"), *mesh_extensions],
        )

    def _image(self, service: ServiceConfig, image_tag: str | None) -> ecs.ContainerImage:
        if image_tag:
            # CI pushes release images here; from_ecr_repository also grants the pull.
            return ecs.ContainerImage.from_ecr_repository(self.platform.repositories[service.name], image_tag)
        if service.image:
            return ecs.ContainerImage.from_registry(service.image)
        dockerfile = SERVICES_DIR / service.name / "Dockerfile"
        if not dockerfile.exists():
            raise ValueError(f"services.{service.name}: {dockerfile.relative_to(SERVICES_DIR.parent)} does not exist; add it, or set services.{service.name}.image_tag or .image")
        # Built by `cdk deploy` (Docker needed there, not at synth); the context is services/ so
        # that every image can use the shared code beside it.
        return ecs.ContainerImage.from_asset(str(SERVICES_DIR), file=f"{service.name}/Dockerfile", exclude=["**/__pycache__", "**/.pytest_cache", "**/tests"])

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
