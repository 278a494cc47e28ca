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
