"""Inputs of MeshedFargateService."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from aws_cdk import aws_ecs as ecs


@dataclass(frozen=True)
class MeshedServiceProps:
    """What one service is. Units are in the names; every optional field documents its default."""

    name: str
    image: ecs.ContainerImage
    container_port: int  # the app's HTTP port
    cpu: int  # task CPU units, sidecars included
    memory_limit_mib: int  # task memory, sidecars included
    # Readiness: the mesh's and load balancer's health checks use it (not ready = no traffic).
    health_check_path: str
    # Task count bounds for auto scaling; min_tasks == max_tasks runs a fixed count without scaling.
    min_tasks: int
    max_tasks: int
    # Services this one calls, by name. The stack opens the callees' security groups to this
    # service; App Mesh also lists only these as the node's backends.
    calls: Sequence[str] = ()
    # A second port the app serves gRPC on (port mapping "grpc"); the mesh backends publish it too.
    grpc_port: int | None = None
    # Liveness: the container health check uses it; ECS replaces a task that fails it.
    liveness_path: str = "/health/live"
    # The container health check; None probes liveness_path with the image's python.
    health_check_command: Sequence[str] | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    # Injected by ECS from Secrets Manager or SSM Parameter Store; never plain environment values.
    secrets: Mapping[str, ecs.Secret] = field(default_factory=dict)
    # Must cover the app's graceful shutdown: ECS sends SIGTERM, waits this long, then SIGKILL.
    stop_timeout_seconds: int = 30
    # The only writable paths of the app container (and of a worker's): a tmpfs of scratch_size_mib at each, per
    # container. Task memory: a container's writes there count against memory_limit_mib.
    scratch_paths: Sequence[str] = ("/tmp",)
    scratch_size_mib: int = 64
    # Non-root user the app container runs as (uid[:gid]).
    user: str = "10001:10001"
    # ECS service name (unique in the cluster); None lets CloudFormation generate one.
    service_name: str | None = None
    # TTL of the service's DNS records in the namespace.
    dns_ttl_seconds: int = 10
    target_cpu_percent: int = 60
    target_memory_percent: int = 75
    # Every target tracking policy of the service (CPU, memory, and what extensions add) waits this
    # long after scaling out / in before it scales the same way again. Scale in more slowly than out.
    scale_out_cooldown_seconds: int = 60
    scale_in_cooldown_seconds: int = 300
    # Something outside the template sets the running count of this fixed-count service (the App Mesh
    # traffic shift sets its canary's): the template then leaves DesiredCount out, so a deployment keeps
    # the count instead of putting it back. ECS starts such a service at one task, hence min_tasks=1.
    external_task_count: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.min_tasks <= self.max_tasks:
            raise ValueError(f"min_tasks={self.min_tasks}, max_tasks={self.max_tasks} is invalid: need 1 <= min <= max")
        if self.external_task_count and not self.min_tasks == self.max_tasks == 1:
            raise ValueError(f"external_task_count=True with min_tasks={self.min_tasks}, max_tasks={self.max_tasks} is invalid: "
                             "it is for a one-task service whose count something else sets (ECS starts it at one task)")
        if not 2 <= self.stop_timeout_seconds <= 120:
            raise ValueError(f"stop_timeout_seconds={self.stop_timeout_seconds} is invalid: Fargate allows 2 to 120")
        if self.health_check_command is not None and (
                len(self.health_check_command) < 2 or self.health_check_command[0] not in ("CMD", "CMD-SHELL")):
            raise ValueError(f"health_check_command={list(self.health_check_command)} is invalid: start with CMD or CMD-SHELL, then the command")
        if not 5 <= self.dns_ttl_seconds <= 60:
            raise ValueError(f"dns_ttl_seconds={self.dns_ttl_seconds} is invalid: expected 5 to 60 (short, so clients follow task changes)")
        # The task's tmpfs mounts together (app, worker, sidecars) must fit in a quarter of memory_limit_mib: checked
        # by MeshedFargateService at synthesis, once every container is in.
        if self.scratch_paths and self.scratch_size_mib < 1:
            raise ValueError(f"scratch_size_mib={self.scratch_size_mib} is invalid: expected at least 1")
        if self.user.split(":")[0] in ("0", "root"):
            raise ValueError(f"user={self.user!r} is invalid: the app container must not run as root")
        if self.grpc_port is not None and not (1 <= self.grpc_port <= 65535 and self.grpc_port != self.container_port):
            raise ValueError(f"grpc_port={self.grpc_port} is invalid: expected a port from 1 to 65535 other than container_port={self.container_port}")
        if not 0 <= self.scale_out_cooldown_seconds <= self.scale_in_cooldown_seconds <= 3600:
            raise ValueError(f"scale_out_cooldown_seconds={self.scale_out_cooldown_seconds}, scale_in_cooldown_seconds="
                             f"{self.scale_in_cooldown_seconds} is invalid: need 0 <= out <= in <= 3600 (scale in more slowly than out)")
        if self.name in self.calls:
            raise ValueError(f"calls={list(self.calls)} is invalid: a service does not call itself through the mesh")
