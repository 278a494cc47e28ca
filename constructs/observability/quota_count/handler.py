"""Counts what AWS/Usage does not (Cloud Map namespaces and instances, ECR repositories and images) and publishes
each count as a percentage of its applied quota, for the quota alarms of constructs/observability.

Runs every 15 minutes from an EventBridge schedule. Environment:
METRIC_NAMESPACE (where PercentOfQuota goes), CLOUD_MAP_NAMESPACES and ECR_REPOSITORIES (comma-separated names:
the platform's Service Connect namespace and the app's repositories, whose per-namespace, per-service and
per-repository quotas are counted).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping

import boto3
from botocore.exceptions import ClientError

METRIC_NAME = "PercentOfQuota"
# quota name (the alarm's <prefix>-quota-<name>) -> (Service Quotas service code, quota code). From the quota
# tables of the Cloud Map and ECR guides (docs.aws.amazon.com/cloud-map/latest/dg/cloud-map-limits.html,
# docs.aws.amazon.com/AmazonECR/latest/userguide/service-quotas.html); Cloud Map's service code is AWSCloudMap.
QUOTAS: Mapping[str, tuple[str, str]] = {
    "cloud-map-namespaces": ("AWSCloudMap", "L-0FE3F50E"),  # Namespaces per Region (50)
    "cloud-map-instances-per-namespace": ("AWSCloudMap", "L-D95E8A57"),  # Instances per namespace (2,000)
    "cloud-map-instances-per-service": ("AWSCloudMap", "L-2DA90E5C"),  # Instances per service (1,000)
    "ecr-repositories": ("ecr", "L-CFEB8E8D"),  # Registered repositories (100,000)
    "ecr-images-per-repository": ("ecr", "L-03A36CE1"),  # Images per repository (100,000)
}


def _names(variable: str) -> list[str]:
    return [name for name in os.environ.get(variable, "").split(",") if name]


def _paginate(client, operation: str, key: str, **kwargs) -> list[dict]:
    return [item for page in client.get_paginator(operation).paginate(**kwargs) for item in page[key]]


def applied_quota(quotas, service_code: str, quota_code: str) -> float:
    """The account's applied value; Service Quotas has none for a quota never changed in some accounts: the default."""
    try:
        return quotas.get_service_quota(ServiceCode=service_code, QuotaCode=quota_code)["Quota"]["Value"]
    except ClientError as error:
        if error.response["Error"]["Code"] != "NoSuchResourceException":
            raise
    return quotas.get_aws_default_service_quota(ServiceCode=service_code, QuotaCode=quota_code)["Quota"]["Value"]


def cloud_map_counts(servicediscovery, namespace_names: Iterable[str]) -> dict[str, dict[str, int]]:
    """Namespaces in the region; instances per namespace and per service of the named namespaces."""
    namespaces = _paginate(servicediscovery, "list_namespaces", "Namespaces")
    watched = {namespace["Id"]: namespace["Name"] for namespace in namespaces if namespace["Name"] in set(namespace_names)}
    per_namespace = dict.fromkeys(watched.values(), 0)
    per_service: dict[str, int] = {}
    # Every service of the region, then its namespace from GetService: ListServices' summaries do not carry it.
    for service in _paginate(servicediscovery, "list_services", "Services"):
        namespace_id = servicediscovery.get_service(Id=service["Id"])["Service"]["NamespaceId"]
        if namespace_id not in watched:
            continue
        instances = len(_paginate(servicediscovery, "list_instances", "Instances", ServiceId=service["Id"]))
        per_namespace[watched[namespace_id]] += instances
        per_service[f"{watched[namespace_id]}/{service['Name']}"] = instances
    return {"cloud-map-namespaces": {"region": len(namespaces)},
            "cloud-map-instances-per-namespace": per_namespace, "cloud-map-instances-per-service": per_service}


def ecr_counts(ecr, repository_names: Iterable[str]) -> dict[str, dict[str, int]]:
    """Repositories in the region; images in each of the named repositories."""
    repositories = _paginate(ecr, "describe_repositories", "repositories")
    existing = {repository["repositoryName"] for repository in repositories}
    # DescribeImages: one entry per image (ListImages lists each tag of an image apart).
    images = {name: len(_paginate(ecr, "describe_images", "imageDetails", repositoryName=name))
              for name in repository_names if name in existing}
    return {"ecr-repositories": {"region": len(repositories)}, "ecr-images-per-repository": images}


def percentages(counts: Mapping[str, Mapping[str, int]], quota_values: Mapping[str, float]) -> dict[str, float]:
    """Per quota, the fullest resource's share of the quota in percent (0 when nothing is counted)."""
    return {name: 100.0 * max(per_resource.values(), default=0) / quota_values[name] for name, per_resource in counts.items()}


def handler(event, context):
    quotas, cloudwatch = boto3.client("service-quotas"), boto3.client("cloudwatch")
    counts = {**cloud_map_counts(boto3.client("servicediscovery"), _names("CLOUD_MAP_NAMESPACES")),
              **ecr_counts(boto3.client("ecr"), _names("ECR_REPOSITORIES"))}
    quota_values = {name: applied_quota(quotas, *QUOTAS[name]) for name in counts}
    published = percentages(counts, quota_values)
    cloudwatch.put_metric_data(Namespace=os.environ["METRIC_NAMESPACE"], MetricData=[
        {"MetricName": METRIC_NAME, "Dimensions": [{"Name": "Quota", "Value": name}], "Value": value, "Unit": "Percent"}
        for name, value in published.items()])
    # One JSON line per run: which namespace, service or repository is the fullest (Logs Insights, see the runbook).
    print(json.dumps({"counts": counts, "quotas": quota_values, "percent_of_quota": published}))
    return published
