"""The observability stack: dashboards per service and for the platform, alarms that notify and name a
runbook, DLQ, queue-age and quota alarms, error-log metric filters, Spot interruptions, X-Ray sampling."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from constructs.meshed_service.adot import CONFIG_FILE
from constructs.observability.quota_counter import COUNTED
from tests.assembly import Assembly, REPO_ROOT, container_settings, source_value, template_text

REGIONS = ("eu-central-1", "eu-west-1")
SERVICES = ("auth", "persona", "vc-start")
CONSUMERS = ("persona", "vc-start")  # the services with an event queue (config `consumes`)
RUNBOOK = re.compile(r"Runbook: (runbooks/[a-z0-9-]+\.md)$")


def _observability(region: str = "eu-central-1") -> str:
    return f"mf-{region}/observability"


def _alarms(assembly: Assembly, stack: str) -> dict[str, dict[str, Any]]:
    return {a["Properties"]["AlarmName"]: a["Properties"] for a in assembly.resources(stack, "AWS::CloudWatch::Alarm").values()}




def _dashboards(assembly: Assembly, stack: str) -> dict[str, str]:
    return {d["Properties"]["DashboardName"]: template_text(d["Properties"]["DashboardBody"])
            for d in assembly.resources(stack, "AWS::CloudWatch::Dashboard").values()}


def _metric_names(alarm: dict[str, Any]) -> set[str]:
    if "MetricName" in alarm:
        return {alarm["MetricName"]}
    return {m["MetricStat"]["Metric"]["MetricName"] for m in alarm["Metrics"] if "MetricStat" in m}


def test_a_dashboard_per_service_and_one_for_the_platform_in_each_region(dev):
    names = []
    for region in REGIONS:
        dashboards = _dashboards(dev, _observability(region))
        assert set(dashboards) == {f"mf-{region}-{name}" for name in (*SERVICES, "platform")}
        names += dashboards
    # Dashboard names are global to the account: the two regions' must not collide.
    assert len(names) == len(set(names))


def test_service_dashboards_show_red_and_use(dev):
    dashboards = _dashboards(dev, _observability())
    for name in SERVICES:
        body = dashboards[f"mf-eu-central-1-{name}"]
        # RED from the load balancer (percentiles) and from the service's own OTel metrics (EMF).
        assert all(f'"stat":"{p}"' in body for p in ("p50", "p95", "p99")) and "TargetResponseTime" in body
        assert "RequestCount" in body and "HTTPCode_Target_5XX_Count" in body
        assert '"mf/services","http.server.request.duration","service.name","' + name + '"' in body.replace(" ", "")
        assert f'\\"service.name\\"=\\"{name}\\"' in body and "error.type" in body  # the failures search
        # USE: CPU and memory, running against desired tasks, Spot interruptions.
        assert "CPUUtilization" in body and "MemoryUtilization" in body
        assert "DesiredTaskCount" in body and "RunningTaskCount" in body
        assert f'"group","service:{name}"' in body.replace(" ", "") and "SpotInterruptions" in body
        # Service Connect's own view (requests inbound; responses as callers saw them), and the deployment alarms that
        # stay in the services stack.
        compact = body.replace(" ", "")
        assert f'"DiscoveryName","{name}-sc"' in compact
        assert f'"HTTPCode_Target_5XX_Count","TargetDiscoveryName","{name}-sc"' in compact
        assert f'"TargetResponseTime","TargetDiscoveryName","{name}-sc"' in compact
        assert '"type":"alarm"' in body
    assert "rpc.server.duration" in dashboards["mf-eu-central-1-persona"]  # persona serves gRPC
    assert "rpc.server.duration" not in dashboards["mf-eu-central-1-auth"]


def test_the_service_dashboards_read_the_dimensions_the_collector_declares():
    """The awsemf exporter makes a metric only for a declared dimension set: the dashboards' sets must be declared."""
    declarations = yaml.safe_load(CONFIG_FILE.read_text())["exporters"]["awsemf"]["metric_declarations"]
    declared = {(tuple(dims), selector) for d in declarations for dims in d["dimensions"] for selector in d["metric_name_selectors"]}
    assert (("service.name",), ".*") in declared
    assert (("service.name", "error.type"), r"^http\.server\.request\.duration$") in declared
    assert (("service.name", "rpc.grpc.status_code"), r"^rpc\.server\.duration$") in declared
    # service.name is a resource attribute: it is a label only with the conversion on.
    assert yaml.safe_load(CONFIG_FILE.read_text())["exporters"]["awsemf"]["resource_to_telemetry_conversion"]["enabled"] is True


