"""PlatformMonitoring: the region's platform dashboard (endpoints, NAT, mesh, queues) and its alarms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import aws_cdk as cdk
import cdk_monitoring_constructs as monitoring
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from constructs.meshed_service.alarms import MIN_REQUESTS_PER_MINUTE, service_connect_metric

from .facade import NamedAlarms, dashboard_facade
from .quotas import QUOTAS, CountedQuota, ServiceQuota

MINUTE = cdk.Duration.minutes(1)
# SQS stops publishing a queue's metrics after about six hours without activity (SQS developer guide, "Available
# CloudWatch metrics for Amazon SQS"): a dead-letter queue nobody reads is such a queue. No data there is an empty
# queue, not an unknown one; a message arriving wakes the metrics up again.
IDLE_QUEUE_IS_EMPTY = cloudwatch.TreatMissingData.NOT_BREACHING
FIVE_MINUTES = cdk.Duration.minutes(5)


@dataclass(frozen=True)
class MonitoredQueue:
    """A service's event queue and the dead-letter queue its redrive policy and EventBridge targets use."""

    service: str
    queue: sqs.IQueue
    dead_letter_queue: sqs.IQueue


@dataclass(frozen=True)
class LoadBalancerErrors:
    """The 5xx the load balancer answers itself, as a percentage of its requests, above ``max_percent``."""

    load_balancer: elbv2.IApplicationLoadBalancer
    max_percent: float


@dataclass(frozen=True)
class MeshedService:
    """What the mesh section plots per service: its ECS service and Service Connect discovery name."""

    ecs_service_name: str
    discovery_name: str | None  # None: the App Mesh backend, whose Envoy stats CloudWatch does not receive


