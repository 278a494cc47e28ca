"""Least privilege across every stack of every variant: no unexplained wildcard, a boundary on every role, and a
boundary that cannot be escaped (evaluated, not only read), plus an IAM Access Analyzer in every region."""

from __future__ import annotations

import fnmatch
import re

import pytest

from tests.assembly import synth

VARIANTS = ("dev", "prod", "appmesh", "domain", "github", "strangler")
EXAMPLE_ACCOUNT = "111122223333"
# Services whose calls keep Resource "*" because they have no resource-level permissions: ECR login, X-Ray, and
# the CloudFront prefix list lookup (ec2). A new one needs its acknowledgment, this list and README's Wildcards.
# ecs, ssm, logs and tag: the AWS FIS experiment roles and the fault-injection sidecar's roles (chaos stack).
# ec2messages and ssmmessages: the fault-injection sidecar's managed-instance role, the SSM agent's message channels
# (Run Command and the control channel), which have no resource-level permissions.
# servicediscovery, servicequotas and cloudwatch: the quota counter's lists, quota reads and PutMetricData (pinned
# to its namespace by cloudwatch:namespace) in the observability stack.
RESOURCE_WILDCARD_SERVICES = {"ecr", "xray", "ec2", "kms", "ecs", "ssm", "ec2messages", "ssmmessages", "logs", "tag", "servicediscovery",
                              "servicequotas", "cloudwatch"}
# Per variant, on top (the App Mesh traffic-shift state machines' log delivery is logs, in the set above).
# Service Connect: the listener rule guard's and the strangler fig's DescribeRules and DescribeTargetHealth (Elastic
# Load Balancing's describe calls have no resource-level permissions); App Mesh shifts no load balancer traffic.
VARIANT_WILDCARD_SERVICES: dict[str, set[str]] = {name: {"elasticloadbalancing"} for name in VARIANTS if name != "appmesh"}


@pytest.fixture(params=VARIANTS)
def variant(request):
    return request.param, request.getfixturevalue(request.param)


def _as_list(value):
    return value if isinstance(value, list) else [value]


def _policy_documents(resource):
    """Every identity policy document a resource carries: AWS::IAM::Policy, ManagedPolicy, a role's inline policies."""
    properties = resource.get("Properties", {})
    if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        yield properties["PolicyDocument"]
    elif resource["Type"] == "AWS::IAM::Role":
        for policy in properties.get("Policies", []):
            yield policy["PolicyDocument"]


def _wildcards(statement):
    """The cdk-nag rule IDs a statement's wildcards raise: AwsSolutions-IAM5[Action::<service>:*] / [Resource::*]."""
    actions = [a for a in _as_list(statement.get("Action", [])) if a == "*" or a.endswith(":*")]
    resources = [r for r in _as_list(statement.get("Resource", [])) if r == "*"]
    return [f"AwsSolutions-IAM5[Action::{a}]" for a in actions] + ["AwsSolutions-IAM5[Resource::*]"] * bool(resources)


def _acknowledged(assembly):
    """(violating resource's construct path, rule) -> reason, from validation-report.json."""
    return {
        (construct["constructPath"], violation["ruleName"]): violation["reason"]
        for report in assembly.validation_report()["pluginReports"]
        for violation in report.get("suppressedViolations", [])
        for construct in violation["violatingConstructs"]
    }


def _boundary_names(assembly):
    return {r["Properties"]["ManagedPolicyName"] for stack, _, r in assembly.all_resources()
            if r["Type"] == "AWS::IAM::ManagedPolicy" and stack.endswith("/baseline")}


def _is_boundary(assembly, resource):
    return resource["Type"] == "AWS::IAM::ManagedPolicy" and resource["Properties"].get("ManagedPolicyName") in _boundary_names(assembly)


def test_no_policy_allows_everything(variant):
    _, assembly = variant
    for stack, logical_id, resource in assembly.all_resources():
        for document in _policy_documents(resource):
            for statement in document["Statement"]:
                if statement["Effect"] == "Allow":
                    assert "*" not in _as_list(statement["Action"]), f"{stack} {logical_id}"
                    assert "NotAction" not in statement and "NotResource" not in statement, f"{stack} {logical_id}"