def test_platform_dashboard_shows_endpoints_nat_mesh_queues_and_quotas(dev, appmesh):
    body = _dashboards(dev, _observability())["mf-eu-central-1-platform"]
    assert "AWS/PrivateLinkEndpoints" in body and "PacketsDropped" in body
    assert "AWS/NATGateway" in body and "ErrorPortAllocation" in body
    assert all(f'"DiscoveryName","{name}-sc"' in body.replace(" ", "") for name in SERVICES)
    assert all(f'"HTTPCode_Target_5XX_Count","TargetDiscoveryName","{name}-sc"' in body.replace(" ", "") for name in SERVICES)
    assert body.count("ApproximateAgeOfOldestMessage") >= len(CONSUMERS)
    assert "SERVICE_QUOTA(" in body
    # App Mesh's Envoy statistics do not reach CloudWatch: the dashboard says so instead of plotting nothing.
    mesh_body = _dashboards(appmesh, _observability())["mf-eu-central-1-platform"]
    assert "DiscoveryName" not in mesh_body and "Envoy publishes its statistics on its admin port only" in mesh_body


@pytest.mark.parametrize("variant", ["dev", "prod", "appmesh", "domain"])
def test_every_alarm_notifies_on_alarm_and_on_ok_and_names_a_runbook_that_exists(request, variant):
    assembly: Assembly = request.getfixturevalue(variant)
    alarms = [(stack, logical_id, resource["Properties"]) for stack, logical_id, resource in assembly.all_resources()
              if resource["Type"] == "AWS::CloudWatch::Alarm"]
    # The one exception: domain mode's per-target-group alarms are a Route 53 health check's input and
    # notify no one by design (a deployment's idle group is empty); <service>-no-healthy-targets notifies.
    health_check_inputs = {(stack, check["Properties"]["HealthCheckConfig"]["AlarmIdentifier"]["Name"]["Ref"])
                           for stack, _, check in assembly.all_resources() if check["Type"] == "AWS::Route53::HealthCheck"
                           and "AlarmIdentifier" in check["Properties"]["HealthCheckConfig"]}
    names = {alarm["AlarmName"] for _, _, alarm in alarms}
    assert alarms
    for stack, logical_id, alarm in alarms:
        name = alarm.get("AlarmName", logical_id)
        runbook = RUNBOOK.search(alarm["AlarmDescription"])
        assert runbook and (REPO_ROOT / runbook.group(1)).is_file(), f"{name}: {alarm['AlarmDescription']}"
        if (stack, logical_id) in health_check_inputs:
            assert "AlarmActions" not in alarm and re.sub(r"-group\d-empty$", "-no-healthy-targets", name) in names
            continue
        assert alarm.get("AlarmActions") and alarm.get("OKActions") == alarm["AlarmActions"], name
        assert alarm.get("ActionsEnabled", True) is True, name
    # Composite alarms: only the chaos stack's SLO alarms, which stop FIS experiments. They notify no one
    # themselves because every alarm they combine already does (a second message per breach).
    stop_conditions = json.dumps([template["Properties"]["StopConditions"] for _, _, template in assembly.all_resources()
                                  if template["Type"] == "AWS::FIS::ExperimentTemplate"])
    for _, logical_id, resource in assembly.all_resources():
        if resource["Type"] != "AWS::CloudWatch::CompositeAlarm":
            continue
        composite = resource["Properties"]
        runbook = RUNBOOK.search(composite["AlarmDescription"])
        assert runbook and (REPO_ROOT / runbook.group(1)).is_file(), composite["AlarmName"]
        assert f'"{logical_id}"' in stop_conditions and "AlarmActions" not in composite, composite["AlarmName"]
        rule = composite["AlarmRule"]
        rule = "".join(part for part in rule["Fn::Join"][1] if isinstance(part, str)) if isinstance(rule, dict) else rule
        combined = re.findall(r':alarm:([^"]+)"', rule)
        assert combined and set(combined) <= names, (composite["AlarmName"], set(combined) - names)
    # Alarm names are unique per region: no stack duplicates another's.
    for region in REGIONS:
        in_region = [a["AlarmName"] for stack, _, a in alarms if stack.startswith(f"mf-{region}/")]
        assert len(in_region) == len(set(in_region))