class PlatformMonitoring(Construct):
    """A dashboard ``dashboard_name`` and these alarms (all to ``alarm_topic``, on ALARM and on OK):

    - per queue: ``<prefix>-<service>-events-dlq-not-empty`` (visible messages in the dead-letter
      queue) and ``<prefix>-<service>-events-oldest-message`` (age of the oldest message above
      ``max_queue_age``);
    - per entry of ``dead_letter_queues`` (name -> a dead-letter queue of some other event target):
      ``<prefix>-<name>-dlq-not-empty``, whose runbook is ``dead_letter_runbooks[name]`` (default dlq-redrive), tagged
      ``service=<dead_letter_queue_services[name]>`` when that names the queue's service;
    - per quota in ``quotas``: ``<prefix>-quota-<name>``, usage above ``quota_alarm_percent`` of the
      applied quota (``SERVICE_QUOTA()`` on the AWS/Usage metric, or QuotaCounter's published percentage);
    - with ``load_balancer_errors``: ``<prefix>-load-balancer-5xx-rate``, the 5xx the load balancer answers
      itself (502, 503, 504: no healthy target, a target that resets or does not answer in time).

    A queue's two alarms carry the tag ``service=<MonitoredQueue.service>`` (whose queue it is); the dashboard and the
    other alarms are the platform's. Exposes ``facade`` and ``alarm_names`` (every alarm it made).
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, dashboard_name: str, alarm_name_prefix: str,
        alarm_topic: sns.ITopic, vpc_id: str, nat_gateway_ids: Sequence[str], interface_endpoints: Mapping[str, str],
        cluster_name: str, meshed_services: Sequence[MeshedService], queues: Sequence[MonitoredQueue],
        max_queue_age: cdk.Duration, quota_alarm_percent: int, quotas: Sequence[ServiceQuota | CountedQuota] = QUOTAS,
        dead_letter_queues: Mapping[str, sqs.IQueue] | None = None, dead_letter_runbooks: Mapping[str, str] | None = None,
        load_balancer_errors: LoadBalancerErrors | None = None, dead_letter_queue_services: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.alarm_name_prefix = alarm_name_prefix
        self.named_alarm = NamedAlarms()
        self.facade = dashboard_facade(self, "Monitoring", dashboard_name=dashboard_name, alarm_topic=alarm_topic,
                                       alarm_name_prefix=alarm_name_prefix)
        self.facade.add_large_header("Network: interface endpoints and NAT gateways")
        self._endpoints(vpc_id, interface_endpoints)
        self._nat_gateways(nat_gateway_ids)
        if load_balancer_errors:
            self._load_balancer(load_balancer_errors)
        self.facade.add_large_header("Mesh")
        self._mesh(cluster_name, meshed_services)
        self.facade.add_large_header("Event queues and dead-letter queues")
        for monitored in queues:
            self._queue(monitored, max_queue_age)
        for name, dead_letter_queue in (dead_letter_queues or {}).items():
            self._dead_letter_queue(name, dead_letter_queue, (dead_letter_runbooks or {}).get(name, "dlq-redrive"),
                                    (dead_letter_queue_services or {}).get(name))
        self.facade.add_large_header("Service quotas")
        self._quotas(quotas, quota_alarm_percent)

    @property
    def alarm_names(self) -> list[str]:
        return self.named_alarm.names

    def _load_balancer(self, watched: LoadBalancerErrors) -> None:
        """The target groups' alarms (per service) count only what targets answer; a target that hangs (504), resets
        (502) or is missing altogether (503) shows here, in AWS/ApplicationELB per load balancer only."""

        def alb(metric_name: str, label: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace="AWS/ApplicationELB", metric_name=metric_name, statistic="Sum", period=MINUTE,
                                     label=label, dimensions_map={"LoadBalancer": watched.load_balancer.load_balancer_full_name})

        # RequestCount leaves out the requests no target was chosen for (the 503s), so they are added back; a 502 or
        # 504 is then counted twice, which can only understate the rate.
        rate = cloudwatch.MathExpression(
            expression=(f"IF(FILL(requests, 0) + FILL(elb, 0) >= {MIN_REQUESTS_PER_MINUTE}, "
                        "100 * FILL(elb, 0) / (FILL(requests, 0) + FILL(elb, 0)), 0)"),
            using_metrics={"requests": alb("RequestCount", "requests"), "elb": alb("HTTPCode_ELB_5XX_Count", "5xx")},
            period=MINUTE, label="answered 5xx by the load balancer, % of requests")
        self.facade.monitor_custom(
            human_readable_name="Load balancer's own 5xx", alarm_friendly_name="load-balancer",
            description="AWS/ApplicationELB HTTPCode_ELB_5XX_Count: 502, 503 and 504 that no target answered",
            metric_groups=[monitoring.CustomMetricGroup(title="Load balancer 5xx, % of requests", metrics=[
                monitoring.CustomMetricWithAlarm(
                    metric=rate, alarm_friendly_name="load-balancer-5xx-rate",
                    add_alarm=self.named_alarm(
                        monitoring.CustomThreshold, alarm_name=f"{self.alarm_name_prefix}-load-balancer-5xx-rate",
                        summary=(f"more than {watched.max_percent:g}% of the load balancer's requests answered 5xx by the load "
                                 "balancer itself (no healthy target, or a target that reset or did not answer in time)"),
                        runbook="elevated-5xx", threshold=watched.max_percent,
                        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                        datapoints_to_alarm=2, evaluation_periods=3,
                        treat_missing_data_override=cloudwatch.TreatMissingData.NOT_BREACHING))])])

    def _endpoints(self, vpc_id: str, endpoints: Mapping[str, str]) -> None:
        """AWS/PrivateLinkEndpoints publishes per endpoint with four dimensions; one search per metric
        plots every endpoint of the VPC."""

        def search(metric_name: str, statistic: str) -> cloudwatch.MathExpression:
            schema = '{AWS/PrivateLinkEndpoints,"Endpoint Type","Service Name","VPC Endpoint Id","VPC Id"}'
            return cloudwatch.MathExpression(
                expression=f"SEARCH('{schema} MetricName=\"{metric_name}\" \"VPC Id\"=\"{vpc_id}\"', '{statistic}', 300)",
                using_metrics={}, period=FIVE_MINUTES, label=" ")

        self.facade.monitor_custom(
            human_readable_name="Interface VPC endpoints", alarm_friendly_name="endpoints",
            description="AWS/PrivateLinkEndpoints, every interface endpoint of the VPC: " + ", ".join(
                f"{name} (`{endpoint_id}`)" for name, endpoint_id in endpoints.items()),
            metric_groups=[
                monitoring.CustomMetricGroup(title="Bytes processed / 5 minutes", metrics=[search("BytesProcessed", "Sum")]),
                monitoring.CustomMetricGroup(title="New connections / 5 minutes", metrics=[search("NewConnections", "Sum")]),
                monitoring.CustomMetricGroup(title="Packets dropped / 5 minutes", metrics=[search("PacketsDropped", "Sum")]),
            ])

    def _nat_gateways(self, nat_gateway_ids: Sequence[str]) -> None:
        def nat(metric_name: str, statistic: str) -> list[cloudwatch.Metric]:
            return [cloudwatch.Metric(namespace="AWS/NATGateway", metric_name=metric_name, statistic=statistic,
                                      dimensions_map={"NatGatewayId": gateway}, period=FIVE_MINUTES, label=f"NAT gateway {i}")
                    for i, gateway in enumerate(nat_gateway_ids)]

        self.facade.monitor_custom(human_readable_name="NAT gateways", alarm_friendly_name="nat", metric_groups=[
            monitoring.CustomMetricGroup(title="Bytes out to destinations / 5 minutes", metrics=nat("BytesOutToDestination", "Sum")),
            monitoring.CustomMetricGroup(title="Active connections", metrics=nat("ActiveConnectionCount", "Maximum")),
            monitoring.CustomMetricGroup(title="Port allocation errors / 5 minutes", metrics=nat("ErrorPortAllocation", "Sum")),
            monitoring.CustomMetricGroup(title="Packets dropped / 5 minutes", metrics=nat("PacketsDropCount", "Sum")),
        ])

    def _mesh(self, cluster_name: str, services: Sequence[MeshedService]) -> None:
        connected = [s for s in services if s.discovery_name]
        if not connected:
            self.facade.add_widget(cloudwatch.TextWidget(width=24, height=3, markdown=(
                "**App Mesh**: Envoy publishes its statistics on its admin port only; nothing sends them to "
                "CloudWatch, so this dashboard has no mesh metrics. Use the Envoy access logs in each service's log "
                "group (stream prefix `envoy/`) and the load balancer sections of the service dashboards.")))
            return

        def inbound(service: MeshedService) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace="AWS/ECS", metric_name="RequestCount", statistic="Sum", period=MINUTE,
                                     label=service.ecs_service_name,
                                     dimensions_map={"ClusterName": cluster_name, "ServiceName": service.ecs_service_name,
                                                     "DiscoveryName": service.discovery_name})

        def seen_by_callers(service: MeshedService, metric_name: str, statistic: str) -> cloudwatch.Metric:
            return service_connect_metric(service.discovery_name, metric_name, statistic, service.ecs_service_name)

        self.facade.monitor_custom(
            human_readable_name="Service Connect (per service)", alarm_friendly_name="mesh",
            description=("AWS/ECS Service Connect metrics: requests as each service's proxy counts them, responses as its "
                         "callers' proxies saw them (`TargetDiscoveryName`); each service's 5xx-rate and p95-latency alarms "
                         "live with the service"),
            metric_groups=[
                monitoring.CustomMetricGroup(title="Requests / minute (inbound)", metrics=[inbound(s) for s in connected]),
                monitoring.CustomMetricGroup(title="5xx / minute (as callers saw them)",
                                             metrics=[seen_by_callers(s, "HTTPCode_Target_5XX_Count", "Sum") for s in connected]),
                monitoring.CustomMetricGroup(title="p95 response time, milliseconds (as callers saw it)",
                                             metrics=[seen_by_callers(s, "TargetResponseTime", "p95") for s in connected]),
                monitoring.CustomMetricGroup(title="TLS negotiation errors / minute (callers to the service)", metrics=[
                    seen_by_callers(s, "TargetTLSNegotiationErrorCount", "Sum") for s in connected]),
            ])

    def _queue(self, monitored: MonitoredQueue, max_age: cdk.Duration) -> None:
        name = f"{self.alarm_name_prefix}-{monitored.service}-events"
        self.facade.monitor_sqs_queue_with_dlq(
            queue=monitored.queue, dead_letter_queue=monitored.dead_letter_queue,
            human_readable_name=f"{monitored.service}: event queue", alarm_friendly_name=name,
            add_dead_letter_queue_max_size_alarm=self.named_alarm(
                monitoring.MaxMessageCountThreshold, alarm_name=f"{name}-dlq-not-empty", max_message_count=0,
                summary=f"{monitored.service}: events in the dead-letter queue {name}-dlq (the worker gave up on them, or EventBridge could not deliver them)",
                runbook="dlq-redrive", datapoints_to_alarm=1, evaluation_periods=1,
                treat_missing_data_override=IDLE_QUEUE_IS_EMPTY),
            add_queue_max_message_age_alarm=self.named_alarm(
                monitoring.MaxMessageAgeThreshold, alarm_name=f"{name}-oldest-message", max_age_in_seconds=max_age.to_seconds(),
                summary=f"{monitored.service}: the oldest message in {name} is older than {max_age.to_minutes()} minutes (the worker is not keeping up or not running)",
                # A message this old is stuck, not being retried (failing ones are dead-lettered after some 4.5
                # minutes): the first period past the age pages, within 5 minutes, not the third.
                runbook="queue-backlog", datapoints_to_alarm=1, evaluation_periods=1),
        )
        self._tag_alarms(monitored.service, f"{name}-dlq-not-empty", f"{name}-oldest-message")

    def _tag_alarms(self, service: str, *alarm_names: str) -> None:
        """Tag the facade's alarms (its construct IDs are the alarms' names) with the service whose queue they watch."""
        for alarm_name in alarm_names:
            cdk.Tags.of(self.facade.node.find_child(alarm_name)).add("service", service)

    def _dead_letter_queue(self, name: str, queue: sqs.IQueue, runbook: str, service: str | None) -> None:
        alarm_name = f"{self.alarm_name_prefix}-{name}-dlq-not-empty"
        self.facade.monitor_sqs_queue(
            queue=queue, human_readable_name=f"{name}: dead-letter queue", alarm_friendly_name=f"{self.alarm_name_prefix}-{name}-dlq",
            add_queue_max_size_alarm=self.named_alarm(
                monitoring.MaxMessageCountThreshold, alarm_name=alarm_name, max_message_count=0,
                summary=f"{name}: events EventBridge could not deliver to their target", runbook=runbook,
                datapoints_to_alarm=1, evaluation_periods=1, treat_missing_data_override=IDLE_QUEUE_IS_EMPTY),
        )
        if service:
            self._tag_alarms(service, alarm_name)

    def _quotas(self, quotas: Sequence[ServiceQuota | CountedQuota], percent: int) -> None:
        self.facade.monitor_custom(
            human_readable_name="Usage against applied quotas (%)", alarm_friendly_name="quotas",
            description=("AWS/Usage over `SERVICE_QUOTA()`; ECR repositories and images and Cloud Map namespaces and "
                         "instances, which AWS/Usage does not count, from the quota counter function every 15 minutes "
                         "(runbooks/quota-exhaustion.md)."),
            metric_groups=[monitoring.CustomMetricGroup(title="Usage, % of quota", metrics=[
                monitoring.CustomMetricWithAlarm(
                    metric=quota.percent_of_quota(), alarm_friendly_name=f"quota-{quota.name}",
                    add_alarm=self.named_alarm(
                        monitoring.CustomThreshold, alarm_name=f"{self.alarm_name_prefix}-quota-{quota.name}", threshold=percent,
                        summary=f"{quota.description} above {percent}% of this region's applied quota",
                        runbook="quota-exhaustion", comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                        datapoints_to_alarm=quota.datapoints_to_alarm, evaluation_periods=quota.evaluation_periods,
                        treat_missing_data_override=cloudwatch.TreatMissingData.NOT_BREACHING))
                for quota in quotas])])
