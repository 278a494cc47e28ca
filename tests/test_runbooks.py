"""The runbooks match the app: their sections, the alarms that send an on-call engineer to them, and
every resource, stack, output and SSM name they cite, checked against the synthesized templates.

tests/test_observability.py checks the other direction (every alarm names a runbook that exists and
notifies on ALARM and OK).

How a citation is recognised (keep the runbooks to these forms):

- an inline code span that is a name as a whole: it starts with `<prefix>-` / `mf-`, `<prefix>/` /
  `mf/`, `/<prefix>/` / `/mf/`, or `/aws/<kind>/mf-` (for example `mf-<service>-events-dlq-not-empty`,
  `/mf/ingress/load-balancer-arn`, `mf/auth/jwt-signing-key`, `mf-rollback-service`);
- the value after a name option in a command (`--stack-name`, `--name`, `--queue-name`,
  `--document-name`, `--log-group-name`, `--secret-id`, `--repository-name`, `--cluster`), in code blocks too;
- the values of the options in KIND_OPTIONS, read by the AWS CLI service of their command (the last
  `aws <service>` before the option; elsewhere they are not read), every value of a list option
  (LIST_OPTIONS), each checked against the names of its kind that _app_names collects (KIND_RESOURCES,
  the metrics of alarms, metric filters and dashboards, AWS_NAMESPACES); a `--metric-name` only in the
  app's own namespaces (`mf/...`), since AWS's hold metrics no template names;
- a stack output: a code span right before or after the word "output", or `OutputKey=='<key>'`.

Placeholders are expanded before the check: `<prefix>` to `mf`, `<region>` to each configured region,
`<service>` to each service, `<a|b>` to each alternative. A citation passes when at least one expansion
exists in at least one variant of VARIANTS: some names exist only for some services
(event queues) or in one variant (domain mode's health alarms). What still holds another placeholder
(`<ecs service>`, `<name>`) or another shell variable (`$LG`) is prose, not a citation, and is not
checked; the shell variables `$R` and `$REGION` stand for `<region>`, `$SERVICE` for `<service>`.

Commands, in the runbooks and their README: every `aws ssm start-automation-execution` names an
AWS::SSM::Document the app creates, with only parameter keys its Content declares, every one without a
default, and values from its allowedValues; every quoted option value that starts with `{` or `[` parses
as JSON (not `--query`, `--query-string` or `--filter-pattern`, which are not JSON), and an App Mesh route
`--spec` names only virtual nodes of the App Mesh variant.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.assembly import REPO_ROOT, Assembly, cdk_json_context, template_text

RUNBOOKS = REPO_ROOT / "runbooks"
SECTIONS = ("Detection", "Diagnosis", "Action", "Verification", "Rollback")
VARIANTS = ("dev", "prod", "appmesh", "domain", "strangler")
RUNBOOK = re.compile(r"Runbook: runbooks/([a-z0-9-]+\.md)$")

CONTEXT = cdk_json_context()
PREFIX = CONTEXT["prefix"]
PLACEHOLDERS = {
    "prefix": [PREFIX],
    "region": [region["name"] for region in CONTEXT["regions"]],
    "service": list(CONTEXT["services"]),
}

# The shell variables the runbooks' commands use for a region or a service, as placeholders.
SHELL_VARIABLES = {"R": "region", "REGION": "region", "SERVICE": "service"}
SHELL_VARIABLE = re.compile(r"\$\{?(R|REGION|SERVICE)\b\}?")

# The template properties that hold a resource's name, at any depth (AWS::XRay::SamplingRule nests its
# RuleName, for example). A metric namespace (`mf/logs`) counts as a name too.
NAME_KEYS = {
    "AlarmName", "BudgetName", "ClusterName", "DashboardName", "DocumentName", "EventBusName", "FunctionName",
    "LogGroupName", "MeshName", "MetricNamespace", "Name", "Namespace", "QueueName", "RepositoryName", "RuleName", "ServiceName",
    "StateMachineName", "TableName", "TopicName", "VirtualRouterName", "RouteName", "VirtualNodeName",
}
NAME_SPAN = re.compile(rf"^(/aws/[a-z-]+/)?/?(<prefix>|{PREFIX})[-/][A-Za-z0-9<>|/._ -]+$")
NAME_OPTIONS = re.compile(
    r"--(?:stack-name|name|queue-name|document-name|log-group-name|secret-id|repository-name|cluster"
    r"|mesh-name|function-name|table-name|state-machine-name|dashboard-name|rule|topic-name|budget-name"
    r"|virtual-router-name|route-name|virtual-node-name)"
    r"[ =]+['\"]?([^\s'\"\\]+)")
# Options that name one kind of thing, by the AWS CLI service of their command, and those that take a list.
KIND_OPTIONS = {
    ("ecs", "service"): "ecs service", ("ecs", "services"): "ecs service", ("ecs", "service-name"): "ecs service",
    ("servicediscovery", "service-name"): "cloud map service",
    ("application-autoscaling", "resource-id"): "scalable target", ("application-autoscaling", "resource-ids"): "scalable target",
    ("cloudwatch", "alarm-names"): "alarm", ("cloudwatch", "alarm-name-prefix"): "alarm prefix",
    ("cloudwatch", "namespace"): "namespace", ("cloudwatch", "metric-name"): "metric",
}
LIST_OPTIONS = {"services", "resource-ids", "alarm-names"}
VALUE = r"(?:<[^<>\n]+>|[^\s'\"\\`|;&<>()=])+"  # a word; a <placeholder> may hold spaces
KIND_OPTION = re.compile(rf"--({'|'.join(sorted({option for _, option in KIND_OPTIONS}))})"
                         rf"((?:[ \t=]+['\"]?(?![-#]){VALUE}['\"]?)+)")
AWS_COMMAND = re.compile(r"\baws\s+([a-z0-9-]+)")
NAMESPACE_OPTION = re.compile(rf"--namespace[ =]+['\"]?({VALUE})")
OUTPUT = re.compile(r"\boutputs?\s+`([A-Za-z][A-Za-z0-9]+)`|`([A-Za-z][A-Za-z0-9]+)`\s+outputs?\b|OutputKey=='([A-Za-z0-9]+)'")
FENCED = re.compile(r"```.*?```", re.DOTALL)
INLINE = re.compile(r"`([^`\n]+)`")
PLACEHOLDER = re.compile(r"<([^<>]+)>")

# Names a runbook cites on purpose although no template of this app holds them, and why.
NOT_IN_TEMPLATES: dict[str, str] = {}


def runbook_files() -> list[Path]:
    return sorted(path for path in RUNBOOKS.glob("*.md") if path.name != "README.md")


def _expansions(text: str) -> list[str]:
    """``text`` with every placeholder replaced, in every combination; [] when a placeholder is unknown."""
    parts = PLACEHOLDER.split(SHELL_VARIABLE.sub(lambda match: f"<{SHELL_VARIABLES[match.group(1)]}>", text))  # literal, name, literal, name, ...
    choices = []
    for index, part in enumerate(parts):
        if index % 2 == 0:
            choices.append([part])
        elif part in PLACEHOLDERS:
            choices.append(PLACEHOLDERS[part])
        elif "|" in part:
            choices.append(part.split("|"))
        else:
            return []
    return ["".join(combination) for combination in itertools.product(*choices)]


def _pattern(text: str) -> re.Pattern[str]:
    """A cited name as a regular expression: known placeholders as their values, others as any name part."""
    parts = PLACEHOLDER.split(text)
    regex = ""
    for index, part in enumerate(parts):
        if index % 2 == 0:
            regex += re.escape(part)
        else:
            values = PLACEHOLDERS.get(part) or (part.split("|") if "|" in part else None)
            regex += f"({'|'.join(map(re.escape, values))})" if values else "[A-Za-z0-9-]+"
    return re.compile(f"^{regex}$")


def _command_start(markdown: str, position: int) -> tuple[int, str | None]:
    """(offset, AWS CLI service) of the command an option at ``position`` belongs to: the last `aws <service>` before it."""
    commands = list(AWS_COMMAND.finditer(markdown, 0, position))
    return (commands[-1].start(), commands[-1].group(1)) if commands else (0, None)


def citations(markdown: str) -> Iterator[tuple[str, str]]:
    """(kind, cited text) for every citation in a runbook: kind "name", "output", or one of KIND_OPTIONS'
    ("metric" as "<namespace> <metric name>")."""
    for match in OUTPUT.finditer(markdown):
        yield "output", next(group for group in match.groups() if group)
    for match in NAME_OPTIONS.finditer(markdown):
        yield "name", match.group(1)
    for match in KIND_OPTION.finditer(markdown):
        start, service = _command_start(markdown, match.start())
        kind, values = KIND_OPTIONS.get((service, match.group(1))), re.findall(VALUE, match.group(2))
        for value in values if match.group(1) in LIST_OPTIONS else values[:1]:
            if kind == "metric":  # of the namespace given before it in the same command, if it is the app's
                namespaces = NAMESPACE_OPTION.findall(markdown, start, match.start())
                if namespaces and namespaces[-1].startswith((f"{PREFIX}/", "<prefix>/")):
                    yield kind, f"{namespaces[-1]} {value}"
            elif kind:
                yield kind, value
    for span in INLINE.findall(FENCED.sub("", markdown)):
        if NAME_SPAN.match(span.strip()):
            yield "name", span.strip()


def sections(markdown: str) -> list[str]:
    return re.findall(r"^## (.+?)\s*$", markdown, re.MULTILINE)


def section(markdown: str, title: str) -> str:
    match = re.search(rf"^## {title}\s*$(.*?)(?=^## |\Z)", markdown, re.MULTILINE | re.DOTALL)
    return match.group(1) if match else ""


def _names_in(value: Any, key: str | None = None) -> Iterator[str]:
    if isinstance(value, dict):
        for child_key, child in value.items():
            yield from _names_in(child, child_key)
    elif isinstance(value, list):
        for child in value:
            yield from _names_in(child, key)
    elif isinstance(value, str) and key in NAME_KEYS:
        yield value


# The resources whose name (resolved, see _resolved) a kind of KIND_OPTIONS must be.
KIND_RESOURCES = {
    "AWS::ECS::Service": ("ecs service", "ServiceName"),
    "AWS::ServiceDiscovery::Service": ("cloud map service", "Name"),
    "AWS::ApplicationAutoScaling::ScalableTarget": ("scalable target", "ResourceId"),
    "AWS::CloudWatch::Alarm": ("alarm", "AlarmName"),
    "AWS::CloudWatch::CompositeAlarm": ("alarm", "AlarmName"),
}
# The resource types whose Ref is their name, with the property that holds it. For most types Ref is an ARN
# or an ID (an ECS service's is its ARN, a Cloud Map service's its ID).
NAME_REFS = {"AWS::ECS::Cluster": "ClusterName"}
# The namespace AWS publishes a resource type's metrics under, by type prefix, for the AWS namespaces the
# runbooks cite: AWS's names do not follow the types' (no AWS/IAM or AWS/ElasticLoadBalancingV2). The app's
# load balancers are all application load balancers.
AWS_NAMESPACES = {
    "AWS::CloudFront": "AWS/CloudFront", "AWS::DynamoDB": "AWS/DynamoDB", "AWS::ECS": "AWS/ECS", "AWS::Lambda": "AWS/Lambda",
    "AWS::ElasticLoadBalancingV2": "AWS/ApplicationELB", "AWS::Route53": "AWS/Route53", "AWS::SQS": "AWS/SQS",
}
# A dashboard's metrics, in its body: ["mf/services","rpc.server.duration",...] and SEARCH('{AWS/X,...} MetricName="Y"').
DASHBOARD_METRIC = re.compile(r'\["([A-Za-z]+/[A-Za-z0-9/_.-]+)","([^"]+)"')
DASHBOARD_SEARCH = re.compile(r'\{([A-Za-z]+/[A-Za-z0-9/_.-]+),[^}]*\}\s*MetricName=\\"([^"\\]+)')


def _resolved(assembly: Assembly, stack_path: str, value: Any) -> str | None:
    """A template value as the text it stands for: a string; an Fn::Join of such; a Ref of a resource of
    NAME_REFS or an `Fn::GetAtt [id, Name]`, as its name property (resolved in turn); an Fn::GetStackOutput,
    as that output's value. None for anything else (an ARN, an ID, a pseudo parameter)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, dict) or len(value) != 1:
        return None
    (function, argument), = value.items()
    if function == "Fn::Join":
        parts = [_resolved(assembly, stack_path, part) for part in argument[1]]
        return None if None in parts else argument[0].join(parts)
    if function == "Ref" or (function == "Fn::GetAtt" and argument[1] == "Name"):
        resource = assembly.templates[stack_path]["Resources"].get(argument if function == "Ref" else argument[0], {})
        properties = resource.get("Properties", {})
        if function == "Ref":
            return _resolved(assembly, stack_path, properties.get(NAME_REFS.get(resource.get("Type"), "")))
        return _resolved(assembly, stack_path, next((name for key, name in properties.items() if key in NAME_KEYS), None))
    if function == "Fn::GetStackOutput":
        producer = next((path for path, artifact in assembly.stack_artifacts.items()
                         if artifact["properties"].get("stackName") == argument["StackName"]), None)
        output = assembly.templates[producer].get("Outputs", {}).get(argument["OutputName"]) if producer else None
        return _resolved(assembly, producer, output["Value"]) if output else None
    return None


