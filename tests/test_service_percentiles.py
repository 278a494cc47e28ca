"""Percentiles from the services' own metrics, and the App Mesh canary judged on its own traffic.

The tasks export exponential histograms with delta temporality (the SDKs' standard variables on every container
that exports to the ADOT collector); awsemf writes them as EMF Values/Counts, so CloudWatch has p50/p95/p99 of
``http.server.request.duration`` and ``rpc.server.duration``. With App Mesh each task's collector tags its
telemetry with ``deployment.variant``, and the canary's own 5xx rate and p95 get alarms the traffic shift reads.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from constructs.meshed_service.adot import CONFIG_FILE
from tests.assembly import Assembly, cdk_json_context, template_text

REGIONS = ("eu-central-1", "eu-west-1")
SERVICES = ("auth", "persona", "vc-start")
GRPC_SERVICES = ("persona",)
NAMESPACE = "mf/services"
HTTP_DURATION, GRPC_DURATION = "http.server.request.duration", "rpc.server.duration"
EXPORTER_ENVIRONMENT = {
    "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION": "base2_exponential_bucket_histogram",
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "DELTA",
}


def _task_definitions(assembly: Assembly, region: str) -> dict[str, dict[str, Any]]:
    return assembly.resources(f"mf-{region}/services", "AWS::ECS::TaskDefinition")


def _environment(container: dict[str, Any]) -> dict[str, Any]:
    return {variable["Name"]: variable["Value"] for variable in container.get("Environment", [])}




def _alarms(assembly: Assembly, region: str = "eu-central-1") -> dict[str, dict[str, Any]]:
    return {a["Properties"]["AlarmName"]: a["Properties"]
            for a in assembly.resources(f"mf-{region}/observability", "AWS::CloudWatch::Alarm").values()}


def _stats(metric: dict[str, Any]) -> tuple[str, str, dict[str, str], str]:
    """(namespace, metric name, dimensions, statistic) of an alarm's MetricStat query."""
    stat = metric["MetricStat"]
    return (stat["Metric"]["Namespace"], stat["Metric"]["MetricName"],
            {d["Name"]: d["Value"] for d in stat["Metric"]["Dimensions"]}, stat["Stat"])


def _floored_p95(alarm: dict[str, Any]) -> tuple[tuple, tuple | dict[str, Any]]:
    """(p95, requests) of a p95 alarm with the rate alarms' floor: ``IF(requests >= 20, p95, 0)``, ids maybe suffixed.
    ``requests`` is a MetricStat's ``_stats``, or the expression that counts them (Service Connect's responses)."""
    (expression,) = [m for m in alarm["Metrics"] if m.get("ReturnData", True) and "Expression" in m]
    match = re.fullmatch(r"IF\((requests\w*) >= 20, (p95\w*), 0\)", expression["Expression"])
    assert match, (alarm["AlarmName"], expression["Expression"])
    by_id = {m["Id"]: m for m in alarm["Metrics"]}
    requests = by_id[match[1]]
    return _stats(by_id[match[2]]), _stats(requests) if "MetricStat" in requests else requests


@pytest.fixture(params=["dev", "appmesh"])
def backend(request) -> Assembly:
    return request.getfixturevalue(request.param)


def test_every_container_that_exports_to_the_collector_sends_delta_exponential_histograms(backend):
    for region in REGIONS:
        for task in _task_definitions(backend, region).values():
            containers = {c["Name"]: c for c in task["Properties"]["ContainerDefinitions"]}
            exporting = [containers[name] for name in ("app", "worker") if name in containers]
            assert "app" in containers
            for container in exporting:
                environment = _environment(container)
                assert {k: environment.get(k) for k in EXPORTER_ENVIRONMENT} == EXPORTER_ENVIRONMENT, container["Name"]


def test_app_mesh_tasks_tag_their_telemetry_with_the_variant_of_their_virtual_node(appmesh, dev):
    for region in REGIONS:
        template = appmesh.template(f"mf-{region}/services")
        seen = set()
        for task in _task_definitions(appmesh, region).values():
            containers = {c["Name"]: c for c in task["Properties"]["ContainerDefinitions"]}
            node_id = _environment(containers["envoy"])["APPMESH_RESOURCE_ARN"]["Ref"]
            node_name = template["Resources"][node_id]["Properties"]["VirtualNodeName"]  # <service>-<variant>
            service, variant = node_name.rsplit("-", 1)
            attributes = _environment(containers["adot-collector"])["OTEL_RESOURCE_ATTRIBUTES"]
            assert attributes == f"service.name={service},deployment.variant={variant}"
            seen.add((service, variant))
        assert seen == {(service, variant) for service in SERVICES for variant in ("primary", "canary")}
        # Service Connect has one ECS service per service: no variant, no variant metrics.
        for task in _task_definitions(dev, region).values():
            collector = next(c for c in task["Properties"]["ContainerDefinitions"] if c["Name"] == "adot-collector")
            assert "deployment.variant" not in _environment(collector)["OTEL_RESOURCE_ATTRIBUTES"]


def test_the_collector_declares_the_variant_dimension_sets_the_canary_alarms_read():
    declared = {(tuple(dims), selector) for d in yaml.safe_load(CONFIG_FILE.read_text())["exporters"]["awsemf"]["metric_declarations"]
                for dims in d["dimensions"] for selector in d["metric_name_selectors"]}
    http, grpc = r"^http\.server\.request\.duration$", r"^rpc\.server\.duration$"
    assert {(("service.name", "deployment.variant"), http), (("service.name", "deployment.variant", "http.response.status_code"), http),
            (("service.name", "deployment.variant"), grpc), (("service.name", "deployment.variant", "rpc.grpc.status_code"), grpc)} <= declared


