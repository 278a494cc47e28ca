"""Chaos stack: the AWS FIS experiment templates, their roles, stop conditions and logs, and fault
injection only in the task definition an experiment targets."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from stacks.config import ConfigError, load_config
from tests.assembly import REPO_ROOT, Assembly, cdk_json_context

REGIONS = ("eu-central-1", "eu-west-1")
SERVICES = ("auth", "persona", "vc-start")
TARGET = "persona"  # cdk.json's chaos.service
ZONE = "c"  # cdk.json's chaos.availability_zone
TEMPLATES = {"stop_tasks": f"mf-{TARGET}-stop-tasks", "network_faults": f"mf-{TARGET}-network-faults", "az_outage": "mf-az-outage"}
# Not the App Mesh canary's own alarms (mf-<service>-canary-5xx-rate...): a release's share of the mesh's calls, not an SLO.
# A service's (not its App Mesh canary's); the load balancer's own 5xx alarm is the region's, not a service's.
SLO_ALARM = re.compile(r"^mf-(?!.*-canary-)(?!load-balancer-)(?P<service>[a-z-]+?)-((lb-group\d-|grpc-server-)?(5xx-rate|p95-latency|error-rate)|no-running-tasks)$")


def _chaos(region: str) -> str:
    return f"mf-{region}/chaos"


def _templates(assembly: Assembly, region: str) -> dict[str, dict[str, Any]]:
    """Experiment templates by their Name tag."""
    return {t["Properties"]["Tags"]["Name"]: t["Properties"]
            for t in assembly.resources(_chaos(region), "AWS::FIS::ExperimentTemplate").values()}


def _text(value: Any) -> str:
    """A CloudFormation value with pseudo parameters rendered, for comparing ARNs."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        return "".join(_text(part) for part in value["Fn::Join"][1])
    if isinstance(value, dict) and "Ref" in value:
        return f"<{value['Ref']}>"
    if isinstance(value, dict) and "Fn::GetStackOutput" in value:
        return f"<output:{value['Fn::GetStackOutput']['OutputName']}>"
    return json.dumps(value)