def _metrics_in(resource: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(namespace, metric name) of every metric an alarm, a metric filter or a dashboard uses."""
    properties = resource.get("Properties", {})
    if resource["Type"] == "AWS::CloudWatch::Alarm":
        metrics = [properties, *(query.get("MetricStat", {}).get("Metric", {}) for query in properties.get("Metrics", []))]
        yield from ((metric["Namespace"], metric["MetricName"]) for metric in metrics if "Namespace" in metric)
    elif resource["Type"] == "AWS::Logs::MetricFilter":
        yield from ((metric["MetricNamespace"], metric["MetricName"]) for metric in properties["MetricTransformations"])
    elif resource["Type"] == "AWS::CloudWatch::Dashboard":
        body = template_text(properties["DashboardBody"])
        yield from DASHBOARD_METRIC.findall(body)
        yield from DASHBOARD_SEARCH.findall(body)


def _app_names(assembly: Assembly) -> dict[str, set[str]]:
    """Kind -> the names of that kind one synthesized variant has: "name" (resource, stack and metric
    namespace names), "output" (output keys) and the kinds of KIND_OPTIONS."""
    names: dict[str, set[str]] = {kind: set() for kind in ("name", "output", *KIND_OPTIONS.values())}
    for stack_path, template in assembly.templates.items():
        names["name"].add(stack_path)
        names["name"].add(assembly.stack_artifacts[stack_path]["properties"].get("stackName", ""))
        names["output"].update(template.get("Outputs", {}))
        for resource in template["Resources"].values():
            names["name"].update(_names_in(resource.get("Properties", {})))
            if resource["Type"] in KIND_RESOURCES:
                kind, key = KIND_RESOURCES[resource["Type"]]
                name = _resolved(assembly, stack_path, resource["Properties"].get(key))
                if name is not None:
                    names[kind].add(name)
            for namespace, metric in _metrics_in(resource):
                names["namespace"].add(namespace)
                names["metric"].add(f"{namespace} {metric}")
            aws_namespace = AWS_NAMESPACES.get("::".join(resource["Type"].split("::")[:2]))
            if aws_namespace:  # AWS publishes the resource's metrics there
                names["namespace"].add(aws_namespace)
    return names


@pytest.fixture(scope="module")
def app_names(request) -> dict[str, set[str]]:
    """Kind -> every name of that kind of every variant (see _app_names)."""
    names: dict[str, set[str]] = {}
    for variant in VARIANTS:
        for kind, variant_names in _app_names(request.getfixturevalue(variant)).items():
            names.setdefault(kind, set()).update(variant_names)
    return names


def test_the_matcher_finds_names_options_and_outputs():
    """The citation matcher itself, on the forms the module docstring promises (and what it skips)."""
    text = ("Alarm `<prefix>-<service>-5xx-rate`, queue `mf-persona-events-dlq`, see `cdk.json`, output "
            "`RegionHealthCheckId`, `DistributionId` output, `mf-$R-services`, `<prefix>-<ecs service>-x`.\n"
            "```sh\naws ssm get-parameter --name /mf/ingress/load-balancer-arn\n"
            "aws cloudformation describe-stacks --stack-name mf-edge-edge --query \"Stacks[0].Outputs[?OutputKey=='KeyValueStoreArn']\"\n"
            "`mf-ignored-inside-code`\n```\n")
    found = set(citations(text))
    assert {("name", "<prefix>-<service>-5xx-rate"), ("name", "mf-persona-events-dlq"), ("output", "RegionHealthCheckId"),
            ("output", "DistributionId"), ("output", "KeyValueStoreArn"), ("name", "/mf/ingress/load-balancer-arn"),
            ("name", "mf-edge-edge")} <= found
    assert ("name", "mf-ignored-inside-code") not in found and not any(text == "cdk.json" for _, text in found)
    assert _expansions("mf-<region>-<service>-group<0|1>-empty")[:2] == [
        "mf-eu-central-1-auth-group0-empty", "mf-eu-central-1-auth-group1-empty"]
    assert _expansions("mf-$R-services") == ["mf-eu-central-1-services", "mf-eu-west-1-services"]
    assert _expansions("$LG") == ["$LG"] and _expansions("<prefix>-<ecs service>-x") == []
    assert _pattern("<prefix>-quota-<name>").match("mf-quota-fargate-spot-vcpu")


def test_the_matcher_reads_each_option_by_the_aws_service_of_its_command():
    """Every value of a list option, a kind by the command's service, a metric with its command's namespace."""
    text = ("```sh\naws ecs describe-services --cluster mf --services auth <service>-canary \\\n  --query 'services[0]'\n"
            "aws ecs list-tasks --service-name=\"$SERVICE\" --desired-status STOPPED\n"
            "aws application-autoscaling describe-scalable-targets --service-namespace ecs --resource-ids service/mf/<service>\n"
            "aws cloudwatch get-metric-statistics --namespace mf/services --metric-name http.server.request.duration\n"
            "aws cloudwatch get-metric-statistics --namespace AWS/Route53 --metric-name HealthCheckStatus\n"
            "aws service-quotas get-service-quota --service-code fargate --quota-code L-3032A538\n"
            "aws vpc-lattice get-service --service svc-0123\n```\n"
            "Then `aws cloudwatch describe-alarms --alarm-name-prefix mf-$R- --alarm-names mf-a mf-b`, or the same with\n"
            "`--namespace mf/logs --metric-name ErrorLogLines`.\n")
    assert [citation for citation in citations(text) if citation[0] != "name"] == [
        ("ecs service", "auth"), ("ecs service", "<service>-canary"), ("ecs service", "$SERVICE"),
        ("scalable target", "service/mf/<service>"), ("namespace", "mf/services"),
        ("metric", "mf/services http.server.request.duration"), ("namespace", "AWS/Route53"),
        ("alarm prefix", "mf-$R-"), ("alarm", "mf-a"), ("alarm", "mf-b"),
        ("namespace", "mf/logs"), ("metric", "mf/logs ErrorLogLines")]


def test_a_ref_stands_for_a_name_only_where_cloudformation_returns_the_name():
    """Ref of an ECS cluster is its name, of an ECS service its ARN, of a Cloud Map service its ID; a name
    property may itself be an intrinsic function."""
    assembly = Assembly(outdir=Path("."), templates={"stack": {"Resources": {
        "Cluster": {"Type": "AWS::ECS::Cluster", "Properties": {"ClusterName": {"Fn::Join": ["-", ["mf", "main"]]}}},
        "Service": {"Type": "AWS::ECS::Service", "Properties": {"ServiceName": "auth"}},
        "Discovery": {"Type": "AWS::ServiceDiscovery::Service", "Properties": {"Name": "auth"}}}}})
    scalable_target = {"Fn::Join": ["/", ["service", {"Ref": "Cluster"}, {"Fn::GetAtt": ["Service", "Name"]}]]}
    assert _resolved(assembly, "stack", scalable_target) == "service/mf-main/auth"
    assert _resolved(assembly, "stack", {"Ref": "Service"}) is None and _resolved(assembly, "stack", {"Ref": "Discovery"}) is None


@pytest.mark.parametrize("runbook", runbook_files(), ids=lambda path: path.name)
def test_every_runbook_has_the_five_sections_in_order(runbook):
    found = [title for title in sections(runbook.read_text()) if title in SECTIONS]
    assert found == list(SECTIONS), f"{runbook.name}: sections {sections(runbook.read_text())}"
    for title in SECTIONS:
        assert section(runbook.read_text(), title).strip(), f"{runbook.name}: empty section {title}"


# servicekit's JSON logs carry Python's level names (record.levelname): Logs Insights compares strings exactly.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LEVEL_FILTER = re.compile(r"""\blevel\s*(?:in\s*\[([^\]]*)\]|=\s*"([^"]*)")""")