def test_a_dlq_alarm_and_a_queue_age_alarm_per_event_queue(dev):
    for region in REGIONS:
        queues = {q["Properties"]["QueueName"] for q in dev.resources(f"mf-{region}/services", "AWS::SQS::Queue").values()}
        # Besides the event queues, the listener rule guard's dead-letter queue (tests/test_listener_rule_guard.py).
        assert queues == {f"mf-{name}-events{suffix}" for name in CONSUMERS for suffix in ("", "-dlq")} | {"mf-listener-rule-guard-dlq"}
        alarms = _alarms(dev, _observability(region))
        for name in CONSUMERS:
            dlq = alarms[f"mf-{name}-events-dlq-not-empty"]
            assert _metric_names(dlq) == {"ApproximateNumberOfMessagesVisible"}
            assert (dlq["Threshold"], dlq["ComparisonOperator"]) == (0, "GreaterThanThreshold")  # any message at all
            queue_name = json.dumps(dlq["Metrics"][0]["MetricStat"]["Metric"]["Dimensions"])
            assert f"{name.replace('-', '')}resourcesDeadLetterQueue" in queue_name  # that service's DLQ
            age = alarms[f"mf-{name}-events-oldest-message"]
            assert _metric_names(age) == {"ApproximateAgeOfOldestMessage"} and age["Threshold"] == 15 * 60
            # The age only grows while the worker is stuck: the first period past it pages.
            assert (age["EvaluationPeriods"], age["DatapointsToAlarm"]) == (1, 1)
            assert f"{name.replace('-', '')}resourcesQueue" in json.dumps(age["Metrics"])
        # Plus the three dead-letter queues that are not a service's: the Spot-interruption rule's target's, the
        # quota counter's and the listener rule guard's (tests/test_events.py checks every dead-letter queue has its alarm).
        assert sum(n.endswith("-dlq-not-empty") for n in alarms) == len(CONSUMERS) + 3
        assert {"mf-spot-interruptions-dlq-not-empty", "mf-counted-quotas-dlq-not-empty", "mf-listener-rule-guard-dlq-not-empty"} <= set(alarms)
        # SQS stops publishing an idle queue's metrics after about six hours, and nobody reads a dead-letter queue:
        # no data there means empty, not INSUFFICIENT_DATA for ever.
        assert {alarm["TreatMissingData"] for n, alarm in alarms.items() if n.endswith("-dlq-not-empty")} == {"notBreaching"}


def test_quota_alarms_compare_usage_with_the_applied_quota(dev):
    alarms = _alarms(dev, _observability())
    expected = {
        "mf-quota-fargate-on-demand-vcpu": {"Service": "Fargate", "Type": "Resource", "Resource": "vCPU", "Class": "Standard/OnDemand"},
        "mf-quota-fargate-spot-vcpu": {"Service": "Fargate", "Type": "Resource", "Resource": "vCPU", "Class": "Standard/Spot"},
        "mf-quota-ecr-batch-get-image": {"Service": "ECR", "Type": "API", "Resource": "BatchGetImage"},
        "mf-quota-ecr-get-download-url-for-layer": {"Service": "ECR", "Type": "API", "Resource": "GetDownloadUrlForLayer"},
        "mf-quota-ecr-get-authorization-token": {"Service": "ECR", "Type": "API", "Resource": "GetAuthorizationToken"},
    }
    # The rest are QuotaCounter's (tests/test_quota_counter.py).
    assert {n for n in alarms if "-quota-" in n} - {f"mf-quota-{name}" for name, _ in COUNTED} == set(expected)
    for name, dimensions in expected.items():
        alarm = alarms[name]
        (expression,) = [m["Expression"] for m in alarm["Metrics"] if "Expression" in m]
        (usage,) = [m for m in alarm["Metrics"] if "MetricStat" in m]
        assert f"SERVICE_QUOTA({usage['Id']})" in expression and alarm["Threshold"] == 80
        assert usage["MetricStat"]["Metric"]["Namespace"] == "AWS/Usage"
        assert {d["Name"]: d["Value"] for d in usage["MetricStat"]["Metric"]["Dimensions"]} == dimensions
        # ECR publishes its API usage without a Class dimension (quotas.py names the source); a Class would match nothing.
        # API quotas are per second; CallCount sums the period, per minute: a pull burst of a minute or two (a scale-out)
        # is not averaged away over longer periods. A vCPU count changes slowly: 2 of 2 five-minute periods.
        api = dimensions["Type"] == "API"
        assert ("PERIOD(" in expression) == api
        assert (usage["MetricStat"]["Period"], alarm["DatapointsToAlarm"], alarm["EvaluationPeriods"]) == ((60, 2, 3) if api else (300, 2, 2))