def _role_policy(assembly: Assembly, region: str, role_arn: dict) -> list[dict[str, Any]]:
    role_id = role_arn["Fn::GetAtt"][0]
    statements = []
    for policy in assembly.resources(_chaos(region), "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    return {action for s in statements for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}


def _statements_for(statements: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [s for s in statements if action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]


def _slo_alarm_names(assembly: Assembly, region: str, service: str | None = None) -> set[str]:
    """Every 5xx-rate, p95-latency and no-running-tasks alarm the services and observability stacks make (of one service):
    a service with no task left answers nothing the rate and latency alarms could judge."""
    names = set()
    for stack in (f"mf-{region}/services", f"mf-{region}/observability"):
        for alarm in assembly.resources(stack, "AWS::CloudWatch::Alarm").values():
            match = SLO_ALARM.match(alarm["Properties"].get("AlarmName", ""))
            if match and (service is None or match["service"] == service):
                names.add(match.group(0))
    return names


def _composite_alarm_names(assembly: Assembly, region: str, stop_alarm_arn: dict) -> set[str]:
    composite = assembly.template(_chaos(region))["Resources"][stop_alarm_arn["Fn::GetAtt"][0]]
    assert composite["Type"] == "AWS::CloudWatch::CompositeAlarm"
    rule = _text(composite["Properties"]["AlarmRule"])
    arns = re.findall(r'ALARM\("([^"]+)"\)', rule)
    assert rule == "(" + " OR ".join(f'ALARM("{arn}")' for arn in arns) + ")", "any one SLO alarm stops the experiment"
    prefix = f"arn:aws:cloudwatch:{region}:<AWS::AccountId>:alarm:"
    assert all(arn.startswith(prefix) for arn in arns), arns
    return {arn.removeprefix(prefix) for arn in arns}


@pytest.mark.parametrize("variant", ["dev", "prod"])
def test_every_region_has_the_three_experiments_and_the_runbook_names_each(request, variant):
    assembly: Assembly = request.getfixturevalue(variant)
    runbook = (REPO_ROOT / "runbooks" / "chaos-experiments.md").read_text()
    for region in REGIONS:
        assert set(_templates(assembly, region)) == set(TEMPLATES.values())
        outputs = assembly.template(_chaos(region))["Outputs"]
        assert {o["Value"]["Ref"] for o in outputs.values()} == set(
            assembly.resources(_chaos(region), "AWS::FIS::ExperimentTemplate")), "an output per template ID"
        for name in TEMPLATES.values():
            assert f"`{name}`" in runbook
        for output in outputs:
            assert output in runbook


@pytest.mark.parametrize("variant", ["dev", "prod"])
def test_stop_tasks_stops_one_task_of_the_target_service_at_its_minimum_size(request, variant):
    # 30 % of dev's 1 task or prod's 3, rounded down, is none: FIS's PERCENT(30) would resolve to no target, and the
    # template's emptyTargetResolutionMode fail would fail every run. A count of at least one never resolves to none.
    assembly: Assembly = request.getfixturevalue(variant)
    for region in REGIONS:
        template = _templates(assembly, region)[TEMPLATES["stop_tasks"]]
        (action,) = template["Actions"].values()
        assert action["ActionId"] == "aws:ecs:stop-task" and "Parameters" not in action
        target = template["Targets"][action["Targets"]["Tasks"]]
        assert target["ResourceType"] == "aws:ecs:task"
        assert target["SelectionMode"] == "COUNT(1)"
        assert template["ExperimentOptions"]["EmptyTargetResolutionMode"] == "fail"
        assert target["Parameters"] == {"cluster": _cluster_name(assembly, region),
                                        "service": _service_name(assembly, region, TARGET)}


def _with_min_tasks(context: dict[str, Any], service: str, min_tasks: int) -> dict[str, Any]:
    return {**context, "services": {**context["services"], service: {**context["services"][service], "min_tasks": min_tasks}}}


@pytest.mark.parametrize("profile, min_tasks, stop_percent, count", [
    ("dev", None, 30, 1),  # dev's default minimum, 1: the one task (an outage dev accepts: runbooks/chaos-experiments.md)
    ("prod", None, 30, 1),  # prod's default minimum, 3: 0.9 rounded down, raised to one
    ("prod", 10, 30, 3),  # 3.0: the share of the minimum
    ("prod", 2, 99, 1),  # 1.98 rounded down: never both tasks
    ("dev", 4, 50, 2),  # the service's own minimum, not the profile's
])
def test_the_stop_task_count_is_stop_percent_of_the_minimum_rounded_down_at_least_one_never_all(profile, min_tasks,
                                                                                                 stop_percent, count):
    context = {**cdk_json_context(), "profile": profile, "chaos": {"service": TARGET, "stop_percent": stop_percent}}
    if min_tasks is not None:
        context = _with_min_tasks(context, TARGET, min_tasks)
    assert load_config(context).stop_task_count == count


def test_prod_refuses_a_chaos_service_that_runs_a_single_task():
    # Stopping at least one of one is the whole service: prod's users would see the drill.
    context = _with_min_tasks({**cdk_json_context(), "profile": "prod"}, TARGET, 1)
    with pytest.raises(ConfigError, match="expected at least 2: the stop-tasks experiment stops at least one task") as error:
        load_config(context)
    assert error.value.key == f"services.{TARGET}.min_tasks"
    assert load_config({**context, "chaos": None}).chaos is None
    assert load_config({**context, "profile": "dev"}).stop_task_count == 1


def test_network_faults_add_latency_then_packet_loss_through_the_ecs_fault_endpoints(dev):
    for region in REGIONS:
        template = _templates(dev, region)[TEMPLATES["network_faults"]]
        latency, loss = template["Actions"]["latency"], template["Actions"]["packet-loss"]
        assert latency["ActionId"] == "aws:ecs:task-network-latency"
        assert loss["ActionId"] == "aws:ecs:task-network-packet-loss"
        assert latency["Parameters"] == {"duration": "PT10M", "delayMilliseconds": "200", "useEcsFaultInjectionEndpoints": "true"}
        assert loss["Parameters"] == {"duration": "PT10M", "lossPercent": "10", "useEcsFaultInjectionEndpoints": "true"}
        # FIS cannot run the two at once in one task.
        assert loss["StartAfter"] == ["latency"] and "StartAfter" not in latency
        target = template["Targets"][latency["Targets"]["Tasks"]]
        assert loss["Targets"] == latency["Targets"]
        assert (target["ResourceType"], target["SelectionMode"]) == ("aws:ecs:task", "ALL")
        assert target["Parameters"] == {"cluster": _cluster_name(dev, region), "service": _service_name(dev, region, TARGET)}


def test_az_outage_stops_every_task_in_the_zone_and_cuts_off_exactly_its_subnets(dev):
    for region in REGIONS:
        zone = f"{region}{ZONE}"
        template = _templates(dev, region)[TEMPLATES["az_outage"]]
        actions = {action["ActionId"]: action for action in template["Actions"].values()}
        assert set(actions) == {"aws:ecs:stop-task", "aws:network:disrupt-connectivity"}
        # Both at once, as a power failure would: neither waits for the other.
        assert all("StartAfter" not in action for action in actions.values())

        cut = actions["aws:network:disrupt-connectivity"]
        assert cut["Parameters"] == {"duration": "PT10M", "scope": "all"}
        subnets = template["Targets"][cut["Targets"]["Subnets"]]
        assert (subnets["ResourceType"], subnets["SelectionMode"]) == ("aws:ec2:subnet", "ALL")
        # Public, private and isolated: every subnet the VPC has in the zone, and none elsewhere.
        assert {_subnet_zone(dev, region, arn) for arn in subnets["ResourceArns"]} == {
            (zone, kind) for kind in ("public", "private", "isolated")}

        stop = actions["aws:ecs:stop-task"]
        assert "Parameters" not in stop
        tasks = template["Targets"][stop["Targets"]["Tasks"]]
        # Every service's tasks in the zone (no service parameter), found as FIS's AZ scenarios find them.
        assert tasks == {"ResourceType": "aws:ecs:task", "SelectionMode": "ALL", "Parameters": {"cluster": _cluster_name(dev, region)},
                         "Filters": [{"Path": "AvailabilityZone", "Values": [zone]}]}
        # A zone with no running task is still an outage: the stop is skipped, the network cut runs.
        assert template["ExperimentOptions"]["EmptyTargetResolutionMode"] == "skip"


@pytest.mark.parametrize("variant", ["dev", "prod"])
def test_az_outage_cuts_off_no_nat_gateway_or_endpoint_that_other_zones_use(request, variant):
    """An AZ outage, not a regional one: the zone it cuts off holds no NAT gateway or interface endpoint unless every
    zone has its own. dev has one NAT gateway and its endpoints in zone a, which tasks of every zone use."""
    assembly: Assembly = request.getfixturevalue(variant)
    for region in REGIONS:
        template = _templates(assembly, region)[TEMPLATES["az_outage"]]
        (subnets,) = [t for t in template["Targets"].values() if t["ResourceType"] == "aws:ec2:subnet"]
        cut = {_subnet_id(assembly, region, arn) for arn in subnets["ResourceArns"]}
        resources = assembly.template(f"mf-{region}/network")["Resources"]
        zones = {r["Properties"]["AvailabilityZone"] for r in resources.values() if r["Type"] == "AWS::EC2::Subnet"}
        # What each zone's tasks reach AWS and the internet through: the NAT gateways, and each interface endpoint.
        shared = {"NAT gateways": [r["Properties"]["SubnetId"]["Ref"] for r in resources.values() if r["Type"] == "AWS::EC2::NatGateway"]}
        shared |= {logical_id: [ref["Ref"] for ref in r["Properties"]["SubnetIds"]] for logical_id, r in resources.items()
                   if r["Type"] == "AWS::EC2::VPCEndpoint" and r["Properties"].get("VpcEndpointType") == "Interface"}
        # Something to check: the cut subnets, the NAT gateways' and the interface endpoints' (however many there are).
        assert cut and len(shared) > 1 and all(shared.values())
        for what, in_subnets in shared.items():
            if {resources[subnet]["Properties"]["AvailabilityZone"] for subnet in in_subnets} != zones:
                assert not cut & set(in_subnets), f"{variant} {region}: the AZ experiment cuts off {what}, which other zones use"


@pytest.mark.parametrize("variant", ["dev", "appmesh"])
def test_each_experiment_stops_on_the_slo_alarms_of_what_it_disturbs(request, variant):
    assembly: Assembly = request.getfixturevalue(variant)
    for region in REGIONS:
        templates = _templates(assembly, region)
        target_alarms, all_alarms = _slo_alarm_names(assembly, region, TARGET), _slo_alarm_names(assembly, region)
        assert target_alarms and {SLO_ALARM.match(n)["service"] for n in all_alarms} == set(SERVICES)
        for key, name in TEMPLATES.items():
            (condition,) = templates[name]["StopConditions"]
            assert condition["Source"] == "aws:cloudwatch:alarm"
            expected = all_alarms | {"mf-load-balancer-5xx-rate"} if key == "az_outage" else target_alarms
            assert _composite_alarm_names(assembly, region, condition["Value"]) == expected, name


def test_each_role_is_trusted_by_fis_for_this_account_only_and_grants_only_its_actions(dev):
    logging = {"logs:CreateLogDelivery", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups"}
    expected = {
        "stop_tasks": {"ecs:ListTasks", "ecs:DescribeTasks", "ecs:StopTask"},
        "network_faults": {"ecs:ListTasks", "ecs:DescribeTasks", "ssm:SendCommand", "ssm:ListCommands", "ssm:CancelCommand",
                           "tag:GetResources"},
        "az_outage": {"ecs:ListTasks", "ecs:DescribeTasks", "ecs:StopTask", "ec2:DescribeSubnets", "ec2:DescribeNetworkAcls", "ec2:DescribeVpcs", "ec2:DescribeManagedPrefixLists",
                      "ec2:GetManagedPrefixListEntries", "ec2:CreateNetworkAcl", "ec2:CreateTags", "ec2:CreateNetworkAclEntry",
                      "ec2:DeleteNetworkAcl", "ec2:ReplaceNetworkAclAssociation"},
    }
    for region in REGIONS:
        templates = _templates(dev, region)
        roles = {templates[name]["RoleArn"]["Fn::GetAtt"][0] for name in TEMPLATES.values()}
        assert len(roles) == len(TEMPLATES), "a role per template"
        for key, name in TEMPLATES.items():
            role_arn = templates[name]["RoleArn"]
            (trust,) = dev.template(_chaos(region))["Resources"][role_arn["Fn::GetAtt"][0]]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
            assert trust["Principal"] == {"Service": "fis.amazonaws.com"}
            assert "aws:SourceAccount" in trust["Condition"]["StringEquals"]
            assert _text(trust["Condition"]["ArnLike"]["aws:SourceArn"]).endswith(":experiment/*")
            statements = _role_policy(dev, region, role_arn)
            assert _actions(statements) == expected[key] | logging, name
            assert all(s["Effect"] == "Allow" for s in statements)
            _assert_tasks_of_the_cluster_only(statements, region)


def _assert_tasks_of_the_cluster_only(statements: list[dict[str, Any]], region: str) -> None:
    tasks = f"arn:aws:ecs:{region}:<AWS::AccountId>:task/mf/*"
    (list_tasks,) = _statements_for(statements, "ecs:ListTasks")
    assert _text(list_tasks["Condition"]["ArnEquals"]["ecs:cluster"]) == f"arn:aws:ecs:{region}:<AWS::AccountId>:cluster/mf"
    (describe,) = _statements_for(statements, "ecs:DescribeTasks")
    assert _text(describe["Resource"]) == tasks
    for send in _statements_for(statements, "ssm:SendCommand"):
        resources = [_text(r) for r in (send["Resource"] if isinstance(send["Resource"], list) else [send["Resource"]])]
        if any("managed-instance" in r for r in resources):
            # Only the managed instances the FIS sidecar registered for tasks of this cluster.
            assert _text(send["Condition"]["StringLike"]["ssm:resourceTag/ECS_TASK_ARN"]) == tasks
        else:
            assert resources == [f"arn:aws:ssm:{region}::document/AWSFIS-Run-Network-Latency-ECS",
                                 f"arn:aws:ssm:{region}::document/AWSFIS-Run-Network-Packet-Loss-ECS"]


def test_the_az_role_swaps_acls_of_the_targeted_subnets_only_and_touches_only_fis_acls(dev):
    for region in REGIONS:
        template = _templates(dev, region)[TEMPLATES["az_outage"]]
        statements = _role_policy(dev, region, template["RoleArn"])
        target = template["Targets"]["subnets"]
        acls = f"arn:aws:ec2:{region}:<AWS::AccountId>:network-acl/*"
        (swap,) = _statements_for(statements, "ec2:ReplaceNetworkAclAssociation")
        assert {_text(r) for r in swap["Resource"]} == {acls, *(_text(arn) for arn in target["ResourceArns"])}
        (edit,) = _statements_for(statements, "ec2:DeleteNetworkAcl")
        assert edit["Condition"] == {"StringEquals": {"aws:ResourceTag/managedByFIS": "true"}}
        # As AWS's managed policy for this action does: the tag condition on the ACL, the VPC in a statement of its own
        # (a request tag describes the resource being created; on the VPC's statement it would refuse the request).
        (on_acls, on_vpc) = sorted(_statements_for(statements, "ec2:CreateNetworkAcl"), key=lambda s: "Condition" not in s)
        assert _text(on_acls["Resource"]) == acls
        assert on_acls["Condition"] == {"StringEquals": {"aws:RequestTag/managedByFIS": "true"}}
        assert re.fullmatch(rf"arn:aws:ec2:{region}:<AWS::AccountId>:vpc/\S+", _text(on_vpc["Resource"])) and "Condition" not in on_vpc
        (tag,) = _statements_for(statements, "ec2:CreateTags")
        assert _text(tag["Resource"]) == acls
        assert tag["Condition"] == {"StringEquals": {"ec2:CreateAction": "CreateNetworkAcl", "aws:RequestTag/managedByFIS": "true"}}
        wildcard = {a for s in statements if s["Resource"] == "*" for a in _actions([s])}
        assert all(a.startswith(("ec2:Describe", "ec2:GetManagedPrefixListEntries", "ecs:ListTasks", "logs:")) for a in wildcard), wildcard


def test_every_experiment_logs_to_one_kms_encrypted_log_group(dev):
    for region in REGIONS:
        (log_group_id, log_group), = dev.resources(_chaos(region), "AWS::Logs::LogGroup").items()
        assert log_group["Properties"]["LogGroupName"] == "/aws/fis/mf"
        assert "KmsKeyId" in log_group["Properties"] and log_group["Properties"]["RetentionInDays"] > 0
        for name, template in _templates(dev, region).items():
            assert template["LogConfiguration"] == {
                "CloudWatchLogsConfiguration": {"LogGroupArn": {"Fn::GetAtt": [log_group_id, "Arn"]}}, "LogSchemaVersion": 2}
            # No service task to act on fails an experiment on one service rather than passing it.
            if name != TEMPLATES["az_outage"]:
                assert template["ExperimentOptions"]["EmptyTargetResolutionMode"] == "fail"
            assert {"project", "environment", "region", "managed-by"} <= set(template["Tags"])


@pytest.mark.parametrize("variant", ["dev", "appmesh"])
def test_only_the_targeted_services_task_definition_allows_fault_injection(request, variant):
    assembly: Assembly = request.getfixturevalue(variant)
    for region in REGIONS:
        stack = f"mf-{region}/services"
        resources = assembly.template(stack)["Resources"]
        allowed = {logical_id: definition["Properties"] for logical_id, definition in
                   assembly.resources(stack, "AWS::ECS::TaskDefinition").items()
                   if definition["Properties"].get("EnableFaultInjection")}
        # Only persona's primary (with App Mesh, not its canary persona-canary).
        task_definitions = {s["Properties"]["ServiceName"]: s["Properties"]["TaskDefinition"]["Ref"]
                            for s in assembly.resources(stack, "AWS::ECS::Service").values()}
        assert set(allowed) == {task_definitions[TARGET]}
        properties = allowed[task_definitions[TARGET]]
        assert properties["PidMode"] == "task"
        others = [d["Properties"] for d in assembly.resources(stack, "AWS::ECS::TaskDefinition").values() if d["Properties"] is not properties]
        assert all("PidMode" not in d and all(c["Name"] != "amazon-ssm-agent" for c in d["ContainerDefinitions"]) for d in others)
        sidecar = next(c for c in properties["ContainerDefinitions"] if c["Name"] == "amazon-ssm-agent")
        assert sidecar["Essential"] is False, "a sidecar that fails to register must not take the app down"
        assert re.match(r"^public\.ecr\.aws/amazon-ssm-agent/amazon-ssm-agent:\d+\.\d+\.\d+\.\d+$", sidecar["Image"]), "pinned"
        (role_name,) = [e["Value"] for e in sidecar["Environment"] if e["Name"] == "MANAGED_INSTANCE_ROLE_NAME"]
        managed_instance_role = role_name["Ref"]
        assert resources[managed_instance_role]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
            "Service": "ssm.amazonaws.com"}
        task_statements = _policy_of(resources, properties["TaskRoleArn"]["Fn::GetAtt"][0])
        (activation,) = _statements_for(task_statements, "ssm:CreateActivation")
        assert activation["Condition"] == {"StringEquals": {"aws:RequestTag/FAULT_INJECTION_SIDECAR": "true"}}
        (pass_role,) = _statements_for(task_statements, "iam:PassRole")
        assert pass_role["Resource"] == {"Fn::GetAtt": [managed_instance_role, "Arn"]}
        # No other task role can register instances or pass roles.
        for other in others:
            assert not _statements_for(_policy_of(resources, other["TaskRoleArn"]["Fn::GetAtt"][0]), "ssm:CreateActivation")


@pytest.mark.parametrize("variant", ["dev", "appmesh"])
def test_the_targeted_service_starts_its_tasks_only_once_the_sidecars_grants_are_attached(request, variant):
    """The sidecar calls ssm:CreateActivation once as its task starts and exits for good when denied (not essential,
    no restart): on a first deploy a task that started before the fault-injection policy was attached would never
    register, and the network-fault experiment would find no instance of it."""
    assembly: Assembly = request.getfixturevalue(variant)
    for region in REGIONS:
        resources = assembly.template(f"mf-{region}/services")["Resources"]
        (service,) = [s for s in resources.values() if s["Type"] == "AWS::ECS::Service" and s["Properties"]["ServiceName"] == TARGET]
        task_role = resources[service["Properties"]["TaskDefinition"]["Ref"]]["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
        # Every policy on its task role that grants the activation, the fault-injection policy among them.
        granting = {i for i, r in resources.items() if r["Type"] == "AWS::IAM::Policy" and {"Ref": task_role} in r["Properties"]["Roles"]
                    and "ssm:CreateActivation" in _actions(r["Properties"]["PolicyDocument"]["Statement"])}
        assert granting and granting <= set(service["DependsOn"]), (region, granting, service["DependsOn"])


def _policy_of(resources: dict[str, Any], role_id: str) -> list[dict[str, Any]]:
    return [s for r in resources.values() if r["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in r["Properties"]["Roles"]
            for s in r["Properties"]["PolicyDocument"]["Statement"]]


def _cluster_name(assembly: Assembly, region: str) -> str:
    (cluster,) = assembly.resources(f"mf-{region}/platform", "AWS::ECS::Cluster").values()
    return cluster["Properties"]["ClusterName"]


def _service_name(assembly: Assembly, region: str, name: str) -> str:
    names = {s["Properties"]["ServiceName"] for s in assembly.resources(f"mf-{region}/services", "AWS::ECS::Service").values()}
    assert name in names
    return name


def _subnet_id(assembly: Assembly, region: str, arn: dict) -> str:
    """The logical ID of the network stack's subnet an ARN names through a stack output."""
    text = _text(arn)
    # The account: the stack's own, or the configured one (prod).
    assert re.match(rf"arn:aws:ec2:{region}:(<AWS::AccountId>|[0-9]{{12}}):subnet/<output:", text), text
    output_name = text.split("<output:")[1].rstrip(">")
    return assembly.template(f"mf-{region}/network")["Outputs"][output_name]["Value"]["Ref"]


def _subnet_zone(assembly: Assembly, region: str, arn: dict) -> tuple[str, str]:
    """(AZ, public/private/isolated) of the network stack's subnet an ARN names through a stack output."""
    subnet = assembly.template(f"mf-{region}/network")["Resources"][_subnet_id(assembly, region, arn)]
    assert subnet["Type"] == "AWS::EC2::Subnet"
    kind = next(t["Value"] for t in subnet["Properties"]["Tags"] if t["Key"] == "aws-cdk:subnet-name")
    return subnet["Properties"]["AvailabilityZone"], kind


def _context(**chaos: Any) -> dict[str, Any]:
    return {**cdk_json_context(), "chaos": {"service": TARGET, **chaos}}


def test_config_defaults_and_what_it_rejects():
    config = load_config({**cdk_json_context(), "chaos": {"service": "auth"}}).chaos
    assert (config.stop_percent, config.latency_ms, config.packet_loss_percent, config.duration_minutes,
            config.availability_zone, config.task_network_faults) == (30, 200, 10, 10, ZONE, True)
    # Zone a holds dev's one NAT gateway and its endpoints (dev refuses it: tests/test_config_errors.py); prod has
    # them in every zone.
    assert load_config(_context(availability_zone="b")).chaos.availability_zone == "b"
    assert load_config({**_context(availability_zone="a"), "profile": "prod"}).chaos.availability_zone == "a"
    assert load_config({**cdk_json_context(), "chaos": None}).chaos is None
    # The default targets persona; an app without persona has no experiments until its chaos config says more.
    assert load_config({}).chaos.service == "persona"
    assert load_config({**cdk_json_context(), "services": {"vc-start": {}}}).chaos is None
    with pytest.raises(ConfigError, match="expected one of the configured services: vc-start"):
        load_config({"services": {"vc-start": {}}, "chaos": {"service": "persona", "stop_percent": 20}})
    for chaos, key in [({"stop_percent": 0}, "chaos.stop_percent"), ({"packet_loss_percent": 101}, "chaos.packet_loss_percent"),
                       ({"duration_minutes": 0}, "chaos.duration_minutes"), ({"task_network_faults": "yes"}, "chaos.task_network_faults"),
                       ({"jitter_ms": 5}, "chaos.jitter_ms")]:
        with pytest.raises(ConfigError) as error:
            load_config(_context(**chaos))
        assert error.value.key == key
    with pytest.raises(ConfigError, match="pick a service with a path"):
        context = cdk_json_context()
        services = {**context["services"], "worker-only": {"calls": [], "module": "worker_only"}}
        load_config({**context, "mesh": "appmesh", "services": services, "chaos": {"service": "worker-only"}})


# The SSM agent's Run Command channel and its own cleanup; nothing of Parameter Store, State Manager documents,
# Inventory, Patch Manager or Session Manager's data channels.
MANAGED_INSTANCE_ACTIONS = {
    "ssm:UpdateInstanceInformation", "ssm:ListInstanceAssociations", "ssm:DeregisterManagedInstance", "ssm:DeleteActivation",
    "ec2messages:AcknowledgeMessage", "ec2messages:DeleteMessage", "ec2messages:FailMessage", "ec2messages:GetEndpoint",
    "ec2messages:GetMessages", "ec2messages:SendReply", "ssmmessages:CreateControlChannel", "ssmmessages:OpenControlChannel",
}


@pytest.mark.parametrize("variant", ["dev", "prod", "appmesh", "domain"])
def test_the_managed_instance_role_has_the_agents_channel_and_no_parameter_store(request, variant):
    """The persona task role can create activations for this role, so app code could register any machine with it:
    it must not carry AmazonSSMManagedInstanceCore (ssm:GetParameter/GetParameters on *, every parameter)."""
    assembly: Assembly = request.getfixturevalue(variant)
    for region in REGIONS:
        resources = assembly.template(f"mf-{region}/services")["Resources"]
        (role_id,) = [i for i, r in resources.items() if r["Type"] == "AWS::IAM::Role"
                      and r["Properties"].get("RoleName") == f"mf-{region}-{TARGET}-fis-instance"]
        role = resources[role_id]["Properties"]
        assert "ManagedPolicyArns" not in role, "no AWS managed policy: AmazonSSMManagedInstanceCore reads every SSM parameter"
        assert "Policies" not in role
        statements = _policy_of(resources, role_id)
        actions = _actions(statements)
        assert actions == MANAGED_INSTANCE_ACTIONS
        assert not any(a.startswith(("ssm:GetParameter", "ssm:GetDocument", "kms:", "secretsmanager:")) for a in actions)
        for statement in statements:
            assert statement["Effect"] == "Allow"
            ssm = [a for a in _actions([statement]) if a.startswith("ssm:")]
            if ssm and ssm != ["ssm:DeleteActivation"]:  # DeleteActivation has no resource-level permissions
                assert re.fullmatch(rf"arn:(aws|<AWS::Partition>):ssm:{region}:(\d{{12}}|<AWS::AccountId>):managed-instance/\*",
                                    _text(statement["Resource"])), statement
            elif ssm:
                assert statement["Resource"] == "*"


def test_an_action_on_a_target_set_the_template_does_not_define_stops_synth_naming_it():
    import aws_cdk as cdk
    from aws_cdk import aws_cloudwatch as cloudwatch
    from aws_cdk import aws_logs as logs

    from constructs.chaos import ExperimentAction, FisExperiment

    stack = cdk.Stack(cdk.App(), "Chaos", env=cdk.Environment(region="eu-central-1"))
    with pytest.raises(ValueError, match=r"^mf-x: an action acts on target set 'tasks', which the template does not define$"):
        FisExperiment(stack, "X", name="mf-x", description="x", targets={"subnets": {"resourceType": "aws:ec2:subnet"}},
                      actions={"stop": ExperimentAction("aws:ecs:stop-task", "stop", "Tasks", target_set="tasks")},
                      statements=[], stop_alarm=cloudwatch.Alarm.from_alarm_name(stack, "Slo", "mf-slo"),
                      log_group=logs.LogGroup.from_log_group_name(stack, "Logs", "/aws/fis/mf"))
    assert stack.node.try_find_child("X") is None, "nothing half-built"


def test_a_stop_tasks_experiment_that_would_stop_no_task_stops_synth():
    import aws_cdk as cdk
    from aws_cdk import aws_cloudwatch as cloudwatch
    from aws_cdk import aws_logs as logs

    from constructs.chaos import StopTasksExperiment

    stack = cdk.Stack(cdk.App(), "Chaos", env=cdk.Environment(region="eu-central-1"))
    with pytest.raises(ValueError, match=r"^mf-x: count=0; the experiment must stop at least one task$"):
        StopTasksExperiment(stack, "X", name="mf-x", cluster_name="mf", service_name="persona", count=0,
                            stop_alarm=cloudwatch.Alarm.from_alarm_name(stack, "Slo", "mf-slo"),
                            log_group=logs.LogGroup.from_log_group_name(stack, "Logs", "/aws/fis/mf"))
    assert stack.node.try_find_child("X") is None, "nothing half-built"