def test_every_log_level_a_runbook_query_filters_on_is_one_the_services_write():
    """A query for `level in ["error"]` finds nothing in logs that say "ERROR": the on-call engineer sees no errors."""
    filtered = []
    for runbook in runbook_files():
        for listed, single in LEVEL_FILTER.findall(runbook.read_text()):
            filtered += [(runbook.name, level) for level in (re.findall(r'"([^"]*)"', listed) if listed else [single])]
    assert len({name for name, _ in filtered}) >= 4  # the readers see the runbooks' queries
    assert [(name, level) for name, level in filtered if level not in LOG_LEVELS] == []


# ---- Diagnosis: the Logs Insights and X-Ray queries (issue 7: "diagnosis (Logs Insights and X-Ray queries)") ----

# A Logs Insights query starts with one of its commands (CloudWatch Logs Insights query syntax).
LOGS_INSIGHTS_QUERY = re.compile(r"^(?:fields|filter|stats|parse|display|dedup|pattern)\s")
# A fenced code block, indented or not (the runbooks indent the ones inside list items): its body.
FENCED_BLOCK = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.DOTALL | re.MULTILINE)
# An X-Ray filter expression written for the console starts with one of its complex keywords or functions.
XRAY_CONSOLE_FILTER = re.compile(r"^!?(?:service|edge|id|traceId)\(")
QUOTED_OPTION = r"--{}[ =]+(?:'([^']*)'|\"((?:\\.|[^\"\\])*)\")"
# Runbooks whose Diagnosis needs no Logs Insights or no X-Ray query, and why. None: every one of them, the
# operations too, ends in requests the services answer (traced, and logged by servicekit) or in a function
# or an experiment whose log tells what it did (see the test below).
DIAGNOSIS_WITHOUT_QUERIES: dict[str, str] = {}


