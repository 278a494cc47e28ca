"""The quota-usage function (constructs/observability/quota_count/handler.py) against moto: for known counts of
Cloud Map namespaces, services and instances and of ECR repositories and images, and known quotas, the
percentages it publishes to CloudWatch are the right ones.

moto's Service Quotas knows only VPC quotas and has no GetAWSDefaultServiceQuota: the fixture gives its backend
the applied values of the quotas under test, and the default-value call, so that both paths of the handler
(applied value; no applied value, default) run through boto3 and moto like the real thing.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest
from harness import load_module
from moto import mock_aws
from moto.servicequotas.exceptions import NoSuchResource
from moto.servicequotas.models import ServiceQuotasBackend
from moto.servicequotas.responses import ServiceQuotasResponse

HANDLER = Path(__file__).resolve().parents[2] / "constructs" / "observability" / "quota_count" / "handler.py"
NAMESPACE = "mf/quotas"
REGION = "eu-central-1"


quota_usage = load_module("quota_usage_handler", HANDLER)

# Applied values (what an increase would have changed) and defaults; one quota has no applied value.
APPLIED = {("AWSCloudMap", "L-0FE3F50E"): 40.0, ("AWSCloudMap", "L-D95E8A57"): 20.0,
           ("AWSCloudMap", "L-2DA90E5C"): 8.0, ("ecr", "L-CFEB8E8D"): 10.0}
DEFAULTS = {("ecr", "L-03A36CE1"): 5.0, ("ecr", "L-CFEB8E8D"): 100_000.0}


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("METRIC_NAMESPACE", NAMESPACE)
    monkeypatch.setenv("CLOUD_MAP_NAMESPACES", "svc.local")
    monkeypatch.setenv("ECR_REPOSITORIES", "mf/auth,mf/persona,mf/vc-start")

    def quota(values):
        def find(backend, service_code, quota_code):
            if (service_code, quota_code) not in values:
                raise NoSuchResource
            return {"ServiceCode": service_code, "QuotaCode": quota_code, "Value": values[service_code, quota_code]}
        return find

    def default_response(response):
        params = json.loads(response.body)
        found = quota(DEFAULTS)(None, params["ServiceCode"], params["QuotaCode"])
        return json.dumps({"Quota": found})

    monkeypatch.setattr(ServiceQuotasBackend, "get_service_quota", quota(APPLIED))
    monkeypatch.setattr(ServiceQuotasResponse, "get_aws_default_service_quota", default_response, raising=False)
    with mock_aws():
        yield


def _namespace(servicediscovery, name):
    servicediscovery.create_http_namespace(Name=name)
    return next(n["Id"] for n in servicediscovery.list_namespaces()["Namespaces"] if n["Name"] == name)


def _service(servicediscovery, namespace_id, name, instances):
    service_id = servicediscovery.create_service(Name=name, NamespaceId=namespace_id)["Service"]["Id"]
    for i in range(instances):
        servicediscovery.register_instance(ServiceId=service_id, InstanceId=f"{name}-{i}", Attributes={"AWS_INSTANCE_IPV4": f"10.0.0.{i + 1}"})


def _images(ecr, repository, count):
    """``count`` images, the first with two tags (the quota counts images, not tags)."""
    for i in range(count):
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                               "config": {"digest": f"sha256:{i:064x}"}, "layers": []})
        for tag in (f"v{i}", "latest")[:2 if i == 0 else 1]:
            ecr.put_image(repositoryName=repository, imageManifest=manifest, imageTag=tag)


def _published(cloudwatch):
    """Quota name -> the value the function put, read back through GetMetricStatistics."""
    now = datetime.now(timezone.utc)
    values = {}
    for metric in cloudwatch.list_metrics(Namespace=NAMESPACE, MetricName="PercentOfQuota")["Metrics"]:
        (dimension,) = metric["Dimensions"]
        datapoints = cloudwatch.get_metric_statistics(
            Namespace=NAMESPACE, MetricName="PercentOfQuota", Dimensions=metric["Dimensions"], Statistics=["Maximum"],
            StartTime=now - timedelta(minutes=5), EndTime=now + timedelta(minutes=5), Period=300)["Datapoints"]
        values[dimension["Value"]] = datapoints[0]["Maximum"]
    return values


def test_publishes_each_count_as_a_percentage_of_its_applied_or_default_quota(aws):
    servicediscovery, ecr = boto3.client("servicediscovery"), boto3.client("ecr")
    svc = _namespace(servicediscovery, "svc.local")
    other = _namespace(servicediscovery, "other.local")
    _service(servicediscovery, svc, "auth", 2)
    _service(servicediscovery, svc, "persona", 4)
    _service(servicediscovery, other, "elsewhere", 7)  # another app's: counts for namespaces per region only
    for name in ("mf/auth", "mf/persona", "mf/vc-start", "someone/else"):
        ecr.create_repository(repositoryName=name)
    _images(ecr, "mf/auth", 3)
    _images(ecr, "mf/persona", 1)
    _images(ecr, "someone/else", 5)

    returned = quota_usage.handler({}, None)

    expected = {
        "cloud-map-namespaces": 100 * 2 / 40,  # both namespaces of the region, applied quota 40
        "cloud-map-instances-per-namespace": 100 * (2 + 4) / 20,  # svc.local only
        "cloud-map-instances-per-service": 100 * 4 / 8,  # persona, the fullest service of svc.local
        "ecr-repositories": 100 * 4 / 10,  # every repository of the region, applied quota 10
        "ecr-images-per-repository": 100 * 3 / 5,  # mf/auth, against the default (no applied value)
    }
    assert returned == pytest.approx(expected)
    assert _published(boto3.client("cloudwatch")) == pytest.approx(expected)


def test_publishes_zero_when_the_platform_has_nothing_registered_yet(aws):
    boto3.client("servicediscovery").create_http_namespace(Name="svc.local")

    published = quota_usage.handler({}, None)

    assert published["cloud-map-instances-per-namespace"] == 0
    assert published["cloud-map-instances-per-service"] == 0
    assert published["ecr-images-per-repository"] == 0
    assert published["cloud-map-namespaces"] == pytest.approx(100 * 1 / 40)