def test_every_wildcard_is_acknowledged_on_its_own_policy_with_a_reason_that_names_it(variant):
    """A wildcard in an Allow (Deny statements only narrow) must carry a cdk-nag acknowledgment of that exact
    finding on the policy's own resource, whose reason names each service the statement calls."""
    name, assembly = variant
    acknowledged, paths = _acknowledged(assembly), assembly.construct_paths()
    audited = []
    for stack, logical_id, resource in assembly.all_resources():
        path = paths.get((stack, logical_id))
        for document in _policy_documents(resource):
            for statement in document["Statement"]:
                rules = _wildcards(statement)
                if statement["Effect"] != "Allow" or not rules:
                    continue
                assert path, f"{stack} {logical_id}: no construct path to find its acknowledgment by"
                for rule in rules:
                    reason = acknowledged.get((path, rule))
                    assert reason, f"{stack} {logical_id}: {rule} is not acknowledged"
                    assert len(reason) >= 40
                    if _is_boundary(assembly, resource):
                        # A boundary caps; it grants nothing. That is the only reason for a service-wide allow.
                        assert "boundary" in reason.lower() and "ceiling" in reason.lower()
                        continue
                    assert not rule.startswith("AwsSolutions-IAM5[Action::"), f"{stack} {logical_id}: service-wide {rule}"
                    assert "resource-level" in reason, reason
                    said = re.sub(r"[^a-z0-9]", "", reason.lower())
                    for service in {a.split(":")[0] for a in _as_list(statement["Action"])}:
                        assert service.replace("-", "") in said, f"{stack} {logical_id}: the reason does not name {service}"
                    audited.append((stack.split("/")[1], sorted(_as_list(statement["Action"]))))
    assert {action.split(":")[0] for _, actions in audited for action in actions} == RESOURCE_WILDCARD_SERVICES | VARIANT_WILDCARD_SERVICES.get(name, set())


# AWS managed policies attached by ARN: their documents are not in the templates, so the tests that read policy
# documents cannot see them. Each one in use, with what it grants (AWS managed policy reference,
# https://docs.aws.amazon.com/aws-managed-policy/latest/reference/<name>.html), must read no SSM parameter. Not on
# the list on purpose: AmazonSSMManagedInstanceCore (ssm:GetParameter and GetParameters on *, every parameter).
AWS_MANAGED_POLICIES = {
    "service-role/AWSLambdaBasicExecutionRole": "logs: CreateLogGroup, CreateLogStream, PutLogEvents",
    "AmazonECSInfrastructureRolePolicyForLoadBalancers": "elasticloadbalancing: the target groups', listeners' and rules' "
                                                         "reads, RegisterTargets / DeregisterTargets, ModifyListener / ModifyRule",
    "service-role/AmazonECSInfrastructureRolePolicyForServiceConnectTransportLayerSecurity":
        "secretsmanager on ECS's own ecs-sc!* secrets and acm-pca certificates, for Service Connect TLS",
}
PARAMETER_READS = ("ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath")