def _option_values(markdown: str, command: str, option: str) -> list[str]:
    """The quoted values of ``--option`` in every ``aws <command>`` of ``markdown`` (to the command's end)."""
    values = []
    for match in re.finditer(rf"\baws\s+{command}\b", markdown):
        for single, double in re.findall(QUOTED_OPTION.format(option), _command_text(markdown, match.start())):
            values.append(single if single or not double else re.sub(r"\\(.)", r"\1", double))
    return values


def logs_insights_queries(markdown: str) -> list[str]:
    """The Logs Insights queries of ``markdown``: fenced blocks that are one (to paste into the console), then
    the ``--query-string`` of every ``aws logs start-query``."""
    blocks = [textwrap.dedent(body).strip() for body in FENCED_BLOCK.findall(markdown)]
    return ([block for block in blocks if LOGS_INSIGHTS_QUERY.match(block)]
            + [query.strip() for query in _option_values(markdown, r"logs\s+start-query", "query-string")])


def xray_filter_expressions(markdown: str) -> list[str]:
    """The X-Ray filter expressions of ``markdown``: the ``--filter-expression`` of every ``aws xray
    get-trace-summaries`` (not DynamoDB's option of the same name), then inline spans written for the console."""
    spans = [span.strip() for span in INLINE.findall(FENCED.sub("", markdown))]
    return (_option_values(markdown, r"xray\s+get-trace-summaries", "filter-expression")
            + [span for span in spans if XRAY_CONSOLE_FILTER.match(span)])


