"""ServiceMonitoring: one service's dashboard (RED and USE) and the alarms no deployment owns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import aws_cdk as cdk
import cdk_monitoring_constructs as monitoring
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from constructs import Construct

from constructs.meshed_service.adot import GRPC_DURATION, HTTP_DURATION, VARIANT_ATTRIBUTE
from constructs.meshed_service.alarms import (
    GRPC_SERVER_ERROR_CODES,
    MIN_REQUESTS_PER_MINUTE,
    AlarmSpec,
    error_rate,
    floor_note,
    grpc_alarm_specs,
    grpc_error_rate,
    grpc_latency_p95,
    latency_p95,
    service_connect_metric,
    summed,
)

from .facade import NamedAlarms, dashboard_facade
from .spot_interruptions import SpotInterruptionMetric

MINUTE = cdk.Duration.minutes(1)
FIVE_MINUTES = cdk.Duration.minutes(5)
CONTAINER_INSIGHTS = "ECS/ContainerInsights"
# A service with no task running this long is down: longer than a task takes to be replaced.
NO_TASKS_MINUTES = 5
# What the ADOT sidecar exports (constructs/meshed_service/adot-collector.yaml): the services' duration
# histograms as exponential histograms (EMF Values/Counts: percentiles as well as SampleCount, Sum, Min, Max),
# HTTP_DURATION and GRPC_DURATION (adot.py, where the traffic shift reads them too), with the dimension sets
# noted there; App Mesh tasks add {service.name, deployment.variant} and, for the canary alarms,
# {service.name, deployment.variant, http.response.status_code | rpc.grpc.status_code}.
PERCENTILES = ("p50", "p95", "p99")
# What servicekit answers 5xx with (servicekit.errors.HTTP_STATUS_CODES; an unhandled exception is a 500).
SERVER_ERROR_STATUSES = (500, 502, 503, 504)
ERROR_LOG_METRIC = "ErrorLogLines"
# A global table's replication usually takes under a second (runbooks/disaster-recovery.md: the tables' RPO); a
# minute on average over 5 minutes means writes pile up unreplicated: a region lost now would lose them.
REPLICATION_LAG_ALARM = cdk.Duration.minutes(1)
# The table alarms count a minute as bad above their threshold, and alarm on 3 bad minutes of 5: one bad minute (a
# burst the SDK's retries absorbed) does not page, a lasting one does within minutes.
TABLE_ALARM_MINUTES, TABLE_ALARM_WINDOW_MINUTES = 3, 5
# CloudWatch: a metric math alarm reads at most 10 metrics.
MAX_ALARM_METRICS = 10
# A collector failing its health check this long is not restarting: longer than a restart and its first checks take.
COLLECTOR_UNHEALTHY_MINUTES = 5


@dataclass(frozen=True)
class MonitoredTasks:
    """One ECS service that runs the service (App Mesh runs a primary and a canary)."""

    ecs_service_name: str
    fargate_service: ecs.FargateService
    log_group: logs.ILogGroup  # the containers' JSON logs (servicekit: one object per line with "level")
    # The task's telemetry collector sidecar (with a container health check): alarmed when unhealthy or silent.
    collector_container: str | None = None


@dataclass(frozen=True)
class SloThresholds:
    """What the service's SLO alarms fire above: an error rate (5xx, or gRPC server errors) in percent of
    requests, and a p95 latency in milliseconds. Each kind of alarm (``load_balancer_alarms``, ``grpc_alarms``,
    ``canary_alarms``) takes one; the app gives them all the ``deployment`` config's thresholds."""

    max_error_percent: float
    max_p95_latency_ms: int


@dataclass(frozen=True)
class ReplicatedTable:
    """The service's global table (``table_name``) and the regions this region's writes replicate to."""

    table_name: str
    receiving_regions: Sequence[str]


@dataclass(frozen=True)
class ServiceTable:
    """The service's table in this region (``table_name``), the DynamoDB operations the service can call on it
    (``operations``: ``ThrottledRequests`` and ``SystemErrors`` are published per operation, and an alarm sums those
    it names) and its global secondary indexes (``index_names``: their throttle events are plotted)."""

    table_name: str
    operations: Sequence[str]
    index_names: Sequence[str] = ()