def _rendered(value):
    """An ARN as text, pseudo parameters as <AWS::...>, for reading a managed policy's name."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return f"<{value['Ref']}>"
    if "Fn::Sub" in value:
        return value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(_rendered(part) for part in parts)
    raise AssertionError(f"cannot read {value}")


def _on_every_parameter(resource):
    text = _rendered(resource)
    return text == "*" or re.search(r":parameter/?\*$", text) is not None


@pytest.mark.parametrize("name", ["dev", "prod", "appmesh", "domain", "github", "strangler", "dev_pipeline", "prod_pipeline"])
def test_no_role_reads_every_ssm_parameter(request, name):
    """ssm:GetParameter(s)/GetParametersByPath on * reads every parameter of the account (service config included):
    no identity policy allows it, and every AWS managed policy attached by ARN is one known to grant no such read.
    Only the boundaries (ceilings, no grant) name ssm:* on *."""
    assembly = request.getfixturevalue(name)
    attached, reads = set(), 0
    for stack, logical_id, resource in assembly.all_resources():
        if resource["Type"] in ("AWS::IAM::Role", "AWS::IAM::User", "AWS::IAM::Group"):
            for arn in resource["Properties"].get("ManagedPolicyArns", []):
                match = re.fullmatch(r"arn:(aws|<AWS::Partition>|\$\{AWS::Partition\}):iam::aws:policy/(.+)", _rendered(arn))
                assert match, f"{stack} {logical_id}: {arn} is attached by ARN and not an AWS managed policy this test knows"
                assert match[2] in AWS_MANAGED_POLICIES, f"{stack} {logical_id}: {match[2]}: name what it grants in AWS_MANAGED_POLICIES"
                attached.add(match[2])
        if _is_boundary(assembly, resource):
            continue
        for document in _policy_documents(resource):
            for statement in document["Statement"]:
                granted = [r for r in PARAMETER_READS
                           if any(fnmatch.fnmatchcase(r.lower(), a.lower()) for a in _as_list(statement["Action"]))]
                if statement["Effect"] == "Allow" and granted:
                    reads += 1
                    assert not any(_on_every_parameter(r) for r in _as_list(statement["Resource"])), f"{stack} {logical_id}: {granted}"
    assert not any("ssm" in grants for grants in AWS_MANAGED_POLICIES.values())
    assert attached and reads, "the test reads what it checks"


def test_boundaries_are_attached_to_no_principal_as_a_grant(variant):
    _, assembly = variant
    for _, _, resource in assembly.all_resources():
        if resource["Type"] in ("AWS::IAM::Role", "AWS::IAM::User", "AWS::IAM::Group"):
            for arn in resource["Properties"].get("ManagedPolicyArns", []):
                assert "permissions-boundary" not in str(arn)


def _resolve(value):
    """The boundary's ARN as IAM sees it: Fn::Join over AWS::AccountId and AWS::Partition resolved."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return {"AWS::AccountId": EXAMPLE_ACCOUNT, "AWS::Partition": "aws"}[value["Ref"]]
    separator, parts = value["Fn::Join"]
    return separator.join(_resolve(part) for part in parts)


def test_every_role_in_every_stack_carries_its_stages_boundary(variant):
    name, assembly = variant
    roles = 0
    for stack, logical_id, resource in assembly.all_resources():
        if resource["Type"] in ("AWS::IAM::Role", "AWS::IAM::User"):
            stage = stack.split("/")[0]
            boundary = resource["Properties"].get("PermissionsBoundary")
            assert boundary, f"{stack} {logical_id} has no permissions boundary"
            assert _resolve(boundary) == f"arn:aws:iam::{EXAMPLE_ACCOUNT}:policy/{stage}-permissions-boundary", f"{stack} {logical_id}"
            roles += 1
    assert roles > 20
    if name == "dev":
        # Every role dev has, so that a new one is counted here. Per region: the flow log, default-SG custom
        # resource and prefix list lookup roles, and per service a task role, an execution role and the role ECS
        # assumes to shift load balancer traffic in a deployment, and the rollback Automation document's role; the
        # chaos stack's three FIS experiment roles and the chaos service's SSM managed-instance role; the
        # observability stack's quota counter role; the services stack's listener rule guard's role. The edge: the role of the custom resources that read the
        # regions' load balancers and the region-failover function's role. The primary's data stack: the
        # signing-key rotation function's and the replica-key custom resources' roles, and the replica keys' Ready
        # provider's two (its handler's and CDK's provider framework's).
        assert roles == 2 * (3 + 3 * 3 + 1 + 4 + 1 + 1) + 2 + 4


# --- The boundary's effect, evaluated -----------------------------------------------------------


def _condition_holds(condition, context):
    for operator, tests in condition.items():
        for key, expected in tests.items():
            expected = [_resolve(e) for e in _as_list(expected)]
            actual = context.get(key)
            if operator == "StringEquals" and actual not in expected:
                return False
            if operator == "StringNotEquals" and actual in expected:
                return False
            if operator not in ("StringEquals", "StringNotEquals"):
                raise AssertionError(f"evaluator does not know {operator}")
    return True


def _decision(statements, action, resource, context):
    """IAM's evaluation of one policy: an explicit deny wins, then an allow; otherwise an implicit deny."""
    def matches(statement):
        return (any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in _as_list(statement["Action"]))
                and any(fnmatch.fnmatchcase(resource, _resolve(r)) for r in _as_list(statement["Resource"]))
                and _condition_holds(statement.get("Condition", {}), context))
    matching = [s["Effect"] for s in statements if matches(s)]
    return "denied" if "Deny" in matching else "allowed" if "Allow" in matching else "not allowed"