@pytest.mark.parametrize("variant", ["dev", "appmesh"])
def test_the_load_balancers_own_5xx_have_an_alarm(request, variant):
    """A target that hangs (504), resets (502) or is missing (503) is in no target group's metrics."""
    alarms = _alarms(request.getfixturevalue(variant), _observability())
    alarm = alarms["mf-load-balancer-5xx-rate"]
    by_id = {m["Id"]: m for m in alarm["Metrics"]}
    assert {i: m["MetricStat"]["Metric"]["MetricName"] for i, m in by_id.items() if "MetricStat" in m} == {
        "requests": "RequestCount", "elb": "HTTPCode_ELB_5XX_Count"}
    assert all([d["Name"] for d in m["MetricStat"]["Metric"]["Dimensions"]] == ["LoadBalancer"] for m in by_id.values() if "MetricStat" in m)
    (expression,) = [m["Expression"] for m in alarm["Metrics"] if "Expression" in m]
    # The 503s (no target chosen) are not in RequestCount: they are added back before dividing.
    assert expression == "IF(FILL(requests, 0) + FILL(elb, 0) >= 20, 100 * FILL(elb, 0) / (FILL(requests, 0) + FILL(elb, 0)), 0)"
    assert (alarm["Threshold"], alarm["DatapointsToAlarm"], alarm["EvaluationPeriods"]) == (1, 2, 3)
    assert alarm["AlarmDescription"].endswith("runbooks/elevated-5xx.md")


def test_service_alarms_cover_targets_tasks_and_error_logs(dev):
    alarms = _alarms(dev, _observability())
    for name in SERVICES:
        for group in (0, 1):  # the canary deployment's two target groups
            unhealthy = alarms[f"mf-{name}-lb-group{group}-unhealthy-targets"]
            assert _metric_names(unhealthy) == {"UnHealthyHostCount"} and unhealthy["Threshold"] == 0
            assert (unhealthy["DatapointsToAlarm"], unhealthy["EvaluationPeriods"]) == (5, 5)
        below = alarms[f"mf-{name}-tasks-below-desired"]
        assert _metric_names(below) == {"DesiredTaskCount", "RunningTaskCount"}
        assert any(m.get("Expression") == "FILL(desired, 0) - FILL(running, 0)" for m in below["Metrics"])
        assert (below["Threshold"], below["DatapointsToAlarm"]) == (0, 10)
        # A service with no task at all: ECS then reports no metric for it, which the alarm above takes as fine.
        down = alarms[f"mf-{name}-no-running-tasks"]
        (query,) = down["Metrics"]
        assert (query["MetricStat"]["Metric"]["Namespace"], query["MetricStat"]["Metric"]["MetricName"], query["MetricStat"]["Stat"]) == (
            "ECS/ContainerInsights", "RunningTaskCount", "Minimum")
        dimensions = {d["Name"]: d["Value"] for d in query["MetricStat"]["Metric"]["Dimensions"]}
        assert set(dimensions) == {"ClusterName", "ServiceName"} and dimensions["ServiceName"] == name
        assert (down["Threshold"], down["ComparisonOperator"], down["TreatMissingData"]) == (1, "LessThanThreshold", "breaching")
        assert (down["DatapointsToAlarm"], down["EvaluationPeriods"]) == (5, 5)
        # gRPC (persona): its alarms roll Service Connect deployments back, so the services stack makes them
        # (tests/test_mesh_backends.py); with App Mesh they are here (test_service_connect_keeps_its_deployment_alarms...).
        assert f"mf-{name}-grpc-server-error-rate" not in alarms
        errors = alarms[f"mf-{name}-error-logs"]
        metric = errors["Metrics"][0]["MetricStat"]["Metric"]
        assert (metric["Namespace"], metric["MetricName"], metric["Dimensions"]) == (
            "mf/logs", "ErrorLogLines", [{"Name": "service", "Value": name}])


def test_error_logs_are_counted_from_each_service_log_group(dev, appmesh):
    for assembly, log_groups_per_service in ((dev, 1), (appmesh, 2)):  # App Mesh: the primary's and the canary's
        filters = [f["Properties"] for f in assembly.resources(_observability(), "AWS::Logs::MetricFilter").values()
                   if f["Properties"]["MetricTransformations"][0]["MetricName"] == "ErrorLogLines"]
        assert len(filters) == len(SERVICES) * log_groups_per_service
        for metric_filter in filters:
            assert metric_filter["FilterPattern"] == '{ ($.level = "ERROR") || ($.level = "CRITICAL") }'
            (transformation,) = metric_filter["MetricTransformations"]
            assert transformation["MetricNamespace"] == "mf/logs"
            assert transformation["Dimensions"] == [{"Key": "service", "Value": "$.service"}]
            assert re.search(r"(auth|persona|vcstart)(canary)?Logs", json.dumps(metric_filter["LogGroupName"]))