class ServiceMonitoring(Construct):
    """A dashboard ``dashboard_name`` for one service, and its alarms (all to ``alarm_topic``, ALARM and OK):

    - per target group: ``<prefix>-<name>-lb-group<i>-unhealthy-targets`` (and with
      ``load_balancer_alarms`` the 5xx-rate and p95-latency alarms a Service Connect deployment would own);
    - per ECS service: ``<prefix>-<ecs service>-tasks-below-desired`` and ``-no-running-tasks`` (no task, or no
      task metrics, for NO_TASKS_MINUTES);
    - ``<prefix>-<name>-error-logs``: ERROR or CRITICAL log lines, counted by a metric filter on each log group;
    - with ``grpc_alarms`` (and ``grpc``): ``<prefix>-<name>-grpc-server-error-rate`` and ``-grpc-server-p95-latency`` on the
      service's own gRPC calls (the app passes it with App Mesh; Service Connect's are deployment alarms);
    - with ``canary_alarms`` (App Mesh): ``<prefix>-<name>-canary-5xx-rate`` and ``-canary-p95-latency`` (and
      with ``grpc`` ``-canary-grpc-error-rate`` and ``-canary-grpc-p95-latency``) on the canary's own requests;
    - with ``replicated_table``: ``<prefix>-<name>-replication-to-<region>`` per receiving region, the table's
      replication from this region taking more than REPLICATION_LAG_ALARM on average in 3 five-minute periods in a row;
    - with ``table``: ``<prefix>-<name>-table-throttled-requests`` and ``-table-system-errors``, the table's
      ``ThrottledRequests`` and ``SystemErrors`` summed over the service's operations, above
      ``max_throttled_requests_per_minute`` and ``max_table_system_errors_per_minute`` in TABLE_ALARM_MINUTES of
      TABLE_ALARM_WINDOW_MINUTES minutes;
    - per ECS service with a ``collector_container``: ``<prefix>-<ecs service>-collector-unhealthy``, a task's
      collector failing its container health check, or none reporting while tasks run, for COLLECTOR_UNHEALTHY_MINUTES.

    Exposes ``facade``, ``alarm_names`` (every alarm it made) and ``error_log_filters``.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, name: str, dashboard_name: str, alarm_name_prefix: str,
        alarm_topic: sns.ITopic, cluster_name: str, tasks: Sequence[MonitoredTasks], metrics_namespace: str,
        error_log_namespace: str, load_balancer: elbv2.IApplicationLoadBalancer | None = None,
        target_groups: Sequence[elbv2.IApplicationTargetGroup] = (),
        load_balancer_alarms: SloThresholds | None = None, mesh_discovery_name: str | None = None,
        grpc: bool = False, grpc_alarms: SloThresholds | None = None, deployment_alarms: Sequence[cloudwatch.IAlarm] = (),
        spot_interruptions: SpotInterruptionMetric | None = None, max_error_log_lines_per_5_minutes: int = 10,
        below_desired_minutes: int = 10, canary_alarms: SloThresholds | None = None,
        replicated_table: ReplicatedTable | None = None, table: ServiceTable | None = None,
        max_throttled_requests_per_minute: int = 0, max_table_system_errors_per_minute: int = 0,
    ) -> None:
        super().__init__(scope, construct_id)
        if not tasks:
            raise ValueError(f"{name}: tasks is empty; monitor at least one ECS service")
        if table and not 1 <= len(table.operations) <= MAX_ALARM_METRICS:
            raise ValueError(f"{name}: table.operations={list(table.operations)!r} is invalid: give 1 to {MAX_ALARM_METRICS} "
                             "operations (a metric math alarm reads at most 10 metrics)")
        if min(max_throttled_requests_per_minute, max_table_system_errors_per_minute) < 0:
            raise ValueError(f"{name}: the table alarms' thresholds must be 0 or more")
        self.name = name
        cdk.Tags.of(self).add("service", name)  # its dashboard and alarms
        self.alarm_name_prefix = alarm_name_prefix
        self.cluster_name = cluster_name
        self.metrics_namespace = metrics_namespace
        self.named_alarm = NamedAlarms()
        self.facade = dashboard_facade(self, "Monitoring", dashboard_name=dashboard_name, alarm_topic=alarm_topic,
                                       alarm_name_prefix=f"{alarm_name_prefix}-{name}")

        self.facade.add_large_header(f"{name}: requests, errors, duration (RED)")
        if bool(load_balancer) != bool(target_groups):
            raise ValueError(f"{name}: give load_balancer and target_groups together, or neither")
        if load_balancer:
            self._load_balancer(load_balancer, target_groups, load_balancer_alarms)
        self._own_metrics(grpc, grpc_alarms)
        if canary_alarms:
            self._canary(canary_alarms, grpc)
        if mesh_discovery_name:
            self._service_connect(tasks[0].ecs_service_name, mesh_discovery_name)
        if deployment_alarms:
            self.facade.add_widget(cloudwatch.AlarmStatusWidget(
                title="Deployment alarms (a deployment in progress rolls back on these)", alarms=list(deployment_alarms),
                width=24))

        self.facade.add_large_header(f"{name}: utilization, saturation, errors of the tasks (USE)")
        for monitored in tasks:
            self.facade.monitor_simple_fargate_service(
                fargate_service=monitored.fargate_service, human_readable_name=f"{monitored.ecs_service_name}: CPU and memory",
                alarm_friendly_name=monitored.ecs_service_name)
            self._task_counts(monitored, below_desired_minutes, spot_interruptions)
        self.error_log_filters = [self._error_log_filter(i, monitored.log_group, error_log_namespace)
                                  for i, monitored in enumerate(tasks)]
        self._error_logs(error_log_namespace, max_error_log_lines_per_5_minutes)
        if replicated_table and replicated_table.receiving_regions:
            self._replication(replicated_table)
        if table:
            self._table(table, max_throttled_requests_per_minute, max_table_system_errors_per_minute)

    @property
    def alarm_names(self) -> list[str]:
        return self.named_alarm.names

    def _alarm_name(self, what: str) -> str:
        return f"{self.alarm_name_prefix}-{self.name}-{what}"

    def _custom(self, title: str, groups: list[monitoring.CustomMetricGroup], description: str | None = None) -> None:
        self.facade.monitor_custom(human_readable_name=title, alarm_friendly_name=title, metric_groups=groups,
                                   description=description)

    def _load_balancer(self, load_balancer: elbv2.IApplicationLoadBalancer, groups: Sequence[elbv2.IApplicationTargetGroup],
                       alarms: SloThresholds | None) -> None:
        """Per target group (two when ECS shifts traffic between them during a canary): requests,
        5xx, response time percentiles and target health, as the load balancer sees them."""
        label = {0: "primary group", 1: "alternate group"}
        requests, errors, latency, health = [], [], [], []
        for i, group in enumerate(groups):
            # Dimensions from the resources' full-name attributes: a target group's own ``metrics``
            # derive the load balancer's from its listener ARN with Fn::Split, which cfn-lint cannot
            # check across stacks.
            def alb(metric_name: str, statistic: str, metric_label: str | None = None,
                    group: elbv2.IApplicationTargetGroup = group) -> cloudwatch.Metric:
                return cloudwatch.Metric(
                    namespace="AWS/ApplicationELB", metric_name=metric_name, statistic=statistic, period=MINUTE,
                    label=metric_label, dimensions_map={"LoadBalancer": load_balancer.load_balancer_full_name,
                                                        "TargetGroup": group.target_group_full_name})

            group_requests = alb("RequestCount", "Sum", f"{label[i]}: requests")
            # Metric ids are per graph: suffix them with the group so both groups fit in one widget.
            answered, unreached = alb("HTTPCode_Target_5XX_Count", "Sum"), alb("TargetConnectionErrorCount", "Sum")
            group_errors = cloudwatch.MathExpression(
                expression=f"FILL(answered{i}, 0) + FILL(unreached{i}, 0)", period=MINUTE,
                label=f"{label[i]}: 5xx and connection errors", using_metrics={f"answered{i}": answered, f"unreached{i}": unreached})
            requests.append(group_requests)
            if alarms:
                errors.append(monitoring.CustomMetricWithAlarm(
                    # As constructs/meshed_service/alarms.error_rate: minutes with few requests count as 0 %.
                    metric=cloudwatch.MathExpression(
                        expression=(f"IF(requests{i} >= {MIN_REQUESTS_PER_MINUTE}, "
                                    f"100 * (FILL(answered{i}, 0) + FILL(unreached{i}, 0)) / requests{i}, 0)"),
                        using_metrics={f"answered{i}": answered, f"unreached{i}": unreached, f"requests{i}": group_requests},
                        period=MINUTE, label=f"{label[i]}: 5xx, % of requests"),
                    alarm_friendly_name=f"lb-group{i}-5xx-rate",
                    add_alarm=self.named_alarm(
                        monitoring.CustomThreshold, alarm_name=self._alarm_name(f"lb-group{i}-5xx-rate"),
                        summary=(f"{self.name}: more than {alarms.max_error_percent:g}% of the load balancer's requests to target group {i} "
                                 f"answered 5xx or failed to connect; {floor_note(rate=True)}"),
                        runbook="elevated-5xx", threshold=alarms.max_error_percent,
                        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                        datapoints_to_alarm=2, evaluation_periods=3,
                        treat_missing_data_override=cloudwatch.TreatMissingData.NOT_BREACHING)))
            else:
                errors.append(group_errors)
            for statistic in ("p50", "p95", "p99"):
                metric = alb("TargetResponseTime", statistic, f"{label[i]}: {statistic}")
                if alarms and statistic == "p95":
                    latency.append(monitoring.CustomMetricWithAlarm(
                        metric=latency_p95(metric, group_requests, metric.label, id_suffix=str(i)),
                        alarm_friendly_name=f"lb-group{i}-p95-latency",
                        add_alarm=self.named_alarm(
                            monitoring.CustomThreshold, alarm_name=self._alarm_name(f"lb-group{i}-p95-latency"),
                            summary=(f"{self.name}: p95 response time of target group {i} above {alarms.max_p95_latency_ms} ms; "
                                     + floor_note(rate=False)),
                            runbook="latency-slo-breach", threshold=alarms.max_p95_latency_ms / 1000,
                            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                            datapoints_to_alarm=2, evaluation_periods=3,
                            treat_missing_data_override=cloudwatch.TreatMissingData.NOT_BREACHING)))
                else:
                    latency.append(metric)
            health.append(alb("HealthyHostCount", "Minimum", f"{label[i]}: healthy"))
            health.append(monitoring.CustomMetricWithAlarm(
                metric=alb("UnHealthyHostCount", "Maximum", f"{label[i]}: unhealthy"),
                alarm_friendly_name=f"lb-group{i}-unhealthy-targets",
                add_alarm=self.named_alarm(
                    monitoring.CustomThreshold, alarm_name=self._alarm_name(f"lb-group{i}-unhealthy-targets"),
                    summary=f"{self.name}: target group {i} has had unhealthy targets for 5 minutes (tasks failing the load balancer's health check)",
                    runbook="unhealthy-targets", threshold=0,
                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                    datapoints_to_alarm=5, evaluation_periods=5,
                    treat_missing_data_override=cloudwatch.TreatMissingData.NOT_BREACHING)))
        self._custom("Load balancer", [
            monitoring.CustomMetricGroup(title="Requests / minute", metrics=requests),
            monitoring.CustomMetricGroup(title="5xx and connection errors" + (" (% of requests)" if alarms else " / minute"), metrics=errors),
            monitoring.CustomMetricGroup(title="Target response time (seconds)", metrics=latency),
            monitoring.CustomMetricGroup(title="Targets", metrics=health),
        ], description="AWS/ApplicationELB, per target group of the service's listener rule")

    def _alarm(self, spec: AlarmSpec) -> monitoring.CustomMetricWithAlarm:
        """``<prefix>-<name>-<what>``: the spec's metric (an ``error_rate`` or ``latency_p95``, 0 in minutes with too
        few requests) above its threshold in 2 of 3 minutes."""
        return monitoring.CustomMetricWithAlarm(
            metric=spec.metric, alarm_friendly_name=spec.what,
            add_alarm=self.named_alarm(
                monitoring.CustomThreshold, alarm_name=self._alarm_name(spec.what), summary=spec.summary, runbook=spec.runbook,
                threshold=spec.threshold, comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                datapoints_to_alarm=2, evaluation_periods=3, treat_missing_data_override=cloudwatch.TreatMissingData.NOT_BREACHING))

    def _own_metrics(self, grpc: bool, grpc_alarms: SloThresholds | None) -> None:
        """What the service itself measures (OTel, exported by the ADOT sidecar as EMF)."""
        ns = self.metrics_namespace
        service = {"service.name": self.name}

        def own(metric_name: str, statistic: str, label: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace=ns, metric_name=metric_name, dimensions_map=service, statistic=statistic,
                                     period=MINUTE, label=label)

        def failures(metric_name: str, dimension: str, exclude: str = "") -> cloudwatch.MathExpression:
            # One series per error.type (or gRPC status): summed, the failures per minute.
            query = (f'{{"{ns}","{dimension}","service.name"}} MetricName="{metric_name}" "service.name"="{self.name}"'
                     + (f' NOT "{dimension}"="{exclude}"' if exclude else ""))
            return cloudwatch.MathExpression(expression=f"SUM(SEARCH('{query}', 'SampleCount', 60))", using_metrics={},
                                             period=MINUTE, label="failed")

        groups = [
            monitoring.CustomMetricGroup(title="HTTP requests / minute", metrics=[own(HTTP_DURATION, "SampleCount", "requests")]),
            monitoring.CustomMetricGroup(title="HTTP failures / minute (5xx, unhandled errors)",
                                         metrics=[failures(HTTP_DURATION, "error.type")]),
            monitoring.CustomMetricGroup(title="HTTP duration (seconds)", metrics=[
                *(own(HTTP_DURATION, p, p) for p in PERCENTILES), own(HTTP_DURATION, "Maximum", "maximum")]),
        ]
        if grpc:
            groups += [
                monitoring.CustomMetricGroup(title="gRPC calls / minute", metrics=[own(GRPC_DURATION, "SampleCount", "calls")]),
                monitoring.CustomMetricGroup(title="gRPC failures / minute (status not OK)",
                                             metrics=[failures(GRPC_DURATION, "rpc.grpc.status_code", exclude="0")]),
                monitoring.CustomMetricGroup(title="gRPC duration (milliseconds)", metrics=[
                    *(own(GRPC_DURATION, p, p) for p in PERCENTILES), own(GRPC_DURATION, "Maximum", "maximum")]),
            ]
        if grpc and grpc_alarms:
            error_rate_alarm, p95_alarm = grpc_alarm_specs(self.name, ns, max_error_percent=grpc_alarms.max_error_percent,
                                                           max_p95_latency_ms=grpc_alarms.max_p95_latency_ms)
            groups += [
                monitoring.CustomMetricGroup(title="gRPC server errors (% of calls)", metrics=[self._alarm(error_rate_alarm)]),
                monitoring.CustomMetricGroup(title="gRPC p95 (milliseconds)", metrics=[self._alarm(p95_alarm)]),
            ]
        self._custom("The service's own metrics", groups, description=(
            f"Namespace `{ns}`, from the service's OpenTelemetry instruments: every request the service answers, "
            "whoever sent it (load balancer or mesh). Durations are exponential histograms, so the percentiles "
            "are the service's own."))

    def _canary(self, alarms: SloThresholds, grpc: bool) -> None:
        """The App Mesh canary judged on its own traffic (the router's share of mesh calls), beside the primary."""
        ns = self.metrics_namespace
        canary = {"service.name": self.name, VARIANT_ATTRIBUTE: "canary"}

        def variant(metric_name: str, statistic: str, label: str, name: str = "canary", **dimensions: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace=ns, metric_name=metric_name, statistic=statistic, period=MINUTE, label=label,
                                     dimensions_map={"service.name": self.name, VARIANT_ATTRIBUTE: name, **dimensions})

        def rate_alarm(what: str, rate: cloudwatch.IMetric, summary: str, counted: str):
            return self._alarm(AlarmSpec(f"canary-{what}", rate, alarms.max_error_percent,
                                         f"{summary}; {floor_note(counted, rate=True)}", "canary-rollback"))

        def p95_alarm(what: str, metric: cloudwatch.IMetric, threshold: float, summary: str, counted: str):
            return self._alarm(AlarmSpec(f"canary-{what}", metric, threshold, f"{summary}; {floor_note(counted, rate=False)}",
                                         "canary-rollback"))

        label = "canary: failed, % of its requests"
        http_failed = summed({f"s{status}": variant(HTTP_DURATION, "SampleCount", str(status), **{"http.response.status_code": str(status)})
                              for status in SERVER_ERROR_STATUSES}, "failed")
        groups = [
            monitoring.CustomMetricGroup(title="HTTP requests / minute", metrics=[
                variant(HTTP_DURATION, "SampleCount", "canary"), variant(HTTP_DURATION, "SampleCount", "primary", "primary")]),
            monitoring.CustomMetricGroup(title="Canary HTTP 5xx (% of its requests)", metrics=[rate_alarm(
                "5xx-rate", error_rate(http_failed, variant(HTTP_DURATION, "SampleCount", "requests"), label=label),
                f"{self.name}: more than {alarms.max_error_percent:g}% of the App Mesh canary's requests answered 5xx", "requests")]),
            monitoring.CustomMetricGroup(title="HTTP p95 (seconds)", metrics=[
                p95_alarm("p95-latency", latency_p95(variant(HTTP_DURATION, "p95", "canary p95"),
                                                     variant(HTTP_DURATION, "SampleCount", "requests"), "canary p95"),
                          alarms.max_p95_latency_ms / 1000,
                          f"{self.name}: p95 duration of the App Mesh canary's requests above {alarms.max_p95_latency_ms} ms", "requests"),
                variant(HTTP_DURATION, "p95", "primary p95", "primary")]),
        ]
        if grpc:
            groups += [
                monitoring.CustomMetricGroup(title="gRPC calls / minute", metrics=[
                    variant(GRPC_DURATION, "SampleCount", "canary"), variant(GRPC_DURATION, "SampleCount", "primary", "primary")]),
                monitoring.CustomMetricGroup(title="Canary gRPC server errors (% of its calls)", metrics=[rate_alarm(
                    "grpc-error-rate", grpc_error_rate(ns, canary, label),
                    f"{self.name}: more than {alarms.max_error_percent:g}% of the App Mesh canary's gRPC calls failed with a "
                    f"server error ({', '.join(map(str, GRPC_SERVER_ERROR_CODES))})", "calls")]),
                monitoring.CustomMetricGroup(title="gRPC p95 (milliseconds)", metrics=[
                    p95_alarm("grpc-p95-latency", grpc_latency_p95(ns, canary, "canary p95"), alarms.max_p95_latency_ms,
                              f"{self.name}: p95 duration of the App Mesh canary's gRPC calls above {alarms.max_p95_latency_ms} ms",
                              "calls"),
                    variant(GRPC_DURATION, "p95", "primary p95", "primary")]),
            ]
        self._custom("Canary (App Mesh): its own traffic against the primary's", groups, description=(
            f"Namespace `{ns}` by `{VARIANT_ATTRIBUTE}` (the tasks' collector sets it): the traffic-shift state machine "
            "rolls back on the canary's alarms (runbooks/canary-rollback.md)."))

    def _service_connect(self, ecs_service_name: str, discovery_name: str) -> None:
        # Requests as the service's own proxy counts them; responses and their time as its callers' proxies
        # saw them (Service Connect publishes those on TargetDiscoveryName only: meshed_service/alarms.py).
        inbound = cloudwatch.Metric(namespace="AWS/ECS", metric_name="RequestCount", statistic="Sum", period=MINUTE, label="requests",
                                    dimensions_map={"ClusterName": self.cluster_name, "ServiceName": ecs_service_name,
                                                    "DiscoveryName": discovery_name})
        self._custom("Mesh (Service Connect)", [
            monitoring.CustomMetricGroup(title="Requests / minute (inbound)", metrics=[inbound]),
            monitoring.CustomMetricGroup(title="5xx / minute (as callers saw them)", metrics=[
                service_connect_metric(discovery_name, "HTTPCode_Target_5XX_Count", "Sum", "5xx")]),
            monitoring.CustomMetricGroup(title="Response time, milliseconds (as callers saw it)", metrics=[
                service_connect_metric(discovery_name, "TargetResponseTime", statistic, statistic) for statistic in PERCENTILES]),
        ])

    def _task_counts(self, monitored: MonitoredTasks, minutes: int, spot: SpotInterruptionMetric | None) -> None:
        dimensions = {"ClusterName": self.cluster_name, "ServiceName": monitored.ecs_service_name}

        def insight(metric_name: str, label: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace=CONTAINER_INSIGHTS, metric_name=metric_name, dimensions_map=dimensions,
                                     statistic="Average", period=MINUTE, label=label)

        shortfall = cloudwatch.MathExpression(
            expression="FILL(desired, 0) - FILL(running, 0)", period=MINUTE, label="desired - running",
            using_metrics={"desired": insight("DesiredTaskCount", "desired"), "running": insight("RunningTaskCount", "running")})
        groups = [
            monitoring.CustomMetricGroup(title="Tasks", metrics=[
                insight("DesiredTaskCount", "desired"), insight("RunningTaskCount", "running"), insight("PendingTaskCount", "pending")]),
            monitoring.CustomMetricGroup(title="Tasks missing (desired - running)", metrics=[monitoring.CustomMetricWithAlarm(
                metric=shortfall, alarm_friendly_name=f"{monitored.ecs_service_name}-tasks-below-desired",
                add_alarm=self.named_alarm(
                    monitoring.CustomThreshold, alarm_name=f"{self.alarm_name_prefix}-{monitored.ecs_service_name}-tasks-below-desired",
                    summary=f"{monitored.ecs_service_name}: fewer tasks running than desired for {minutes} minutes (tasks fail to start or keep stopping)",
                    runbook="task-count-below-desired", threshold=0,
                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                    datapoints_to_alarm=minutes, evaluation_periods=minutes,
                    treat_missing_data_override=cloudwatch.TreatMissingData.NOT_BREACHING))]),
            # The shortfall above cannot see a service with no task at all: ECS stops reporting a service's
            # metrics while none of its tasks runs (ECS developer guide, "Amazon ECS CloudWatch metrics"), and
            # no data is "not breaching" there. Here silence counts as no task running.
            monitoring.CustomMetricGroup(title="Tasks running (minimum)", metrics=[monitoring.CustomMetricWithAlarm(
                metric=insight("RunningTaskCount", "running (minimum)").with_(statistic="Minimum"),
                alarm_friendly_name=f"{monitored.ecs_service_name}-no-running-tasks",
                add_alarm=self.named_alarm(
                    monitoring.CustomThreshold, alarm_name=f"{self.alarm_name_prefix}-{monitored.ecs_service_name}-no-running-tasks",
                    summary=f"{monitored.ecs_service_name}: no task running, or no task metrics, for {NO_TASKS_MINUTES} minutes "
                            "(the service is down)",
                    runbook="task-count-below-desired", threshold=1,
                    comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                    datapoints_to_alarm=NO_TASKS_MINUTES, evaluation_periods=NO_TASKS_MINUTES,
                    treat_missing_data_override=cloudwatch.TreatMissingData.BREACHING))]),
        ]
        if spot:
            groups.append(monitoring.CustomMetricGroup(title="Fargate Spot interruptions / 5 minutes",
                                                       metrics=[spot.metric(monitored.ecs_service_name)]))
        if monitored.collector_container:
            groups.append(self._collector(monitored, insight("RunningTaskCount", "running")))
        self._custom(f"{monitored.ecs_service_name}: tasks", groups, description=(
            "ECS/ContainerInsights task counts" + ("; Spot interruptions from ECS task state change events" if spot else "")
            + (f"; the `{monitored.collector_container}` sidecar's container health and restarts" if monitored.collector_container else "")))

    def _collector(self, monitored: MonitoredTasks, running: cloudwatch.Metric) -> monitoring.CustomMetricGroup:
        """The telemetry collector sidecar, not essential: when it dies or hangs the task serves on and nothing else
        notices (the dashboards go quiet, Service Connect's gRPC deployment alarms read nothing). Container Insights
        publishes its container health check, 1 when UNHEALTHY and 0 when HEALTHY, per container. A stopped container
        has no health check to report, so while tasks run, no report at all counts as unhealthy too: every task's
        collector down, as when it cannot start. One stopped among healthy ones counts only if ECS reports it UNHEALTHY."""
        container = {"ClusterName": self.cluster_name, "ServiceName": monitored.ecs_service_name,
                     "ContainerName": monitored.collector_container}

        def container_metric(metric_name: str, statistic: str, label: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace=CONTAINER_INSIGHTS, metric_name=metric_name, dimensions_map=container,
                                     statistic=statistic, period=MINUTE, label=label)

        unhealthy = cloudwatch.MathExpression(
            expression="IF(FILL(running, 0) >= 1, FILL(unhealthy, 1), 0)", period=MINUTE, label="collector unhealthy or silent",
            using_metrics={"running": running, "unhealthy": container_metric("UnHealthyContainerHealthStatus", "Maximum", "unhealthy")})
        ecs_service = monitored.ecs_service_name
        return monitoring.CustomMetricGroup(title=f"Telemetry collector ({monitored.collector_container}): unhealthy, restarts", metrics=[
            monitoring.CustomMetricWithAlarm(
                metric=unhealthy, alarm_friendly_name=f"{ecs_service}-collector-unhealthy",
                add_alarm=self.named_alarm(
                    monitoring.CustomThreshold, alarm_name=f"{self.alarm_name_prefix}-{ecs_service}-collector-unhealthy",
                    summary=(f"{ecs_service}: a task's telemetry collector has failed its health check, or no collector has "
                             f"reported one while tasks ran, for {COLLECTOR_UNHEALTHY_MINUTES} minutes (its traces and "
                             "metrics are lost)"),
                    runbook="telemetry-collector", threshold=0,
                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                    datapoints_to_alarm=COLLECTOR_UNHEALTHY_MINUTES, evaluation_periods=COLLECTOR_UNHEALTHY_MINUTES,
                    treat_missing_data_override=cloudwatch.TreatMissingData.NOT_BREACHING)),
            container_metric("RestartCount", "Sum", "restarts")])

    def _error_log_filter(self, index: int, log_group: logs.ILogGroup, namespace: str) -> logs.MetricFilter:
        return logs.MetricFilter(
            self, f"ErrorLogFilter{index}", log_group=log_group, metric_namespace=namespace, metric_name=ERROR_LOG_METRIC,
            # servicekit's JSON log lines: {"level": "ERROR", "service": "<name>", ...}
            filter_pattern=logs.FilterPattern.any(logs.FilterPattern.string_value("$.level", "=", "ERROR"),
                                                  logs.FilterPattern.string_value("$.level", "=", "CRITICAL")),
            metric_value="1", dimensions={"service": "$.service"}, unit=cloudwatch.Unit.COUNT,
        )

    def _error_logs(self, namespace: str, threshold: int) -> None:
        lines = cloudwatch.Metric(namespace=namespace, metric_name=ERROR_LOG_METRIC, dimensions_map={"service": self.name},
                                  statistic="Sum", period=FIVE_MINUTES, label="ERROR and CRITICAL lines")
        self._custom("Error logs", [monitoring.CustomMetricGroup(title="Error log lines / 5 minutes", metrics=[
            monitoring.CustomMetricWithAlarm(
                metric=lines, alarm_friendly_name="error-logs",
                add_alarm=self.named_alarm(
                    monitoring.CustomThreshold, alarm_name=self._alarm_name("error-logs"),
                    summary=f"{self.name}: more than {threshold} ERROR or CRITICAL log lines in 5 minutes",
                    runbook="error-logs", threshold=threshold,
                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                    datapoints_to_alarm=1, evaluation_periods=1,
                    treat_missing_data_override=cloudwatch.TreatMissingData.NOT_BREACHING))])],
            description=f"Metric filter on the service's log groups: `{{ $.level = \"ERROR\" || $.level = \"CRITICAL\" }}` -> `{namespace}` `{ERROR_LOG_METRIC}`")

    def _replication(self, table: ReplicatedTable) -> None:
        """DynamoDB publishes ReplicationLatency in the region a write was made, per receiving region; no writes,
        no data (not breaching)."""
        limit = REPLICATION_LAG_ALARM.to_seconds()

        def latency(region: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace="AWS/DynamoDB", metric_name="ReplicationLatency", statistic="Average",
                                     dimensions_map={"TableName": table.table_name, "ReceivingRegion": region},
                                     period=FIVE_MINUTES, label=f"to {region}")

        self._custom("Table replication", [monitoring.CustomMetricGroup(title="Replication latency, milliseconds", metrics=[
            monitoring.CustomMetricWithAlarm(
                metric=latency(region), alarm_friendly_name=f"replication-to-{region}",
                add_alarm=self.named_alarm(
                    monitoring.CustomThreshold, alarm_name=self._alarm_name(f"replication-to-{region}"),
                    summary=(f"{self.name}: writes to {table.table_name} take more than {limit:g} s on average to replicate "
                             f"to {region} (RPO at risk)"),
                    runbook="disaster-recovery", threshold=limit * 1000,
                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                    datapoints_to_alarm=3, evaluation_periods=3,
                    treat_missing_data_override=cloudwatch.TreatMissingData.NOT_BREACHING))
            for region in table.receiving_regions])],
            description=f"`AWS/DynamoDB` `ReplicationLatency` of `{table.table_name}` from this region's writes, per receiving region")

    def _table(self, table: ServiceTable, max_throttled: int, max_system_errors: int) -> None:
        """``ThrottledRequests`` counts a request once whatever throttled it (the table or an index it writes to or
        queries), so summed over the service's operations it is the requests DynamoDB turned away: on an on-demand
        table a hot key, the per-table quota or a jump past twice the previous peak. ``SystemErrors`` are DynamoDB's
        own 500s. Both come per operation only, and an operation without throttles publishes nothing (FILL)."""
        minutes, window = TABLE_ALARM_MINUTES, TABLE_ALARM_WINDOW_MINUTES

        def dynamodb(metric_name: str, label: str, **dimensions: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace="AWS/DynamoDB", metric_name=metric_name, statistic="Sum", period=MINUTE,
                                     label=label, dimensions_map={"TableName": table.table_name, **dimensions})

        def per_operation(metric_name: str, id_prefix: str, label: str) -> cloudwatch.MathExpression:
            return summed({f"{id_prefix}{operation}": dynamodb(metric_name, operation, Operation=operation)
                           for operation in table.operations}, label)

        def alarm(metric: cloudwatch.IMetric, what: str, threshold: int, summary: str) -> monitoring.CustomMetricWithAlarm:
            return monitoring.CustomMetricWithAlarm(
                metric=metric, alarm_friendly_name=what,
                add_alarm=self.named_alarm(
                    monitoring.CustomThreshold, alarm_name=self._alarm_name(what),
                    summary=f"{self.name}: {summary} in {minutes} of the last {window} minutes", runbook="table-errors",
                    threshold=threshold, comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                    datapoints_to_alarm=minutes, evaluation_periods=window,
                    treat_missing_data_override=cloudwatch.TreatMissingData.NOT_BREACHING))

        events = [dynamodb(f"{kind}ThrottleEvents", f"table {kind.lower()}") for kind in ("Read", "Write")] + [
            dynamodb(f"{kind}ThrottleEvents", f"{index} {kind.lower()}", GlobalSecondaryIndexName=index)
            for index in table.index_names for kind in ("Read", "Write")]
        self._custom("Table", [
            monitoring.CustomMetricGroup(title="Throttled requests / minute", metrics=[alarm(
                per_operation("ThrottledRequests", "throttled", "throttled requests"), "table-throttled-requests", max_throttled,
                f"more than {max_throttled} requests a minute to {table.table_name} throttled")]),
            monitoring.CustomMetricGroup(title="DynamoDB system errors / minute", metrics=[alarm(
                per_operation("SystemErrors", "errors", "system errors"), "table-system-errors", max_system_errors,
                f"more than {max_system_errors} requests a minute to {table.table_name} failed with a DynamoDB system error")]),
            monitoring.CustomMetricGroup(title="Throttle events / minute (table and indexes)", metrics=events),
        ], description=(f"`AWS/DynamoDB` of `{table.table_name}` in this region: `ThrottledRequests` and `SystemErrors` summed over "
                        f"the service's operations ({', '.join(table.operations)}); throttle events per table and index"))