def test_the_query_readers_find_logs_insights_queries_and_xray_filter_expressions_in_each_form():
    text = ("   ```\n   fields @timestamp, message\n   | filter level = \"ERROR\"\n   ```\n"
            "```sh\nQ=$(aws logs start-query --log-group-names a --start-time 1 --end-time 2 \\\n"
            "  --query-string 'stats count(*) by bin(1m)' --query queryId --output text)\n"
            "aws xray get-trace-summaries --start-time 1 --end-time 2 \\\n"
            "  --filter-expression 'service(\"auth\") AND fault = true' --query TraceSummaries\n"
            "aws dynamodb scan --table-name t --filter-expression 'a = :b'\n"
            "aws logs filter-log-events --log-group-name g --filter-pattern ERROR\n"
            "filter_by=x\n```\n"
            "In the console: `edge(\"persona\", \"auth\") { fault = true }`; not queries: `service`, `fields`.\n")
    assert logs_insights_queries(text) == ['fields @timestamp, message\n| filter level = "ERROR"', "stats count(*) by bin(1m)"]
    assert xray_filter_expressions(text) == ['service("auth") AND fault = true', 'edge("persona", "auth") { fault = true }']
    assert logs_insights_queries("```sh\naws logs tail /aws/x --filter-pattern ERROR\n```\n") == []


@pytest.mark.parametrize("runbook", runbook_files(), ids=lambda path: path.name)
def test_every_runbook_diagnosis_gives_a_logs_insights_query_and_an_xray_filter_expression(runbook):
    """Issue 7: each runbook has "diagnosis (Logs Insights and X-Ray queries)", written out in its own Diagnosis
    section (a link to another runbook's queries makes the on-call engineer leave the page at the worst time).

    No runbook is exempt (DIAGNOSIS_WITHOUT_QUERIES is empty). The alarm families end in requests the services
    answer, which servicekit logs and the ADOT sidecar traces; the operations too: a migration from App Mesh to
    Service Connect or a strangler-fig shift moves real traffic (access lines and traces before and after the
    move), a chaos experiment or a disaster-recovery drill is judged by what the callers saw, and the region
    failover's switch is a function whose log records every move, beside the services' answers per region.
    """
    if runbook.name in DIAGNOSIS_WITHOUT_QUERIES:
        pytest.skip(DIAGNOSIS_WITHOUT_QUERIES[runbook.name])
    diagnosis = section(runbook.read_text(), "Diagnosis")
    missing = [kind for kind, found in (("Logs Insights query", logs_insights_queries(diagnosis)),
                                        ("X-Ray filter expression", xray_filter_expressions(diagnosis))) if not found]
    assert not missing, f"{runbook.name}: its Diagnosis section gives no {' and no '.join(missing)}"


def test_the_runbooks_readme_lists_every_runbook():
    readme = (RUNBOOKS / "README.md").read_text()
    assert [path.name for path in runbook_files() if f"]({path.name})" not in readme] == []


