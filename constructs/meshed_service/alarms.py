"""The alarms a deployment rolls back on: an error rate and a p95 latency, with the same shape everywhere."""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from .adot import GRPC_DURATION

# Below this many requests a minute a rate means little (one error in three requests is 33 %), and a p95 is
# the slowest request or two.
MIN_REQUESTS_PER_MINUTE = 20
# The gRPC codes that are the server's fault (the ones that map to 5xx): UNKNOWN, DEADLINE_EXCEEDED,
# UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS. A client's mistakes (NOT_FOUND, INVALID_ARGUMENT...) are not.
GRPC_SERVER_ERROR_CODES = (2, 4, 12, 13, 14, 15)


def floor_note(counted: str = "requests", *, rate: bool) -> str:
    """How an alarm's summary says what ``error_rate`` (``rate``) or ``latency_p95`` make of a quiet minute."""
    return f"minutes with fewer than {MIN_REQUESTS_PER_MINUTE} {counted} count as 0{' %' if rate else ''}"


def error_rate(errors: cloudwatch.IMetric, requests: cloudwatch.IMetric,
               label: str = "5xx responses, % of requests") -> cloudwatch.MathExpression:
    """5xx answers as a percentage of requests, per minute; 0 below MIN_REQUESTS_PER_MINUTE."""
    return cloudwatch.MathExpression(
        expression=f"IF(requests >= {MIN_REQUESTS_PER_MINUTE}, 100 * FILL(errors, 0) / requests, 0)",
        using_metrics={"errors": errors, "requests": requests},
        period=cdk.Duration.minutes(1),
        label=label,
    )


def summed(metrics: dict[str, cloudwatch.IMetric], label: str) -> cloudwatch.MathExpression:
    """The per-minute sum of ``metrics`` (id -> metric), a minute without data counting 0."""
    return cloudwatch.MathExpression(expression=" + ".join(f"FILL({i}, 0)" for i in metrics), using_metrics=metrics,
                                     period=cdk.Duration.minutes(1), label=label)


def latency_p95(p95: cloudwatch.IMetric, requests: cloudwatch.IMetric, label: str = "p95", *,
                id_suffix: str = "") -> cloudwatch.MathExpression:
    """``p95`` per minute; 0 below MIN_REQUESTS_PER_MINUTE ``requests`` (the requests the p95 is of), as ``error_rate``.

    An alarm on the plain percentile would need CloudWatch's low-sample rule to skip quiet minutes, and that rule
    skips every minute with fewer than 10 / (1 - 0.95) = 200 samples: a canary's whole first step at most traffic.
    The rule applies to an alarm's own percentile statistic (ExtendedStatistic), which a metric-math alarm has none
    of. ``id_suffix`` keeps the ids apart where several of these share one graph."""
    p95_id, requests_id = f"p95{id_suffix}", f"requests{id_suffix}"
    return cloudwatch.MathExpression(
        expression=f"IF({requests_id} >= {MIN_REQUESTS_PER_MINUTE}, {p95_id}, 0)",
        using_metrics={p95_id: p95, requests_id: requests},
        period=cdk.Duration.minutes(1),
        label=label,
    )


def own_metric(namespace: str, metric_name: str, statistic: str, dimensions: dict[str, str],
               label: str | None = None) -> cloudwatch.Metric:
    """One of the services' own metrics (OpenTelemetry, written as EMF by the ADOT collector: adot.py), per minute."""
    return cloudwatch.Metric(namespace=namespace, metric_name=metric_name, dimensions_map=dimensions, statistic=statistic,
                             period=cdk.Duration.minutes(1), label=label)


def grpc_error_rate(namespace: str, dimensions: dict[str, str], label: str = "failed with a server error, % of calls") -> cloudwatch.MathExpression:
    """The service's gRPC calls that ended in a server error (GRPC_SERVER_ERROR_CODES), as a percentage of its calls,
    from its own ``rpc.server.duration`` (``dimensions``: ``service.name``, and with App Mesh ``deployment.variant``).
    No load balancer or Service Connect metric reads gRPC status codes: they travel in trailers."""
    failed = summed({f"c{code}": own_metric(namespace, GRPC_DURATION, "SampleCount", {**dimensions, "rpc.grpc.status_code": str(code)},
                                            str(code)) for code in GRPC_SERVER_ERROR_CODES}, "failed")
    return error_rate(failed, own_metric(namespace, GRPC_DURATION, "SampleCount", dimensions, "calls"), label=label)


def grpc_latency_p95(namespace: str, dimensions: dict[str, str], label: str = "p95") -> cloudwatch.MathExpression:
    """p95 of the service's own gRPC calls in milliseconds (``rpc.server.duration``), with ``latency_p95``'s floor."""
    return latency_p95(own_metric(namespace, GRPC_DURATION, "p95", dimensions, label),
                       own_metric(namespace, GRPC_DURATION, "SampleCount", dimensions, "calls"), label)


