"""The alarms a deployment rolls back on: a 5xx rate and a p95 latency, with the same shape everywhere."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

# Below this many requests a minute a rate means little (one error in three requests is 33 %).
MIN_REQUESTS_PER_MINUTE = 20


def error_rate(errors: cloudwatch.IMetric, requests: cloudwatch.IMetric,
               label: str = "5xx responses, % of requests") -> cloudwatch.MathExpression:
    """5xx answers as a percentage of requests, per minute; 0 below MIN_REQUESTS_PER_MINUTE."""
    return cloudwatch.MathExpression(
        expression=f"IF(requests >= {MIN_REQUESTS_PER_MINUTE}, 100 * FILL(errors, 0) / requests, 0)",
        using_metrics={"errors": errors, "requests": requests},
        period=cdk.Duration.minutes(1),
        label=label,
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


def service_connect_error_rate(discovery_name: str) -> cloudwatch.MathExpression:
    """5xx as a percentage of the responses the endpoint's callers received (the four HTTP response classes,
    from the same callers' proxies, so that both sides of the division count the same requests)."""
    responses = cloudwatch.MathExpression(
        expression=" + ".join(f"FILL(r{status.lower()}, 0)" for status in HTTP_RESPONSE_CLASSES),
        using_metrics={f"r{status.lower()}": service_connect_metric(discovery_name, f"HTTPCode_Target_{status}_Count", "Sum")
                       for status in HTTP_RESPONSE_CLASSES},
        period=cdk.Duration.minutes(1), label="responses")
    return error_rate(service_connect_metric(discovery_name, "HTTPCode_Target_5XX_Count", "Sum"), responses)


def deployment_alarm(scope: Construct, construct_id: str, metric: cloudwatch.IMetric, *, alarm_name: str,
                     threshold: float, summary: str, runbook: str, action: cloudwatch.IAlarmAction,
                     percentile: bool = False) -> cloudwatch.Alarm:
    """Over ``threshold`` in 2 of 3 minutes: notify through ``action``, and (once the service lists
    the alarm) roll back a deployment in progress. For a ``percentile`` metric, minutes with too few
    requests to mean much (CloudWatch's low sample count) are not evaluated: a canary's first few
    slow requests must not decide."""
    alarm = metric.create_alarm(
        scope, construct_id,
        alarm_name=alarm_name,
        alarm_description=f"{summary}; a deployment in progress rolls back. Runbook: runbooks/{runbook}.md",
        threshold=threshold, evaluation_periods=3, datapoints_to_alarm=2,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        evaluate_low_sample_count_percentile="ignore" if percentile else None,
    )
    alarm.add_alarm_action(action)
    alarm.add_ok_action(action)
    return alarm