def _exists(kind: str, text: str, names: dict[str, set[str]]) -> bool:
    """Whether the app has ``text`` as a name of ``kind`` (an alarm prefix: starts an alarm's name)."""
    if kind == "alarm prefix":
        return any(alarm.startswith(text) for alarm in names["alarm"])
    return text in names[kind]


def missing_citations(markdown: str, names: dict[str, set[str]]) -> list[str]:
    """The citations of ``markdown`` that no name of their kind matches in any expansion."""
    missing = []
    for kind, cited in citations(markdown):
        if cited in NOT_IN_TEMPLATES:
            continue
        expansions = _expansions(cited)
        if not expansions or any("$" in text or "*" in text for text in expansions):
            continue  # prose or a shell variable, not a citation (module docstring)
        if not any(_exists(kind, text, names) for text in expansions):
            missing.append(f"{kind} {cited}")
    return missing


def test_a_name_or_output_the_app_does_not_create_is_reported(app_names):
    text = ("Alarm `mf-<service>-5xx-rate`, queue `mf-<service>-events-dlq` (only some services have one), "
            "`mf-<service>-events-dlq-typo`, parameter `/mf/ingress/no-such-parameter`, output `NoSuchOutput`, "
            "output `KeyValueStoreArn`.\n```sh\naws ssm start-automation-execution --document-name mf-rollback-servic\n"
            "aws ecs update-service --cluster mf --service <service>-canry --desired-count 1\n"
            "aws ecs describe-services --cluster mf --services auth <service>-canary vc-strat\n"
            "aws ecs list-tasks --cluster mf --service-name persnoa\n"
            "aws servicediscovery discover-instances --namespace-name svc.local --service-name vc-strat\n"
            "aws application-autoscaling register-scalable-target --service-namespace ecs --resource-id service/mf/persnoa\n"
            "aws application-autoscaling describe-scalable-targets --service-namespace ecs --resource-ids service/mf/<service>-canary\n"
            "aws cloudwatch describe-alarms --alarm-name-prefix mf-<service>-canery- --alarm-names mf-persona-slo mf-servics-slo\n"
            "aws cloudwatch describe-alarms --alarm-name-prefix mf-$R-\n"
            "aws cloudwatch get-metric-statistics --namespace mf/servces --metric-name rpc.server.duration\n"
            "aws cloudwatch get-metric-statistics --namespace mf/services --metric-name http.server.request.duraton\n"
            "aws cloudwatch get-metric-statistics --namespace AWS/DynamoDB --metric-name ReplicationLatency\n"
            "aws cloudwatch get-metric-statistics --namespace AWS/DynamoBD --metric-name ReplicationLatency\n"
            "aws cloudwatch get-metric-statistics --namespace AWS/ApplicationELB --metric-name HealthyHostCount\n"
            "aws cloudwatch get-metric-statistics --namespace AWS/ElasticLoadBalancingV2 --metric-name HealthyHostCount\n```\n")
    assert missing_citations(text, app_names) == [
        "output NoSuchOutput", "name mf-rollback-servic",
        "ecs service <service>-canry", "ecs service vc-strat", "ecs service persnoa", "cloud map service vc-strat",
        "scalable target service/mf/persnoa", "scalable target service/mf/<service>-canary",  # no canary scales
        "alarm prefix mf-<service>-canery-", "alarm mf-servics-slo", "namespace mf/servces",
        "metric mf/servces rpc.server.duration", "metric mf/services http.server.request.duraton", "namespace AWS/DynamoBD",
        "namespace AWS/ElasticLoadBalancingV2",  # the resource type's name, not AWS's namespace
        "name mf-<service>-events-dlq-typo", "name /mf/ingress/no-such-parameter"]


@pytest.mark.parametrize("runbook", runbook_files(), ids=lambda path: path.name)
def test_every_name_and_output_a_runbook_cites_exists_in_the_templates(runbook, app_names):
    missing = missing_citations(runbook.read_text(), app_names)
    assert not missing, f"{runbook.name} cites what no template of any variant has: {missing}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_runbook_an_alarm_names_lists_that_alarm_in_its_detection_section(request, variant):
    """An on-call engineer paged by an alarm finds it, by name or name pattern, where the alarm sends them."""
    assembly: Assembly = request.getfixturevalue(variant)
    unlisted = []
    for stack, _, resource in assembly.all_resources():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        alarm = resource["Properties"]
        name, runbook = alarm["AlarmName"], RUNBOOK.search(alarm["AlarmDescription"]).group(1)
        detection = section((RUNBOOKS / runbook).read_text(), "Detection")
        if not any(_pattern(span).match(name) for span in INLINE.findall(FENCED.sub("", detection))):
            unlisted.append(f"{stack} {name} -> {runbook}")
    assert not unlisted, "alarms their runbook's Detection section does not list:\n" + "\n".join(unlisted)


def test_the_automation_documents_the_runbooks_run_exist_in_every_region(dev):
    """The rollback and failover documents the runbooks start by name (`aws ssm start-automation-execution`)."""
    documents = {stack: {d["Properties"]["Name"] for d in dev.resources(stack, "AWS::SSM::Document").values()}
                 for stack in dev.templates}
    for region in PLACEHOLDERS["region"]:
        assert f"{PREFIX}-rollback-service" in documents[f"{PREFIX}-{region}/services"]
    assert f"{PREFIX}-region-failover" in documents[f"{PREFIX}-edge/edge"]
    cited = "".join(path.read_text() for path in runbook_files())
    assert f"--document-name {PREFIX}-rollback-service" in cited and f"--document-name {PREFIX}-region-failover" in cited