@dataclass(frozen=True)
class AlarmSpec:
    """One alarm, whichever construct makes it: ``<prefix>-<service>-<what>``, ``metric`` above ``threshold``."""

    what: str
    metric: cloudwatch.IMetric
    threshold: float
    summary: str
    runbook: str


def grpc_alarm_specs(name: str, namespace: str, *, max_error_percent: float,
                     max_p95_latency_ms: float) -> tuple[AlarmSpec, AlarmSpec]:
    """The service's gRPC pair on its own metrics, ``grpc-server-error-rate`` and ``grpc-server-p95-latency``: Service
    Connect makes them deployment alarms (service_connect.py), App Mesh notify-only ones in the observability stack
    (constructs/observability/service_monitoring.py). One name, one alarm, whichever backend makes it."""
    calls = {"service.name": name}
    codes = ", ".join(map(str, GRPC_SERVER_ERROR_CODES))
    return (
        AlarmSpec("grpc-server-error-rate", grpc_error_rate(namespace, calls), max_error_percent,
                  (f"{name}: more than {max_error_percent:g}% of its gRPC calls failed with a server error ({codes}); "
                   + floor_note("calls", rate=True)), "elevated-5xx"),
        AlarmSpec("grpc-server-p95-latency", grpc_latency_p95(namespace, calls), max_p95_latency_ms,
                  f"{name}: p95 duration of its gRPC calls above {max_p95_latency_ms} ms; " + floor_note("calls", rate=False),
                  "latency-slo-breach"),
    )


# Service Connect counts a service's responses, and times them, in its callers' proxies: on the dimension
# TargetDiscoveryName (alone, or with the calling service's ServiceName and ClusterName). The service's own
# DiscoveryName set holds what its proxy sees inbound (RequestCount, connections), not the response codes or
# TargetResponseTime (the four sets: ECS developer guide, Service Connect tutorial, "see the additional metric
# dimensions ... under the ECS namespace"). Calls that do not pass a Service Connect client proxy, such as the
# load balancer's, are not in these metrics.
HTTP_RESPONSE_CLASSES = ("2XX", "3XX", "4XX", "5XX")


def service_connect_metric(discovery_name: str, metric_name: str, statistic: str, label: str | None = None) -> cloudwatch.Metric:
    """A Service Connect metric of the responses of the endpoint ``discovery_name``, as all its callers saw them."""
    return cloudwatch.Metric(namespace="AWS/ECS", metric_name=metric_name, dimensions_map={"TargetDiscoveryName": discovery_name},
                             statistic=statistic, period=cdk.Duration.minutes(1), label=label)


def service_connect_responses(discovery_name: str) -> cloudwatch.MathExpression:
    """The responses the endpoint's callers received per minute: the four HTTP response classes, from their proxies."""
    return summed({f"r{status.lower()}": service_connect_metric(discovery_name, f"HTTPCode_Target_{status}_Count", "Sum")
                   for status in HTTP_RESPONSE_CLASSES}, "responses")


def service_connect_error_rate(discovery_name: str) -> cloudwatch.MathExpression:
    """5xx as a percentage of the responses the endpoint's callers received (both sides of the division from the
    same callers' proxies, so that they count the same requests)."""
    return error_rate(service_connect_metric(discovery_name, "HTTPCode_Target_5XX_Count", "Sum"),
                      service_connect_responses(discovery_name))


def service_connect_latency_p95(discovery_name: str) -> cloudwatch.MathExpression:
    """p95 of the endpoint's response time as its callers saw it (milliseconds), floored on the responses the
    error rate divides by."""
    return latency_p95(service_connect_metric(discovery_name, "TargetResponseTime", "p95"),
                       service_connect_responses(discovery_name))


def deployment_alarm(scope: Construct, construct_id: str, metric: cloudwatch.IMetric, *, alarm_name: str,
                     threshold: float, summary: str, runbook: str, action: cloudwatch.IAlarmAction) -> cloudwatch.Alarm:
    """Over ``threshold`` in 2 of 3 minutes: notify through ``action``, and (once the service lists
    the alarm) roll back a deployment in progress. Give rates and percentiles with their request floor
    (``error_rate``, ``latency_p95``): a canary's first few requests must not decide."""
    alarm = metric.create_alarm(
        scope, construct_id,
        alarm_name=alarm_name,
        alarm_description=f"{summary}; a deployment in progress rolls back. Runbook: runbooks/{runbook}.md",
        threshold=threshold, evaluation_periods=3, datapoints_to_alarm=2,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )
    alarm.add_alarm_action(action)
    alarm.add_ok_action(action)
    return alarm
