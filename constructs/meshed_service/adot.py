"""AdotCollector: an AWS Distro for OpenTelemetry collector sidecar (traces to X-Ray, metrics to CloudWatch)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import aws_cdk as cdk
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs

from constructs.compliance import acknowledge_nag

from .extensions import ServiceExtension
from .service import APP_CONTAINER, SIDECAR_TMPFS_MIB, MeshedFargateService, tmpfs_mounts
from .worker import WORKER_CONTAINER

# awsemf writes exponential histograms as EMF Values/Counts (percentiles in CloudWatch) since
# opentelemetry-collector-contrib PR #22626 (mid-2023; ADOT v0.31.0 ships contrib v0.80.0); this pin is later.
ADOT_IMAGE = "public.ecr.aws/aws-observability/aws-otel-collector:v0.49.0"
CONFIG_FILE = Path(__file__).with_name("adot-collector.yaml")
CONTAINER = "adot-collector"
# The X-Ray calls of the collector's awsxray exporter: uploading segments and its own telemetry.
XRAY_EXPORT_ACTIONS = ("xray:PutTraceSegments", "xray:PutTelemetryRecords")
# The resource attribute that tells an App Mesh canary's telemetry from its primary's (a metric dimension
# in adot-collector.yaml). This repo's own name: OpenTelemetry's conventions define none for it.
VARIANT_ATTRIBUTE = "deployment.variant"
# The services' own duration histograms (servicekit's RED instruments), as awsemf names them in CloudWatch:
# the observability stack's dashboards and alarms and the traffic shift's request count read them.
HTTP_DURATION = "http.server.request.duration"  # seconds; dimensions {service.name}, {service.name, error.type}
GRPC_DURATION = "rpc.server.duration"  # milliseconds; {service.name}, {service.name, rpc.grpc.status_code}
# For every container that exports to the collector (the OpenTelemetry SDKs' standard variables): each
# histogram exponential, so awsemf sends buckets CloudWatch computes percentiles from, and delta, because
# awsemf passes exponential histograms on as they come. servicekit sets both in code for its RED durations.
EXPORTER_ENVIRONMENT = {
    "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION": "base2_exponential_bucket_histogram",
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "DELTA",
}
EXPORTING_CONTAINERS = (APP_CONTAINER, WORKER_CONTAINER)
# ECS restarts a container only if it ran this long since its last start (default 300 s): a collector that dies
# after 2 minutes (out of memory under a burst) would stay down for the task's life. 60 s is ECS's minimum.
RESTART_ATTEMPT_PERIOD = cdk.Duration.seconds(60)


def collector_config(metrics_namespace: str, metrics_log_group_name: str) -> str:
    """The versioned config file with this service's values filled in."""
    return (
        CONFIG_FILE.read_text()
        .replace("__METRICS_NAMESPACE__", metrics_namespace)
        .replace("__METRICS_LOG_GROUP__", metrics_log_group_name)
    )


class AdotCollector(ServiceExtension):
    """Adds the collector container; the app exports OTLP to 127.0.0.1:4317 (gRPC) or :4318 (HTTP).

    The collector is not essential: if it fails, the service keeps serving and only telemetry is
    lost. ECS restarts it when it exits, and its container health check is what tells anyone it is
    down (Container Insights' ``UnHealthyContainerHealthStatus``: constructs/observability alarms on it).
    The app starts after the collector has started, so its first spans are not dropped.
    ``resource_attributes`` are added to every span and metric the task sends (the collector's
    ``resourcedetection`` env detector), e.g. ``{VARIANT_ATTRIBUTE: "canary"}``.
    """

    def __init__(self, *, metrics_namespace: str, resource_attributes: Mapping[str, str] | None = None,
                 cpu: int = 64, memory_limit_mib: int = 128) -> None:
        self.metrics_namespace = metrics_namespace
        self.resource_attributes = dict(resource_attributes or {})
        self.cpu = cpu
        self.memory_limit_mib = memory_limit_mib
        self.container: ecs.ContainerDefinition | None = None

    def use_task_definition(self, service: MeshedFargateService) -> None:
        metrics_log_group = logs.LogGroup(
            service, "MetricsLogs", retention=service.log_retention, encryption_key=service.log_encryption_key,
        )
        self.container = service.task_definition.add_container(
            CONTAINER,
            image=ecs.ContainerImage.from_registry(ADOT_IMAGE),
            essential=False,
            # Not essential, so ECS would neither restart a collector that exits nor replace the task: the
            # task would go on without telemetry (and a canary judged by it would look healthy). Restart it.
            enable_restart_policy=True,
            restart_attempt_period=RESTART_ATTEMPT_PERIOD,
            cpu=self.cpu,
            memory_limit_mib=self.memory_limit_mib,
            user="10001",
            readonly_root_filesystem=True,
            linux_parameters=tmpfs_mounts(service, f"{CONTAINER}-tmp", paths=["/tmp"], size_mib=SIDECAR_TMPFS_MIB),
            environment={
                # The collector reads its whole configuration from this variable.
                "AOT_CONFIG_CONTENT": collector_config(self.metrics_namespace, metrics_log_group.log_group_name),
                "OTEL_RESOURCE_ATTRIBUTES": ",".join(
                    f"{key}={value}" for key, value in {"service.name": service.props.name, **self.resource_attributes}.items()),
            },
            health_check=ecs.HealthCheck(
                command=["CMD", "/healthcheck"],
                interval=cdk.Duration.seconds(15), timeout=cdk.Duration.seconds(5), retries=3,
                start_period=cdk.Duration.seconds(10),
            ),
            logging=service.container_logs(CONTAINER),
        )
        metrics_log_group.grant_write(service.task_role)
        # What the awsxray exporter calls. No sampling APIs: the apps sample on their own (servicekit), and the
        # collector serves no X-Ray remote sampling.
        xray = iam.PolicyStatement(actions=list(XRAY_EXPORT_ACTIONS), resources=["*"])
        service.task_role.add_to_principal_policy(xray)
        acknowledge_nag(
            service.task_role,
            "X-Ray's trace upload APIs support no resource-level permissions, so their statement names resource *",
            "AwsSolutions-IAM5[Resource::*]",
        )

    def resolve_container_dependencies(self, service: MeshedFargateService) -> None:
        # Here, not in use_task_definition: every extension's containers (the worker's too) exist by now.
        for name in EXPORTING_CONTAINERS:
            container = service.task_definition.find_container(name)
            if container is not None:
                for variable, value in EXPORTER_ENVIRONMENT.items():
                    container.add_environment(variable, value)
        service.task_definition.find_container(APP_CONTAINER).add_container_dependencies(
            ecs.ContainerDependency(container=self.container, condition=ecs.ContainerDependencyCondition.START)
        )