def test_service_connect_keeps_its_deployment_alarms_and_app_mesh_gets_load_balancer_ones(dev, appmesh):
    for name in SERVICES:
        # Service Connect: the services stack owns the 5xx and p95 alarms (they roll deployments back; which ones:
        # tests/test_mesh_backends.py).
        assert f"mf-{name}-lb-group0-5xx-rate" in _alarms(dev, "mf-eu-central-1/services")
        # The observability stack's only one is the load balancer's own 5xx (no target group has them).
        assert not any("5xx" in n or "p95" in n or "error-rate" in n for n in _alarms(dev, _observability())
                       if n != "mf-load-balancer-5xx-rate")
        # App Mesh has no deployment alarms: the observability stack alarms on the load balancer's view, and on
        # persona's own gRPC calls under the names Service Connect's deployment alarms have.
        mesh_alarms = _alarms(appmesh, _observability())
        rate, latency = mesh_alarms[f"mf-{name}-lb-group0-5xx-rate"], mesh_alarms[f"mf-{name}-lb-group0-p95-latency"]
        assert rate["Threshold"] == 1 and "runbooks/elevated-5xx.md" in rate["AlarmDescription"]
        stats = {(m["MetricStat"]["Metric"]["MetricName"], m["MetricStat"]["Stat"]) for m in latency["Metrics"] if "MetricStat" in m}
        assert latency["Threshold"] == 1.0 and stats == {("TargetResponseTime", "p95"), ("RequestCount", "Sum")}
        grpc = {f"mf-{name}-grpc-server-error-rate", f"mf-{name}-grpc-server-p95-latency"}
        assert (grpc <= set(mesh_alarms)) == (name == "persona")


@pytest.mark.parametrize("variant", ["dev", "prod"])
def test_every_log_group_has_retention_and_a_key_and_no_function_logs_to_an_implicit_group(request, variant):
    assembly: Assembly = request.getfixturevalue(variant)
    for stack, logical_id, resource in assembly.all_resources():
        if resource["Type"] == "AWS::Logs::LogGroup":
            assert {"KmsKeyId", "RetentionInDays"} <= set(resource["Properties"]), f"{stack} {logical_id}"
        if resource["Type"] == "AWS::Lambda::Function":
            assert "LogGroup" in resource["Properties"].get("LoggingConfig", {}), f"{stack} {logical_id}"


def test_spot_interruptions_become_a_metric(dev):
    stack = _observability()
    (rule,) = [r for r in dev.resources(stack, "AWS::Events::Rule").values() if "EventPattern" in r["Properties"]]
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["detail-type"] == ["ECS Task State Change"] and pattern["detail"]["stopCode"] == ["SpotInterruption"]
    assert "clusterArn" in pattern["detail"]  # this region's cluster only
    (log_group_id, log_group), = [(i, g) for i, g in dev.resources(stack, "AWS::Logs::LogGroup").items()
                                  if g["Properties"].get("LogGroupName") == "/aws/events/mf-spot-interruptions"]
    assert rule["Properties"]["Targets"][0]["Arn"]["Fn::Join"][1][-1] == ":log-group:/aws/events/mf-spot-interruptions"
    assert log_group["Properties"]["LogGroupName"] == "/aws/events/mf-spot-interruptions"
    (policy,) = dev.resources(stack, "AWS::Logs::ResourcePolicy").values()
    assert "events.amazonaws.com" in json.dumps(policy["Properties"]["PolicyDocument"])
    assert rule["Properties"]["Name"] == "mf-spot-interruptions"
    spot = [f["Properties"] for f in dev.resources(stack, "AWS::Logs::MetricFilter").values()
            if f["Properties"]["MetricTransformations"][0]["MetricName"] == "SpotInterruptions"]
    assert spot and spot[0]["LogGroupName"] == {"Ref": log_group_id}
    assert spot[0]["MetricTransformations"][0]["Dimensions"] == [{"Key": "group", "Value": "$.detail.group"}]
    # Each step of a task's stop is an event with the stop code: one interrupted task counts once, at STOPPED.
    assert spot[0]["FilterPattern"] == '{ ($.detail.stopCode = "SpotInterruption") && ($.detail.lastStatus = "STOPPED") }'


def _default_sampler_ratio() -> float:
    return source_value("services/common/servicekit/tracing.py", r"^DEFAULT_TRACES_SAMPLER_RATIO = ([0-9.]+)$")


def _sampler_args(assembly: Assembly, stack: str) -> set[str]:
    """OTEL_TRACES_SAMPLER_ARG of every container that has it (set directly or from the service's SSM config)."""
    resources = assembly.template(stack)["Resources"]
    return {settings["OTEL_TRACES_SAMPLER_ARG"] for task in assembly.resources(stack, "AWS::ECS::TaskDefinition").values()
            for container in task["Properties"]["ContainerDefinitions"]
            if "OTEL_TRACES_SAMPLER_ARG" in (settings := container_settings(resources, container))}