# ---- Commands a runbook gives to run: Automation documents and their parameters, inline JSON ----

START_AUTOMATION = re.compile(r"aws\s+ssm\s+start-automation-execution\b")  # a line may break inside
# Options whose value is not JSON although it may start with { or [: JMESPath, Logs Insights, metric filters.
NOT_JSON_OPTIONS = frozenset({"query", "query-string", "filter-pattern"})
# An option with a quoted value that starts like JSON: --spec '{...}', --item "{\"pk\": ...}".
JSON_OPTION = re.compile(r"--([a-z][a-z0-9-]*)[ =]+(?:'([{\[][^']*)'|\"([{\[](?:\\.|[^\"\\])*)\")")
SHELL_EXPANSION = re.compile(r"\$(?:\([^)]*\)|\{[A-Za-z_]+\}|[A-Za-z_]+)")
ROUTE_KINDS = ("httpRoute", "http2Route", "grpcRoute", "tcpRoute")


def command_files() -> list[Path]:
    """Every document that shows commands to copy: the runbooks and their README (which shows the Automation
    commands too), the top README (set-up and clean-up), the pipeline's and each construct's README."""
    return [*runbook_files(), RUNBOOKS / "README.md", REPO_ROOT / "README.md", REPO_ROOT / "pipelines" / "README.md",
            *sorted(REPO_ROOT.glob("constructs/*/README.md"))]


def command_file_id(path: Path) -> str:
    """``path`` relative to the repository, as the tests over ``command_files`` name it."""
    return str(path.relative_to(REPO_ROOT))


def _command_text(markdown: str, start: int) -> str:
    """The command that starts at ``start``: to the closing backtick of an inline code span, or in a code
    block to the end of the line, following ``\\`` continuations."""
    in_block = markdown[:start].count("```") % 2 == 1
    if not in_block:  # an inline span may wrap lines; a command in bare prose ends with its paragraph
        ends = [end for end in (markdown.find("`", start), markdown.find("\n\n", start), len(markdown)) if end >= 0]
        return markdown[start:min(ends)]
    end = start
    while True:
        end = markdown.index("\n", end)
        if not markdown[:end].rstrip(" ").endswith("\\"):
            return markdown[start:end].replace("\\\n", " ")
        end += 1


def automation_commands(markdown: str) -> Iterator[tuple[str | None, dict[str, str] | None]]:
    """(document name, {parameter: value}) of every `aws ssm start-automation-execution` in ``markdown``;
    None for a part the command does not give (or gives in a form that cannot be read)."""
    for match in START_AUTOMATION.finditer(markdown):
        words = shlex.split(_command_text(markdown, match.start()).replace("\n", " "), comments=True)
        options = {word: words[index + 1] for index, word in enumerate(words[:-1]) if word.startswith("--")}
        parameters = options.get("--parameters")
        if parameters is None:
            yield options.get("--document-name"), {}
        elif parameters.startswith("{"):
            try:
                given = json.loads(parameters)  # {"Key": ["value"]}: the API's map of string lists
                yield options.get("--document-name"), {key: ",".join(map(str, value)) if isinstance(value, list) else str(value)
                                                       for key, value in given.items()}
            except ValueError:
                yield options.get("--document-name"), None
        else:  # shorthand: Key=value,Key2=value
            pairs = [pair.split("=", 1) for pair in parameters.split(",")]
            yield options.get("--document-name"), dict(pairs) if all(len(pair) == 2 for pair in pairs) else None


def _documents(assembly: Assembly) -> dict[str, dict[str, dict[str, Any]]]:
    """Automation document name -> its declared parameters, from the templates' AWS::SSM::Document content."""
    return {resource["Properties"]["Name"]: resource["Properties"]["Content"].get("parameters", {})
            for _, _, resource in assembly.all_resources()
            if resource["Type"] == "AWS::SSM::Document" and isinstance(resource["Properties"].get("Name"), str)}


@pytest.fixture(scope="module")
def automation_documents(request) -> dict[str, dict[str, dict[str, Any]]]:
    documents: dict[str, dict[str, dict[str, Any]]] = {}
    for variant in VARIANTS:
        documents.update(_documents(request.getfixturevalue(variant)))
    return documents


