"""WorkerContainer: a second essential container that runs another command from the app's image."""

from __future__ import annotations

from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_sqs as sqs

from .extensions import ServiceExtension
from .scaling import track_backlog_per_task
from .service import MeshedFargateService

WORKER_CONTAINER = "worker"


class WorkerContainer(ServiceExtension):
    """Runs ``command`` (a queue worker, say) beside the app, from the same image.

    It gets what the app container gets: image, environment, secrets, user, log group (stream prefix
    ``worker``), stop timeout and a read-only root filesystem with tmpfs mounts of its own at the
    app's ``scratch_paths``. It is essential: if it exits, ECS replaces the whole task, as it does
    when the app exits. It has no port and no health check. It starts after every container the app
    starts after, so list it after the extensions that add those containers.

    With ``queue`` and ``backlog_per_task``, a scaling service also tracks the queue's backlog per
    running task (``scaling.track_backlog_per_task``), so the workers keep up with the queue even
    when the app's CPU and requests are low.
    """

    def __init__(self, *, command: Sequence[str], queue: sqs.IQueue | None = None, backlog_per_task: int | None = None) -> None:
        if not command:
            raise ValueError("command=[] is invalid: give the worker's command, e.g. ['python', '-m', 'app.worker']")
        if (queue is None) != (backlog_per_task is None):
            raise ValueError("queue and backlog_per_task go together: give both to scale on the queue's backlog, or neither")
        self.command = list(command)
        self.queue = queue
        self.backlog_per_task = backlog_per_task
        self.container: ecs.ContainerDefinition | None = None

    def use_task_definition(self, service: MeshedFargateService) -> None:
        props = service.props
        self.container = service.task_definition.add_container(
            WORKER_CONTAINER,
            image=props.image,
            command=self.command,
            essential=True,
            user=props.user,
            readonly_root_filesystem=True,
            linux_parameters=service.scratch_space(WORKER_CONTAINER),
            environment=dict(props.environment),
            secrets=dict(props.secrets),
            stop_timeout=cdk.Duration.seconds(props.stop_timeout_seconds),
            logging=service.container_logs(WORKER_CONTAINER),
        )

    def resolve_container_dependencies(self, service: MeshedFargateService) -> None:
        # The collector (and with App Mesh, Envoy) must be up before the worker's first call too.
        dependencies = service.app_container.container_dependencies
        if dependencies:
            self.container.add_container_dependencies(*dependencies)

    def use_service(self, service: MeshedFargateService) -> None:
        if self.queue is not None and service.scaling is not None:
            track_backlog_per_task(service, self.queue, self.backlog_per_task)