def test_sampling_rules_default_to_the_services_own_sampler(dev):
    rules = {r["Properties"]["SamplingRule"]["RuleName"]: r["Properties"]["SamplingRule"]
             for r in dev.resources(_observability(), "AWS::XRay::SamplingRule").values()}
    assert set(rules) == {f"mf-{name}" for name in (*SERVICES, "health")}
    for name in SERVICES:
        assert (rules[f"mf-{name}"]["FixedRate"], rules[f"mf-{name}"]["ReservoirSize"]) == (_default_sampler_ratio(), 1)
        assert rules[f"mf-{name}"]["ServiceName"] == name
    assert (rules["mf-health"]["FixedRate"], rules["mf-health"]["ReservoirSize"], rules["mf-health"]["URLPath"]) == (0, 0, "*/health/*")
    assert rules["mf-health"]["Priority"] < min(rules[f"mf-{n}"]["Priority"] for n in SERVICES)
    assert _sampler_args(dev, "mf-eu-central-1/services") == {str(_default_sampler_ratio())}


def test_observability_config_reaches_sampling_rules_services_and_thresholds(one_region):
    """one_region (tests/conftest.py): observability xray_sampling_rate 0.2, xray_reservoir_per_second 3,
    quota_alarm_percent 90, queue_age_alarm_minutes 30."""
    assembly = one_region
    stack = _observability("eu-west-1")
    rules = [r["Properties"]["SamplingRule"] for r in assembly.resources(stack, "AWS::XRay::SamplingRule").values()
             if r["Properties"]["SamplingRule"]["RuleName"] != "mf-health"]
    assert {(r["FixedRate"], r["ReservoirSize"]) for r in rules} == {(0.2, 3)} and len(rules) == len(SERVICES)
    # The services' OpenTelemetry sampler starts traces at the same rate.
    assert _sampler_args(assembly, "mf-eu-west-1/services") == {"0.2"}
    alarms = _alarms(assembly, stack)
    assert {a["Threshold"] for n, a in alarms.items() if "-quota-" in n} == {90}
    assert {a["Threshold"] for n, a in alarms.items() if n.endswith("-oldest-message")} == {30 * 60}


def _policy_statements(policy_document: Any) -> list[dict[str, Any]]:
    """A log group resource policy's statements, with its Fn::Join tokens as <token> (GetAtt) or the pseudo parameter."""
    def text(part: Any) -> str:
        return part if isinstance(part, str) else "<" + part.get("Ref", "token") + ">"
    return json.loads("".join(text(part) for part in policy_document["Fn::Join"][1]))["Statement"]


@pytest.mark.parametrize("region", REGIONS)
def test_only_the_spot_interruption_rule_writes_events_into_its_log_group(dev, region):
    """The log group's resource policy: EventBridge may put log events only for the Spot-interruption rule
    (aws:SourceArn, which it sends with PutLogEvents); CloudWatch Logs' delivery service only for this account."""
    (policy,) = dev.resources(_observability(region), "AWS::Logs::ResourcePolicy").values()
    statements = _policy_statements(policy["Properties"]["PolicyDocument"])
    rule_arn = f"arn:aws:events:{region}:<AWS::AccountId>:rule/mf-spot-interruptions"
    writes = [s for s in statements if "logs:PutLogEvents" in json.dumps(s["Action"])]
    assert writes and all(s["Effect"] == "Allow" and "Condition" in s for s in writes)
    by_principal = {s["Principal"]["Service"]: s["Condition"] for s in writes}
    assert by_principal == {"events.amazonaws.com": {"ArnEquals": {"aws:SourceArn": rule_arn}},
                            "delivery.logs.amazonaws.com": {"StringEquals": {"aws:SourceAccount": "<AWS::AccountId>"}}}
    # The only unconditioned grant: EventBridge creating a stream (it sends no source with CreateLogStream).
    assert [s["Action"] for s in statements if "Condition" not in s] == ["logs:CreateLogStream"]


def test_every_alarm_topic_mails_the_configured_on_call_addresses_and_none_by_default(dev, domain):
    """Alarms that notify a topic nobody subscribed to page nobody: config `observability.notify_emails` subscribes
    each address to every region's topic and the edge's."""
    from tests.conftest import ONCALL_EMAIL

    def subscriptions_by_topic(assembly):
        by_topic = {}
        for stack, _, resource in assembly.all_resources():
            if resource["Type"] == "AWS::SNS::Topic" and resource["Properties"]["TopicName"].endswith("alarms"):
                by_topic.setdefault((stack, resource["Properties"]["TopicName"]), [])
        for stack, _, resource in assembly.all_resources():
            if resource["Type"] == "AWS::SNS::Subscription":
                (topic_id,) = resource["Properties"]["TopicArn"].values()
                topic_name = assembly.template(stack)["Resources"][topic_id]["Properties"]["TopicName"]
                by_topic[(stack, topic_name)].append((resource["Properties"]["Protocol"], resource["Properties"]["Endpoint"]))
        return by_topic

    expected_topics = {(f"mf-{region}/platform", "mf-alarms") for region in REGIONS} | {("mf-edge/edge", "mf-edge-alarms")}
    assert subscriptions_by_topic(dev) == {topic: [] for topic in expected_topics}
    assert subscriptions_by_topic(domain) == {topic: [("email", ONCALL_EMAIL)] for topic in expected_topics}