def automation_problems(markdown: str, documents: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """What is wrong with the Automation commands of ``markdown``: an unknown document, an undeclared
    parameter, a required parameter (no default) left out, or a value the document does not allow."""
    problems = []
    for document, given in automation_commands(markdown):
        if document is None or document not in documents:
            problems.append(f"document {document}")
            continue
        if given is None:
            problems.append(f"{document}: unreadable --parameters")
            continue
        declared = documents[document]
        problems += [f"{document}: undeclared parameter {key}" for key in given if key not in declared]
        problems += [f"{document}: required parameter {key} not given"
                     for key, spec in declared.items() if "default" not in spec and key not in given]
        for key, value in given.items():
            allowed = declared.get(key, {}).get("allowedValues")
            values = _expansions(value)
            if allowed and values and not any("$" in text for text in values):
                problems += [f"{document}: {key}={text} not in {allowed}" for text in values if text not in allowed]
    return problems


def inline_json(markdown: str) -> Iterator[tuple[str, str, Any]]:
    """(option, the value as given, the parsed value or the ValueError) for every JSON-looking quoted value
    given to a command option. Shell expansions in double quotes (`$K`, `$(date ...)`) stand in as strings."""
    for match in JSON_OPTION.finditer(markdown):
        option, single, double = match.groups()
        if option in NOT_JSON_OPTIONS:
            continue
        text = single if single is not None else re.sub(r"\\(.)", r"\1", SHELL_EXPANSION.sub("x", double))
        try:
            yield option, text, json.loads(text)
        except ValueError as error:
            yield option, text, error


def json_problems(markdown: str, virtual_nodes: set[str]) -> list[str]:
    """Inline JSON that does not parse, and App Mesh route specs that send traffic to a virtual node the
    App Mesh variant does not create (for every service a `<service>` placeholder stands for)."""
    problems = []
    for option, text, value in inline_json(markdown):
        if isinstance(value, ValueError):
            problems.append(f"--{option}: not JSON ({value}): {text[:60]}")
            continue
        if option != "spec" or not isinstance(value, dict):
            continue
        for kind in ROUTE_KINDS:
            for target in value.get(kind, {}).get("action", {}).get("weightedTargets", []):
                nodes = _expansions(target.get("virtualNode", ""))
                if not nodes or any(node not in virtual_nodes for node in nodes):
                    problems.append(f"--spec {kind}: virtual node {target.get('virtualNode')}")
    return problems


@pytest.fixture(scope="module")
def virtual_nodes(appmesh) -> set[str]:
    return {resource["Properties"]["VirtualNodeName"] for _, _, resource in appmesh.all_resources()
            if resource["Type"] == "AWS::AppMesh::VirtualNode"}


def test_the_command_readers_find_documents_parameters_and_inline_json():
    text = ("Run `aws ssm\nstart-automation-execution  --region <region> --document-name mf-rollback-service "
            "--parameters ServiceName=<service>`.\n```sh\nE=$(aws ssm start-automation-execution --document-name mf-region-failover \\\n"
            "  --parameters '{\"TargetRegion\": [\"eu-west-1\"]}' --query AutomationExecutionId --output text)\n"
            "aws ssm start-automation-execution --document-name mf-rollback-service  # ServiceName=persona\n"
            "aws dynamodb put-item --item \"{\\\"pk\\\":{\\\"S\\\":\\\"$K\\\"}}\" --query '{a:b}'\n```\n")
    assert list(automation_commands(text)) == [
        ("mf-rollback-service", {"ServiceName": "<service>"}), ("mf-region-failover", {"TargetRegion": "eu-west-1"}),
        ("mf-rollback-service", {})]
    assert [(option, value) for option, _, value in inline_json(text)] == [
        ("parameters", {"TargetRegion": ["eu-west-1"]}), ("item", {"pk": {"S": "x"}})]  # not --query's JMESPath


def test_an_unknown_document_undeclared_or_missing_parameter_or_disallowed_value_is_reported(automation_documents):
    text = ("```sh\naws ssm start-automation-execution --document-name mf-rollback-servic --parameters ServiceName=auth\n"
            "aws ssm start-automation-execution --document-name mf-rollback-service --parameters Service=auth\n"
            "aws ssm start-automation-execution --document-name mf-region-failover --parameters TargetRegion=us-east-1\n"
            "aws ssm start-automation-execution --document-name mf-rollback-service --parameters ServiceName=<service>,Revision=3\n```\n")
    assert automation_problems(text, automation_documents) == [
        "document mf-rollback-servic",
        "mf-rollback-service: undeclared parameter Service",
        "mf-rollback-service: required parameter ServiceName not given",
        "mf-region-failover: TargetRegion=us-east-1 not in ['eu-central-1', 'eu-west-1']",
    ]


@pytest.mark.parametrize("path", command_files(), ids=command_file_id)
def test_every_automation_command_names_a_document_and_parameters_the_app_declares(path, automation_documents):
    problems = automation_problems(path.read_text(), automation_documents)
    assert not problems, f"{command_file_id(path)}: {problems}"


def test_json_that_does_not_parse_or_a_route_to_a_missing_virtual_node_is_reported(virtual_nodes):
    text = ("```sh\naws appmesh update-route --spec '{\"httpRoute\": {\"action\": {\"weightedTargets\": [\n"
            "  {\"virtualNode\": \"<service>-primary\", \"weight\": 100}, {\"virtualNode\": \"<service>-blue\", \"weight\": 0}]}}}'\n"
            "aws stepfunctions start-execution --input '{\"release\": \"v1\",}'\n"
            "aws logs filter-log-events --filter-pattern '{ $.level = \"ERROR\" }'\n```\n")
    problems = json_problems(text, virtual_nodes)
    assert problems[0] == "--spec httpRoute: virtual node <service>-blue"
    assert len(problems) == 2 and problems[1].startswith("--input: not JSON")


@pytest.mark.parametrize("path", command_files(), ids=command_file_id)
def test_every_inline_json_parses_and_every_route_spec_names_virtual_nodes_that_exist(path, virtual_nodes):
    problems = json_problems(path.read_text(), virtual_nodes)
    assert not problems, f"{command_file_id(path)}: {problems}"


def test_the_readers_see_the_route_specs_and_automation_commands_the_runbooks_hold():
    """The checks above pass because they look, not because they find nothing."""
    text = "".join(path.read_text() for path in command_files())
    specs = [value for option, _, value in inline_json(text) if option == "spec" and isinstance(value, dict)]
    assert {kind for spec in specs for kind in spec} >= {"httpRoute", "grpcRoute"}
    documents = {document for document, _ in automation_commands(text)}
    assert documents == {f"{PREFIX}-rollback-service", f"{PREFIX}-region-failover"}
