"""The service quotas this platform can exhaust: those AWS/Usage publishes a metric for (``ServiceQuota``) and those
the QuotaCounter function counts itself (``CountedQuota``)."""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch

FIVE_MINUTES = cdk.Duration.minutes(5)
ONE_MINUTE = cdk.Duration.minutes(1)


@dataclass(frozen=True)
class ServiceQuota:
    """An AWS/Usage metric that Service Quotas knows a quota for (so ``SERVICE_QUOTA()`` resolves it)."""

    name: str  # in the alarm name: <prefix>-quota-<name>
    description: str
    metric_name: str  # ResourceCount (a count now) or CallCount (API calls per period)
    dimensions: tuple[tuple[str, str], ...]
    per_second: bool = False  # a rate quota (requests per second) against CallCount per period

    # A count (vCPUs in use) changes slowly: 2 of 2 five-minute periods. A rate quota is spent in bursts of about a
    # minute (a scale-out pulling images), which a longer period would average away; AWS/Usage publishes per minute:
    # 2 of 3 one-minute periods.
    @property
    def period(self) -> cdk.Duration:
        return ONE_MINUTE if self.per_second else FIVE_MINUTES

    @property
    def evaluation_periods(self) -> int:
        return 3 if self.per_second else 2

    @property
    def datapoints_to_alarm(self) -> int:
        return 2

    def usage(self) -> cloudwatch.Metric:
        return cloudwatch.Metric(namespace="AWS/Usage", metric_name=self.metric_name, dimensions_map=dict(self.dimensions),
                                 statistic="Maximum" if self.metric_name == "ResourceCount" else "Sum",
                                 period=self.period, label=self.description)

    def percent_of_quota(self) -> cloudwatch.MathExpression:
        # Metric ids are per graph, and every quota shares one.
        usage = "usage_" + self.name.replace("-", "_")
        # CallCount sums the period; a rate quota is per second: usage / PERIOD() first.
        rate = f"{usage} / PERIOD({usage})" if self.per_second else usage
        return cloudwatch.MathExpression(expression=f"100 * ({rate}) / SERVICE_QUOTA({usage})", using_metrics={usage: self.usage()},
                                         period=self.period, label=f"{self.description}, % of quota")


@dataclass(frozen=True)
class CountedQuota:
    """A quota's usage in percent that QuotaCounter publishes (it reads the quota from Service Quotas itself)."""

    name: str  # in the alarm name: <prefix>-quota-<name>, and the metric's Quota dimension
    description: str
    metric_namespace: str
    metric_name: str
    period: cdk.Duration  # how often the function publishes
    # Counts change slowly and arrive once per period; one of two periods, so that a late or failed run (an
    # empty period, not breaching) does not turn an alarm OK and back again.
    datapoints_to_alarm = 1
    evaluation_periods = 2

    def percent_of_quota(self) -> cloudwatch.Metric:
        return cloudwatch.Metric(namespace=self.metric_namespace, metric_name=self.metric_name,
                                 dimensions_map={"Quota": self.name}, statistic="Maximum", period=self.period,
                                 label=f"{self.description}, % of quota")


def _fargate(kind: str, label: str, usage_class: str) -> ServiceQuota:
    return ServiceQuota(
        name=f"fargate-{kind}-vcpu", description=f"Fargate {label} vCPUs in use",
        metric_name="ResourceCount",
        dimensions=(("Service", "Fargate"), ("Type", "Resource"), ("Resource", "vCPU"), ("Class", usage_class)))


def _ecr_api(name: str, operation: str) -> ServiceQuota:
    # ECR's API usage metrics carry Service=ECR, Type=API, Resource=<operation> and no Class dimension: ECR's usage
    # metrics page says ECR does not use it (docs.aws.amazon.com/AmazonECR/latest/userguide/monitoring-usage.html).
    return ServiceQuota(name=f"ecr-{name}", description=f"ECR {operation} requests per second",
                        metric_name="CallCount", dimensions=(("Service", "ECR"), ("Type", "API"), ("Resource", operation)),
                        per_second=True)


# Fargate's vCPU quotas cap every task the cluster runs, On-Demand and Spot apart; ECR's pull rate
# quotas are what a scale-out (or a wave of Spot replacements) of many tasks at once spends.
QUOTAS = (
    _fargate("on-demand", "On-Demand", "Standard/OnDemand"),
    _fargate("spot", "Spot", "Standard/Spot"),
    _ecr_api("batch-get-image", "BatchGetImage"),
    _ecr_api("get-download-url-for-layer", "GetDownloadUrlForLayer"),
    _ecr_api("get-authorization-token", "GetAuthorizationToken"),
)