@pytest.mark.parametrize("variant", ["dev", "prod"])
def test_each_region_alarms_when_its_writes_to_a_service_table_replicate_too_slowly(request, variant):
    """A replication backlog is data a region outage would lose: each region watches the replication of its own
    writes (DynamoDB publishes ReplicationLatency where the write was made), per table and receiving region."""
    assembly = request.getfixturevalue(variant)
    for region in REGIONS:
        (other,) = set(REGIONS) - {region}
        alarms = {name: alarm for name, alarm in _alarms(assembly, _observability(region)).items() if "-replication-to-" in name}
        assert set(alarms) == {f"mf-{service}-replication-to-{other}" for service in SERVICES}  # each has a table
        for service in SERVICES:
            alarm = alarms[f"mf-{service}-replication-to-{other}"]
            (stat,) = [m["MetricStat"] for m in alarm["Metrics"]]
            assert (stat["Metric"]["Namespace"], stat["Metric"]["MetricName"], stat["Stat"], stat["Period"]) == (
                "AWS/DynamoDB", "ReplicationLatency", "Average", 300)
            assert sorted(stat["Metric"]["Dimensions"], key=lambda d: d["Name"]) == [
                {"Name": "ReceivingRegion", "Value": other}, {"Name": "TableName", "Value": f"mf-{service}"}]
            assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 60_000)  # milliseconds
            assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"], alarm["TreatMissingData"]) == (3, 3, "notBreaching")
            assert alarm["AlarmActions"] == alarm["OKActions"] and alarm["AlarmActions"]
            assert RUNBOOK.search(alarm["AlarmDescription"])[1] == "runbooks/disaster-recovery.md"


def _topic_name(assembly: Assembly, action: dict[str, Any]) -> str:
    """The name of the SNS topic an alarm action points at (the platform stack's output of the topic's Ref)."""
    reference = action["Fn::GetStackOutput"]
    producer = next(path for path, artifact in assembly.stack_artifacts.items()
                    if artifact["properties"].get("stackName") == reference["StackName"])
    template = assembly.template(producer)
    topic = template["Resources"][template["Outputs"][reference["OutputName"]]["Value"]["Ref"]]
    return f'{reference["Region"]}:{topic["Properties"]["TopicName"]}'


# The DynamoDB operations each service's role can call on its table (cdk.json `table_actions`, Query through its
# `table_indexes`, and the transactions IAM authorizes per item action): ThrottledRequests and SystemErrors come per
# operation, and an alarm that left one out would miss its throttles.
TABLE_OPERATIONS = {
    "auth": ["GetItem", "PutItem", "TransactGetItems", "TransactWriteItems", "UpdateItem"],
    "persona": ["BatchGetItem", "DeleteItem", "GetItem", "PutItem", "Query", "TransactGetItems", "TransactWriteItems",
                "UpdateItem"],
    "vc-start": ["DeleteItem", "GetItem", "PutItem", "Query", "TransactGetItems", "TransactWriteItems", "UpdateItem"],
}


