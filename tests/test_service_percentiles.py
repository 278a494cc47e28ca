"""Percentiles from the services' own metrics, and the App Mesh canary judged on its own traffic.

The tasks export exponential histograms with delta temporality (the SDKs' standard variables on every container
that exports to the ADOT collector); awsemf writes them as EMF Values/Counts, so CloudWatch has p50/p95/p99 of
``http.server.request.duration`` and ``rpc.server.duration``. With App Mesh each task's collector tags its
telemetry with ``deployment.variant``, and the canary's own 5xx rate and p95 get alarms the traffic shift reads.
"""

from __future__ import annotations

import json
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
                (query,) = p95["Metrics"]
                assert _stats(query) == (NAMESPACE, instrument, canary, "p95")
                assert p95["Threshold"] == p95_threshold and p95["EvaluateLowSampleCountPercentile"] == "ignore"
                for alarm in (rate, p95):
                    assert alarm["AlarmActions"] == alarm["OKActions"] and alarm["AlarmActions"]
                    assert alarm["AlarmDescription"].endswith("Runbook: runbooks/canary-rollback.md")
                    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"], alarm["TreatMissingData"]) == (3, 2, "notBreaching")
            if name not in GRPC_SERVICES:
                assert f"mf-{name}-canary-grpc-error-rate" not in alarms
        assert not any("-canary-" in alarm and "tasks-below-desired" not in alarm for alarm in _alarms(dev, region))
