"""MeshedFargateService: one production Fargate service, with sidecars and mesh wiring as extensions."""

from __future__ import annotations

from typing import Any, Sequence

import aws_cdk as cdk
import jsii
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_servicediscovery as servicediscovery
from constructs import Construct, IValidation

from constructs.compliance import acknowledge_nag

from .extensions import ServiceExtension
from .props import MeshedServiceProps

APP_CONTAINER = "app"
PORT_MAPPING_NAME = "http"
GRPC_PORT_MAPPING_NAME = "grpc"
# The tasks' CPU architecture, and the platform an image built for them must target (IMAGE_PLATFORM, from the same
# setting). Docker builds for the building machine unless told: an image built by `cdk deploy` on an arm64 machine
# would die on x86_64 tasks with "exec format error". ecs.CpuArchitecture objects do not compare, hence the name.
CPU_ARCHITECTURE = "X86_64"
IMAGE_PLATFORM = {"X86_64": ecr_assets.Platform.LINUX_AMD64, "ARM64": ecr_assets.Platform.LINUX_ARM64}[CPU_ARCHITECTURE]
# The writable paths of a container with a read-only root filesystem are tmpfs mounts, not task volumes, which a
# non-root user cannot write on Fargate (why, the options, and the memory they take: README.md, Default settings).
TMPFS_MOUNT_OPTIONS = ("nosuid", "nodev", "noexec")
# The sidecars' /tmp: Envoy's agent writes its bootstrap config there (kilobytes); the collector writes nothing.
SIDECAR_TMPFS_MIB = 16


def tmpfs_mounts(scope: Construct, construct_id: str, *, paths: Sequence[str], size_mib: int) -> ecs.LinuxParameters:
    """A container's Linux parameters holding only tmpfs mounts: ``paths``, ``size_mib`` each, TMPFS_MOUNT_OPTIONS."""
    options = [ecs.TmpfsMountOption[option.upper()] for option in TMPFS_MOUNT_OPTIONS]
    parameters = ecs.LinuxParameters(scope, construct_id)
    parameters.add_tmpfs(*(ecs.Tmpfs(container_path=path, size=size_mib, mount_options=options) for path in paths))
    return parameters


@jsii.implements(IValidation)
class _ScratchSpaceWithinAQuarterOfMemory:
    """A tmpfs is task memory: the task's tmpfs mounts together (app, worker, sidecars) may take at most a quarter
    of it. Checked at synthesis, once the extensions have added their containers."""

    def __init__(self, task_definition: ecs.TaskDefinition) -> None:
        self.task_definition = task_definition

    def validate(self) -> list[str]:
        cfn = self.task_definition.node.default_child
        stack = cdk.Stack.of(self.task_definition)
        memory = int(stack.resolve(cfn.memory))
        sizes = {c["name"]: sum(t["size"] for t in c.get("linuxParameters", {}).get("tmpfs", []))
                 for c in stack.resolve(cfn.container_definitions)}
        if sum(sizes.values()) <= memory // 4:
            return []
        parts = ", ".join(f"{name} {size}" for name, size in sizes.items() if size)
        return [f"scratch space of {sum(sizes.values())} MiB ({parts}) is invalid: the task's tmpfs mounts must fit in a "
                f"quarter of its memory ({memory} MiB): lower scratch_size_mib or raise memory_limit_mib"]


def ecs_task_role(scope: Construct, construct_id: str, description: str) -> iam.Role:
    """A role only ECS tasks of this account can assume (confused-deputy guard)."""
    stack = cdk.Stack.of(scope)
    return iam.Role(
        scope,
        construct_id,
        description=description,
        assumed_by=iam.ServicePrincipal(
            "ecs-tasks.amazonaws.com",
            conditions={
                "StringEquals": {"aws:SourceAccount": stack.account},
                "ArnLike": {"aws:SourceArn": stack.format_arn(service="ecs", resource="*")},
            },
        ),
    )