@pytest.mark.parametrize("variant", ["dev", "prod"])
def test_each_region_alarms_when_a_service_table_throttles_requests_or_fails_them(request, variant):
    """Each region watches its own replica of every service table: the requests DynamoDB throttled (a hot key, the
    per-table quota, a jump past twice the previous peak) and its own 500s, summed over the operations the service
    calls, to the region's alarm topic, with the runbook that says what to do."""
    assembly = request.getfixturevalue(variant)
    for region in REGIONS:
        alarms = _alarms(assembly, _observability(region))
        assert {name for name in alarms if "-table-" in name} == {
            f"mf-{service}-table-{kind}" for service in SERVICES for kind in ("throttled-requests", "system-errors")}
        for service in SERVICES:
            for kind, metric_name in (("throttled-requests", "ThrottledRequests"), ("system-errors", "SystemErrors")):
                alarm = alarms[f"mf-{service}-table-{kind}"]
                stats = {m["Id"]: m["MetricStat"] for m in alarm["Metrics"] if "MetricStat" in m}
                assert {(s["Metric"]["Namespace"], s["Metric"]["MetricName"], s["Stat"], s["Period"]) for s in stats.values()} == {
                    ("AWS/DynamoDB", metric_name, "Sum", 60)}
                dimensions = [{d["Name"]: d["Value"] for d in s["Metric"]["Dimensions"]} for s in stats.values()]
                assert sorted(d["Operation"] for d in dimensions) == TABLE_OPERATIONS[service]
                assert all(d == {"TableName": f"mf-{service}", "Operation": d["Operation"]} for d in dimensions)
                # An operation nobody throttled publishes nothing: each counts 0 then, so the sum is never missing.
                (expression,) = [m for m in alarm["Metrics"] if "Expression" in m]
                assert expression.get("ReturnData", True) is True
                assert expression["Expression"] == " + ".join(f"FILL({i}, 0)" for i in stats)
                assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)  # config default: any
                assert (alarm["DatapointsToAlarm"], alarm["EvaluationPeriods"], alarm["TreatMissingData"]) == (3, 5, "notBreaching")
                assert alarm["OKActions"] == alarm["AlarmActions"]
                assert [_topic_name(assembly, action) for action in alarm["AlarmActions"]] == [f"{region}:mf-alarms"]
                assert RUNBOOK.search(alarm["AlarmDescription"])[1] == "runbooks/table-errors.md"
    # The indexes' own throttle events are on the dashboard, beside the table's (vc-start's sweep index).
    body = _dashboards(assembly, _observability())["mf-eu-central-1-vc-start"].replace(" ", "")
    assert '"AWS/DynamoDB","WriteThrottleEvents","GlobalSecondaryIndexName","sweep","TableName","mf-vc-start"' in body


def test_the_table_alarm_thresholds_come_from_config(one_region):
    """one_region (tests/conftest.py): observability table_throttle_alarm_requests 25, table_system_error_alarm_requests 3."""
    alarms = _alarms(one_region, _observability("eu-west-1"))
    assert {alarms[f"mf-{service}-table-throttled-requests"]["Threshold"] for service in SERVICES} == {25}
    assert {alarms[f"mf-{service}-table-system-errors"]["Threshold"] for service in SERVICES} == {3}
    # One region: no replication alarm, the table alarms all the same.
    assert not any("-replication-to-" in name for name in alarms)


@pytest.mark.parametrize("variant", ["dev", "appmesh"])
def test_each_ecs_service_alarms_when_its_telemetry_collector_is_unhealthy_or_silent(request, variant):
    """The ADOT sidecar is not essential: a dead or hung collector leaves the task serving without traces or metrics.
    Its container health check, as Container Insights publishes it, alarms per ECS service (the App Mesh canary's too);
    while tasks run, no health report at all counts as unhealthy (no collector running)."""
    assembly = request.getfixturevalue(variant)
    ecs_services = [f"{s}{suffix}" for s in SERVICES for suffix in (("", "-canary") if variant == "appmesh" else ("",))]
    for region in REGIONS:
        alarms = _alarms(assembly, _observability(region))
        assert {name for name in alarms if name.endswith("-collector-unhealthy")} == {f"mf-{s}-collector-unhealthy" for s in ecs_services}
        for ecs_service in ecs_services:
            alarm = alarms[f"mf-{ecs_service}-collector-unhealthy"]
            by_id = {m["Id"]: m for m in alarm["Metrics"]}
            health, running = by_id["unhealthy"]["MetricStat"], by_id["running"]["MetricStat"]
            assert (health["Metric"]["Namespace"], health["Metric"]["MetricName"], health["Stat"], health["Period"]) == (
                "ECS/ContainerInsights", "UnHealthyContainerHealthStatus", "Maximum", 60)
            cluster = {d["Name"]: d["Value"] for d in health["Metric"]["Dimensions"]}.pop("ClusterName")
            assert sorted(health["Metric"]["Dimensions"], key=lambda d: d["Name"]) == [
                {"Name": "ClusterName", "Value": cluster}, {"Name": "ContainerName", "Value": "adot-collector"},
                {"Name": "ServiceName", "Value": ecs_service}]
            assert running["Metric"]["MetricName"] == "RunningTaskCount"
            assert {d["Name"]: d["Value"] for d in running["Metric"]["Dimensions"]} == {"ClusterName": cluster, "ServiceName": ecs_service}
            (expression,) = [m["Expression"] for m in alarm["Metrics"] if "Expression" in m]
            assert expression == "IF(FILL(running, 0) >= 1, FILL(unhealthy, 1), 0)"
            assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
            assert (alarm["DatapointsToAlarm"], alarm["EvaluationPeriods"], alarm["TreatMissingData"]) == (5, 5, "notBreaching")
            assert alarm["OKActions"] == alarm["AlarmActions"]
            assert [_topic_name(assembly, action) for action in alarm["AlarmActions"]] == [f"{region}:mf-alarms"]
            assert RUNBOOK.search(alarm["AlarmDescription"])[1] == "runbooks/telemetry-collector.md"