@pytest.mark.parametrize("variant", ["dev", "appmesh"])
def test_each_service_dashboard_plots_p50_p95_and_p99_of_the_services_own_durations(request, variant):
    assembly: Assembly = request.getfixturevalue(variant)
    dashboards = {template_text(d["Properties"]["DashboardName"]): json.loads(template_text(d["Properties"]["DashboardBody"]))
                  for d in assembly.resources("mf-eu-central-1/observability", "AWS::CloudWatch::Dashboard").values()}
    for name in SERVICES:
        plotted = {(metric[1], tuple(metric[2:-1]), metric[-1]["stat"])
                   for widget in dashboards[f"mf-eu-central-1-{name}"]["widgets"]
                   for metric in widget.get("properties", {}).get("metrics", []) if metric[0] == NAMESPACE}
        instruments = [HTTP_DURATION, *([GRPC_DURATION] if name in GRPC_SERVICES else [])]
        for instrument in instruments:
            assert {(instrument, ("service.name", name), p) for p in ("p50", "p95", "p99")} <= plotted, (name, instrument)
        assert not any(metric == GRPC_DURATION for metric, _, _ in plotted) or name in GRPC_SERVICES


def test_app_mesh_canaries_have_5xx_rate_and_p95_alarms_on_their_own_traffic_that_notify_and_name_the_runbook(appmesh, dev):
    deployment = cdk_json_context()["deployment"]
    for region in REGIONS:
        alarms = _alarms(appmesh, region)
        for name in SERVICES:
            canary = {"service.name": name, "deployment.variant": "canary"}
            kinds = [("5xx-rate", HTTP_DURATION, "http.response.status_code", {"500", "502", "503", "504"}, "p95-latency",
                      deployment["alarm_p95_latency_ms"] / 1000)]
            if name in GRPC_SERVICES:
                kinds.append(("grpc-error-rate", GRPC_DURATION, "rpc.grpc.status_code", {"2", "4", "12", "13", "14", "15"},
                              "grpc-p95-latency", deployment["alarm_p95_latency_ms"]))
            for rate_name, instrument, status_dimension, failures, p95_name, p95_threshold in kinds:
                rate = alarms[f"mf-{name}-canary-{rate_name}"]
                queried = [_stats(m) for m in rate["Metrics"] if "MetricStat" in m]
                assert {(NAMESPACE, instrument, json.dumps(canary, sort_keys=True), "SampleCount")} == {
                    (ns, metric, json.dumps(dims, sort_keys=True), stat) for ns, metric, dims, stat in queried if status_dimension not in dims}
                assert {dims[status_dimension] for ns, metric, dims, stat in queried if status_dimension in dims
                        and (ns, metric, stat) == (NAMESPACE, instrument, "SampleCount")
                        and {k: v for k, v in dims.items() if k != status_dimension} == canary} == failures
                assert rate["Threshold"] == deployment["alarm_5xx_percent"]

                p95 = alarms[f"mf-{name}-canary-{p95_name}"]
                assert _floored_p95(p95) == ((NAMESPACE, instrument, canary, "p95"), (NAMESPACE, instrument, canary, "SampleCount"))
                assert p95["Threshold"] == p95_threshold
                for alarm in (rate, p95):
                    assert alarm["AlarmActions"] == alarm["OKActions"] and alarm["AlarmActions"]
                    assert alarm["AlarmDescription"].endswith("Runbook: runbooks/canary-rollback.md")
                    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"], alarm["TreatMissingData"]) == (3, 2, "notBreaching")
            if name not in GRPC_SERVICES:
                assert f"mf-{name}-canary-grpc-error-rate" not in alarms
        assert not any("-canary-" in alarm and "tasks-below-desired" not in alarm for alarm in _alarms(dev, region))


@pytest.mark.parametrize("variant", ["dev", "prod", "appmesh"])
def test_every_p95_alarm_judges_each_minute_with_20_requests_not_only_those_with_200(request, variant):
    """CloudWatch's low-sample rule for an alarm's own p95 skips minutes with fewer than 10 / (1 - 0.95) = 200 samples:
    at a canary's 5 % that is 4,000 requests a minute. Every p95 alarm is metric math instead, 0 below the 20 requests
    a minute the rate alarms need, counting the requests the p95 is of."""
    assembly: Assembly = request.getfixturevalue(variant)
    p95_alarms = 0
    for stack, _, resource in assembly.all_resources():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        alarm = resource["Properties"]
        name = template_text(alarm.get("AlarmName", ""))
        assert not {"EvaluateLowSampleCountPercentile", "ExtendedStatistic"} & set(alarm), (stack, name)
        if not any(m.get("MetricStat", {}).get("Stat", "").startswith("p") for m in alarm.get("Metrics", [])):
            continue
        p95_alarms += 1
        (namespace, metric, dimensions, stat), requests = _floored_p95(alarm)
        assert stat == "p95" and name.endswith("p95-latency"), (stack, name)
        if namespace == "AWS/ApplicationELB":  # TargetResponseTime: the target group's requests
            assert requests == (namespace, "RequestCount", dimensions, "Sum"), name
        elif namespace == "AWS/ECS":  # Service Connect: the responses its error rate divides by, from the same proxies
            assert requests["Expression"] == "FILL(r2xx, 0) + FILL(r3xx, 0) + FILL(r4xx, 0) + FILL(r5xx, 0)", name
        else:  # the services' own histograms: their sample count is the request count
            assert requests == (namespace, metric, dimensions, "SampleCount"), name
    # Per region, dev and prod: auth's and persona's mesh p95, persona's gRPC p95, two target groups each of three
    # services; App Mesh: one target group each, the canaries' HTTP p95, persona's canary and own gRPC p95.
    assert p95_alarms == {"dev": 18, "prod": 18, "appmesh": 16}[variant]