@pytest.mark.parametrize("profile", ["dev", "prod"])
def test_the_boundary_caps_services_and_regions_and_cannot_be_escaped(dev, prod, profile):
    assembly = {"dev": dev, "prod": prod}[profile]
    stages = {stack.split("/")[0] for stack in assembly.templates}
    assert stages == {"mf-eu-central-1", "mf-eu-west-1", "mf-edge"}
    for stage in stages:
        (policy,) = assembly.resources(f"{stage}/baseline", "AWS::IAM::ManagedPolicy").values()
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        this = f"arn:aws:iam::{EXAMPLE_ACCOUNT}:policy/{stage}-permissions-boundary"
        other = f"arn:aws:iam::{EXAMPLE_ACCOUNT}:policy/no-boundary-at-all"
        role = f"arn:aws:iam::{EXAMPLE_ACCOUNT}:role/some-role"

        def decide(action, resource=role, statements=statements, **context):
            return _decision(statements, action, resource, {"aws:RequestedRegion": "eu-west-1", **context})

        # Escalation: principals without this boundary, removing it, editing it.
        assert decide("iam:CreateRole", **{"iam:PermissionsBoundary": other}) == "denied"
        assert decide("iam:CreateRole") == "denied"  # no boundary at all
        assert decide("iam:CreateUser") == "denied"
        assert decide("iam:PutRolePermissionsBoundary", **{"iam:PermissionsBoundary": other}) == "denied"
        assert decide("iam:PutRolePolicy", **{"iam:PermissionsBoundary": other}) == "denied"
        assert decide("iam:AttachRolePolicy") == "denied"
        assert decide("iam:DeleteRolePermissionsBoundary", **{"iam:PermissionsBoundary": this}) == "denied"
        assert decide("iam:CreatePolicyVersion", resource=this) == "denied"
        assert decide("iam:SetDefaultPolicyVersion", resource=this) == "denied"
        # Even with this boundary, IAM and STS stay outside the ceiling.
        assert decide("iam:CreateRole", **{"iam:PermissionsBoundary": this}) == "not allowed"
        assert decide("sts:AssumeRole") == "not allowed"
        assert decide("organizations:LeaveOrganization") == "not allowed"
        # The platform's services, in the app's regions only.
        assert decide("dynamodb:GetItem", resource="arn:aws:dynamodb:eu-west-1:111122223333:table/mf-persona") == "allowed"
        assert decide("dynamodb:GetItem", **{"aws:RequestedRegion": "us-west-2"}) == "not allowed"


# --- IAM Access Analyzer ------------------------------------------------------------------------


def _analyzers(assembly):
    return {stack: r["Properties"] for stack, _, r in assembly.all_resources() if r["Type"] == "AWS::AccessAnalyzer::Analyzer"}


@pytest.mark.parametrize("profile", ["dev", "prod"])
def test_every_region_the_app_deploys_to_has_one_account_analyzer(dev, prod, profile):
    assembly = {"dev": dev, "prod": prod}[profile]
    analyzers = _analyzers(assembly)
    assert analyzers == {
        "mf-eu-central-1/baseline": {"AnalyzerName": "mf-eu-central-1", "Type": "ACCOUNT", "Tags": analyzers["mf-eu-central-1/baseline"]["Tags"]},
        "mf-eu-west-1/baseline": {"AnalyzerName": "mf-eu-west-1", "Type": "ACCOUNT", "Tags": analyzers["mf-eu-west-1/baseline"]["Tags"]},
        "mf-edge/baseline": {"AnalyzerName": "mf-us-east-1", "Type": "ACCOUNT", "Tags": analyzers["mf-edge/baseline"]["Tags"]},
    }
    regions = [assembly.stack_artifacts[stack]["environment"].rsplit("/", 1)[1] for stack in analyzers]
    assert sorted(regions) == ["eu-central-1", "eu-west-1", "us-east-1"]  # one per region: AWS allows no second


def test_with_us_east_1_as_an_app_region_the_edge_adds_no_second_analyzer_there(tmp_path):
    assembly = synth(tmp_path / "out", regions=[{"name": "us-east-1", "cidr": "10.10.0.0/16"}, {"name": "eu-west-1", "cidr": "10.20.0.0/16"}],
                     primary_region="us-east-1")
    analyzers = _analyzers(assembly)
    assert sorted(analyzers) == ["mf-eu-west-1/baseline", "mf-us-east-1/baseline"]
    assert "mf-edge/baseline" in assembly.templates