class MeshedFargateService(Construct):
    """A Fargate service in private subnets that joins the mesh through its extensions.

    Exposes ``task_definition``, ``app_container``, ``execution_role``, ``task_role``,
    ``log_group``, ``cloud_map_service``, ``security_group``, ``service`` (the
    ``ecs.FargateService``) and ``scaling`` (the ``ecs.ScalableTaskCount``; None for a fixed task count).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        props: MeshedServiceProps,
        cluster: ecs.ICluster,
        capacity_strategy: Sequence[ecs.CapacityProviderStrategy],
        log_encryption_key: kms.IKey,
        log_retention: logs.RetentionDays,
        extensions: Sequence[ServiceExtension] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        if not capacity_strategy:
            raise ValueError("capacity_strategy=[] is invalid: pass the platform's strategy (a service without one bypasses Spot)")
        self.props = props
        self.cluster = cluster
        self.extensions = list(extensions)
        self.log_encryption_key = log_encryption_key
        self.log_retention = log_retention

        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention, encryption_key=log_encryption_key)
        # DNS registration in the cluster's namespace (<service name>.<namespace>, A records, short
        # TTL so clients see task changes within seconds). Created before the ECS service so that
        # extensions can point at it (App Mesh's virtual node does).
        namespace = cluster.default_cloud_map_namespace
        if namespace is None:
            raise ValueError("cluster has no default Cloud Map namespace: create it with one (see constructs/fargate_cluster)")
        self.cloud_map_service = servicediscovery.Service(
            self, "Discovery", namespace=namespace, name=props.service_name or props.name,
            dns_record_type=servicediscovery.DnsRecordType.A, dns_ttl=cdk.Duration.seconds(props.dns_ttl_seconds),
            custom_health_check=servicediscovery.HealthCheckCustomConfig(failure_threshold=1),
        )
        # Execution role: what ECS does for the task (pull the image, read the secrets, write logs).
        # Task role: what the containers themselves call. CDK grants each only what it uses.
        self.execution_role = ecs_task_role(self, "ExecutionRole", f"ECS agent for {props.name}: pull, secrets, logs")
        self.task_role = ecs_task_role(self, "TaskRole", f"{props.name} containers and their sidecars")

        task_definition_props: dict[str, Any] = {
            "cpu": props.cpu,
            "memory_limit_mib": props.memory_limit_mib,
            "execution_role": self.execution_role,
            "task_role": self.task_role,
            "runtime_platform": ecs.RuntimePlatform(
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
                cpu_architecture=ecs.CpuArchitecture.of(CPU_ARCHITECTURE),
            ),
        }
        for extension in self.extensions:
            task_definition_props = extension.modify_task_definition_props(task_definition_props)
        self.task_definition = ecs.FargateTaskDefinition(self, "TaskDefinition", **task_definition_props)
        self.app_container = self._add_app_container()
        self.task_definition.node.add_validation(_ScratchSpaceWithinAQuarterOfMemory(self.task_definition))

        acknowledge_nag(
            self.task_definition,
            "Only non-secret settings (service name, ports, resource names and addresses, collector endpoint and config) are environment variables; secrets come from Secrets Manager or SSM through props.secrets or the service's own SDK calls",
            "AwsSolutions-ECS2",
        )
        for role in (self.execution_role, self.task_role):
            acknowledge_nag(
                role,
                "CDK writes this role's least-privilege grants (image pull, named secrets, this service's log groups) into the role's own inline policy, which lives and dies with the role",
                "NIST.800.53.R5-IAMNoInlinePolicy",
            )
        acknowledge_nag(
            self.execution_role,
            "ecr:GetAuthorizationToken, which every image pull needs, has no resource-level permissions; every other statement names its resources",
            "AwsSolutions-IAM5[Resource::*]",
        )

        for extension in self.extensions:
            extension.use_task_definition(self)
        for extension in self.extensions:
            extension.resolve_container_dependencies(self)

        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=cluster.vpc, allow_all_outbound=True,
            description=f"{props.name} tasks: app port from named callers and the load balancer only",
        )
        service_props: dict[str, Any] = {
            "cluster": cluster,
            "service_name": props.service_name,
            "task_definition": self.task_definition,
            "vpc_subnets": ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            "assign_public_ip": False,
            "security_groups": [self.security_group],
            # Explicit, because a service without a strategy gets launch type FARGATE and no Spot.
            "capacity_provider_strategies": list(capacity_strategy),
            "circuit_breaker": ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            "min_healthy_percent": 100,
            "max_healthy_percent": 200,
            "availability_zone_rebalancing": ecs.AvailabilityZoneRebalancing.ENABLED,
            "propagate_tags": ecs.PropagatedTagSource.SERVICE,
            "enable_ecs_managed_tags": True,
        }
        # DesiredCount only where the template alone sets the count. Where the scalable target (min < max)
        # or something outside (external_task_count) sets it, CloudFormation would send it with every
        # update and put the service back to it on each deployment, undoing scale-out. Without one,
        # CloudFormation starts a new service at one task and keeps the running count on updates;
        # registering the scalable target then raises the service to min_tasks.
        if props.min_tasks == props.max_tasks and not props.external_task_count:
            service_props["desired_count"] = props.min_tasks
        for extension in self.extensions:
            service_props = extension.modify_service_props(service_props)
        self.service = ecs.FargateService(self, "Service", **service_props)
        self.service.associate_cloud_map_service(service=self.cloud_map_service)
        cdk.Tags.of(self).add("service", props.name)

        # A fixed count (min == max, e.g. an App Mesh canary's one task) gets no scaling at all: a
        # scalable target there could only fight the count, and its policies would only cost alarms.
        self.scaling: ecs.ScalableTaskCount | None = None
        if props.min_tasks < props.max_tasks:
            self.scaling = self.service.auto_scale_task_count(min_capacity=props.min_tasks, max_capacity=props.max_tasks)
            cooldowns = {"scale_out_cooldown": cdk.Duration.seconds(props.scale_out_cooldown_seconds),
                         "scale_in_cooldown": cdk.Duration.seconds(props.scale_in_cooldown_seconds)}
            self.scaling.scale_on_cpu_utilization("Cpu", target_utilization_percent=props.target_cpu_percent, **cooldowns)
            self.scaling.scale_on_memory_utilization("Memory", target_utilization_percent=props.target_memory_percent, **cooldowns)

        for extension in self.extensions:
            extension.use_service(self)

    def _add_app_container(self) -> ecs.ContainerDefinition:
        props = self.props
        # Liveness, not readiness: a task that is briefly not ready must not be replaced.
        url = f"http://127.0.0.1:{props.container_port}{props.liveness_path}"
        container = self.task_definition.add_container(
            APP_CONTAINER,
            image=props.image,
            essential=True,
            user=props.user,
            readonly_root_filesystem=True,
            linux_parameters=self.scratch_space(APP_CONTAINER),
            environment=dict(props.environment),
            secrets=dict(props.secrets),
            port_mappings=[
                ecs.PortMapping(container_port=props.container_port, name=PORT_MAPPING_NAME, app_protocol=ecs.AppProtocol.http),
                *([ecs.PortMapping(container_port=props.grpc_port, name=GRPC_PORT_MAPPING_NAME, app_protocol=ecs.AppProtocol.grpc)]
                  if props.grpc_port else []),
            ],
            health_check=ecs.HealthCheck(
                # By default the image's python probes the liveness path (no curl needed in the image).
                command=list(props.health_check_command or [
                    "CMD", "python", "-c", f"import urllib.request; urllib.request.urlopen('{url}', timeout=3)"]),
                interval=cdk.Duration.seconds(15),
                timeout=cdk.Duration.seconds(5),
                retries=3,
                start_period=cdk.Duration.seconds(20),
            ),
            stop_timeout=cdk.Duration.seconds(props.stop_timeout_seconds),
            logging=self.container_logs("app"),
        )
        return container

    def scratch_space(self, container_name: str) -> ecs.LinuxParameters | None:
        """The writable paths of a container that runs the app's image (the app's, a worker's): a tmpfs of
        ``scratch_size_mib`` at each of ``scratch_paths``, its own."""
        if not self.props.scratch_paths:
            return None
        return tmpfs_mounts(self, f"{container_name}-scratch", paths=self.props.scratch_paths, size_mib=self.props.scratch_size_mib)

    def container_logs(self, stream_prefix: str) -> ecs.LogDriver:
        """awslogs into the service's encrypted log group; non-blocking, so logging never stalls the app."""
        return ecs.LogDrivers.aws_logs(
            stream_prefix=stream_prefix, log_group=self.log_group, mode=ecs.AwsLogDriverMode.NON_BLOCKING,
        )

    def allow_from(self, peer: ec2.IConnectable, description: str, port: int | None = None) -> None:
        """Admit ``peer`` (a caller's security group) on ``port``: by default the app port; a mesh
        proxy that listens on a port of its own needs that one instead."""
        self.security_group.connections.allow_from(peer, ec2.Port.tcp(port or self.props.container_port), description)
