"""Strangler fig (issue 7): a legacy Lambda function behind a service's path, the load balancer's split
between it and the service taken from an SSM flag that a runbook flips, applied without a deploy.

The function that applies the flag is tested against moto in services/tests/test_strangler_fig_handler.py
(that virtualenv has boto3 and moto); its weight arithmetic is tested here too.
"""

from __future__ import annotations

import re
import sys

import pytest

from stacks.config import ConfigError, load_config
from tests.assembly import REPO_ROOT, cdk_json_context
from tests.test_events import REGIONS, assert_every_event_target_retries_into_a_watched_dead_letter_queue

sys.path.insert(0, str(REPO_ROOT / "constructs" / "strangler_fig" / "function"))
from weights import InvalidPercent, parse_percent, rule_weights  # noqa: E402

from tests.conftest import STRANGLER_PERCENT as INITIAL_PERCENT, with_legacy as _with_legacy  # noqa: E402

PARAMETER = "/mf/auth/migration/percent-to-service"


def _services(assembly, region):
    return assembly.template(f"mf-{region}/services")["Resources"]


def _of_type(resources, resource_type):
    return {logical_id: r for logical_id, r in resources.items() if r["Type"] == resource_type}


def _join(value) -> str:
    """A Fn::Join of strings and pseudo-parameter Refs, as one string with ${...} for the Refs."""
    parts = value["Fn::Join"][1]
    return "".join(p if isinstance(p, str) else "${%s}" % p["Ref"] for p in parts)


def _legacy_group(resources):
    ((group_id, group),) = ((i, r) for i, r in _of_type(resources, "AWS::ElasticLoadBalancingV2::TargetGroup").items()
                            if r["Properties"].get("TargetType") == "lambda")
    return group_id, group


def _route_id(resources, service):
    (rule_id,) = (i for i in _of_type(resources, "AWS::ElasticLoadBalancingV2::ListenerRule") if i.startswith(f"Ingress{service}route"))
    return rule_id


def _route(resources, service):
    return resources[_route_id(resources, service)]


@pytest.mark.parametrize("region", REGIONS)
def test_the_legacy_target_group_targets_the_configured_function_which_only_it_may_invoke(strangler, region):
    resources = _services(strangler, region)
    group_id, group = _legacy_group(resources)
    function_arn = f"arn:aws:lambda:{region}:${{AWS::AccountId}}:function:auth-v1"
    assert group["Properties"]["Name"] == "mf-auth-legacy"
    assert [_join(target["Id"]) for target in group["Properties"]["Targets"]] == [function_arn]
    (permission_id,) = group["DependsOn"]  # registered only once the load balancer may invoke it
    permission = resources[permission_id]["Properties"]
    assert permission["Principal"] == "elasticloadbalancing.amazonaws.com" and permission["Action"] == "lambda:InvokeFunction"
    assert _join(permission["FunctionName"]) == function_arn
    assert _join(permission["SourceArn"]) == f"arn:aws:elasticloadbalancing:{region}:${{AWS::AccountId}}:targetgroup/mf-auth-legacy/*"
    assert permission["SourceAccount"] == {"Ref": "AWS::AccountId"}


@pytest.mark.parametrize("region", REGIONS)
def test_the_route_forwards_the_initial_percent_to_the_service_and_the_rest_to_the_legacy_function(strangler, dev, region):
    resources = _services(strangler, region)
    group_id, _ = _legacy_group(resources)
    (action,) = _route(resources, "auth")["Properties"]["Actions"]
    weights = {group["TargetGroupArn"]["Ref"]: group["Weight"] for group in action["ForwardConfig"]["TargetGroups"]}
    live, alternate = (next(i for i in weights if i.startswith(f"Ingressauth{kind}targets")) for kind in ("", "alternate"))
    assert weights == {live: INITIAL_PERCENT, alternate: 0, group_id: 100 - INITIAL_PERCENT}
    # Other routes are as without a legacy function.
    assert _route(resources, "persona") == _route(_services(dev, region), "persona")


@pytest.mark.parametrize("region", REGIONS)
def test_the_flag_starts_at_the_initial_percent_and_takes_only_whole_numbers_from_0_to_100(strangler, region):
    (parameter,) = (r["Properties"] for r in _of_type(_services(strangler, region), "AWS::SSM::Parameter").values()
                    if r["Properties"].get("Name") == PARAMETER)
    assert parameter["Type"] == "String" and parameter["Value"] == str(INITIAL_PERCENT)
    allowed = re.compile(parameter["AllowedPattern"])
    assert all(allowed.match(v) for v in ("0", "7", "37", "100"))
    assert not any(allowed.match(v) for v in ("101", "abc", "-1", "3.5", "07", " 37", ""))


@pytest.mark.parametrize("region", REGIONS)
def test_a_flag_change_the_end_of_an_ecs_deployment_and_a_stack_or_rule_update_invoke_the_function_that_applies_it(strangler, region):
    resources = _services(strangler, region)
    # The fig's own rules (the listener rule guard, tests/test_listener_rule_guard.py, has its own on the same events).
    rules = {r["Properties"]["EventPattern"]["detail-type"][0]: r["Properties"] for i, r in _of_type(resources, "AWS::Events::Rule").items()
             if r["Properties"]["EventPattern"]["source"][0] in ("aws.ssm", "aws.ecs", "aws.cloudformation") and i.startswith("authstranglerfig")}
    assert len(rules) == 4
    assert rules["CloudFormation Stack Status Change"]["EventPattern"] == {
        "source": ["aws.cloudformation"], "detail-type": ["CloudFormation Stack Status Change"],
        "detail": {"stack-id": [{"Ref": "AWS::StackId"}], "status-details": {"status": ["UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE"]}}}
    # CloudFormation's update of the rule itself: the stack's UPDATE_COMPLETE waits for every service to stabilise.
    assert rules["CloudFormation Resource Status Change"]["EventPattern"] == {
        "source": ["aws.cloudformation"], "detail-type": ["CloudFormation Resource Status Change"],
        "detail": {"stack-id": [{"Ref": "AWS::StackId"}], "logical-resource-id": [_route_id(resources, "auth")],
                   "status-details": {"status": ["UPDATE_COMPLETE"]}}}
    assert rules["Parameter Store Change"]["EventPattern"] == {"source": ["aws.ssm"], "detail-type": ["Parameter Store Change"],
                                                               "detail": {"name": [PARAMETER], "operation": ["Create", "Update"]}}
    deployment = rules["ECS Deployment State Change"]["EventPattern"]
    assert deployment["detail"] == {"eventName": ["SERVICE_DEPLOYMENT_COMPLETED", "SERVICE_DEPLOYMENT_FAILED"]}
    (service,) = deployment["resources"]
    assert resources[service["Ref"]]["Type"] == "AWS::ECS::Service" and service["Ref"].startswith("authService")
    for rule in rules.values():
        (target,) = rule["Targets"]
        function_id = target["Arn"]["Fn::GetAtt"][0]
        assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0
        # Failed runs of the function land where undeliverable events do.
        assert resources[function_id]["Properties"]["DeadLetterConfig"]["TargetArn"] == target["DeadLetterConfig"]["Arn"]
    function = resources[function_id]["Properties"]
    assert (function["Runtime"], function["Architectures"], function["Handler"]) == ("python3.14", ["arm64"], "handler.handler")
    assert function["Environment"]["Variables"]["RULE_ARN"]["Ref"].startswith("Ingressauthroute")


@pytest.mark.parametrize("region", REGIONS)
def test_the_function_may_read_its_flag_and_write_its_one_rule_and_nothing_else(strangler, region):
    resources = _services(strangler, region)
    (function,) = (r["Properties"] for i, r in _of_type(resources, "AWS::Lambda::Function").items() if i.startswith("authstranglerfig"))
    role_id = function["Role"]["Fn::GetAtt"][0]
    statements = [s for p in _of_type(resources, "AWS::IAM::Policy").values() if {"Ref": role_id} in p["Properties"]["Roles"]
                  for s in p["Properties"]["PolicyDocument"]["Statement"]]
    assert resources[role_id]["Properties"].get("ManagedPolicyArns") is None
    by_action = {action: s["Resource"] for s in statements for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert set(by_action) == {"ssm:GetParameter", "elasticloadbalancing:ModifyRule", "elasticloadbalancing:DescribeRules",
                              "elasticloadbalancing:DescribeTargetHealth", "logs:CreateLogStream", "logs:PutLogEvents", "sqs:SendMessage"}
    assert by_action["elasticloadbalancing:ModifyRule"]["Ref"].startswith("Ingressauthroute")
    assert resources[by_action["elasticloadbalancing:ModifyRule"]["Ref"]]["Type"] == "AWS::ElasticLoadBalancingV2::ListenerRule"
    assert by_action["ssm:GetParameter"]["Fn::Join"][1][-1]["Ref"].startswith("authstranglerfigPercentToService")
    assert by_action["elasticloadbalancing:DescribeRules"] == "*"  # no resource-level permissions for Describe*


def test_the_migration_dead_letter_queue_alarms_and_names_the_traffic_shift_runbook(strangler):
    assert_every_event_target_retries_into_a_watched_dead_letter_queue(strangler)
    for region in REGIONS:
        alarms = {a["Properties"]["AlarmName"]: a["Properties"]
                  for a in strangler.resources(f"mf-{region}/observability", "AWS::CloudWatch::Alarm").values()}
        alarm = alarms["mf-auth-migration-dlq-not-empty"]
        assert alarm["AlarmDescription"].endswith("Runbook: runbooks/strangler-fig-traffic-shift.md")
        assert (REPO_ROOT / "runbooks" / "strangler-fig-traffic-shift.md").is_file()


def test_without_legacy_there_is_no_lambda_target_no_flag_and_no_flag_rule(dev):
    for region in REGIONS:
        resources = _services(dev, region)
        assert not [r for r in _of_type(resources, "AWS::ElasticLoadBalancingV2::TargetGroup").values()
                    if r["Properties"].get("TargetType") == "lambda"]
        assert not [r for r in _of_type(resources, "AWS::SSM::Parameter").values() if "/migration/" in str(r["Properties"].get("Name"))]
        # The stack-update rule left is the listener rule guard's (tests/test_listener_rule_guard.py).
        assert not [i for i, r in _of_type(resources, "AWS::Events::Rule").items()
                    if r["Properties"]["EventPattern"]["source"][0] in ("aws.ssm", "aws.ecs", "aws.cloudformation")
                    and not i.startswith("ListenerRuleGuard")]
        assert not [i for i in resources if "stranglerfig" in i]


def test_function_arns_give_each_region_its_own_function():
    context = {**cdk_json_context(), "account": "111122223333", "services": _with_legacy({"function_arns": {
        "eu-central-1": "arn:aws:lambda:eu-central-1:111122223333:function:auth-v1",
        "eu-west-1": "arn:aws:lambda:eu-west-1:111122223333:function:auth-v1:live"}})}
    legacy = next(s for s in load_config(context).services if s.name == "auth").legacy
    assert legacy.function_arn("eu-west-1", "aws", "ignored") == "arn:aws:lambda:eu-west-1:111122223333:function:auth-v1:live"
    assert legacy.initial_percent_to_service == 0  # default: all traffic stays on the legacy function


@pytest.mark.parametrize("legacy, message", [
    ({"function_name": "auth-v1", "function_arns": {"eu-central-1": "arn:aws:lambda:eu-central-1:111122223333:function:a"}},
     "set exactly one of function_name"),
    ({"function_arns": {"eu-central-1": "arn:aws:lambda:eu-central-1:111122223333:function:a"}},
     "expected exactly one ARN per configured region: eu-central-1, eu-west-1"),
    ({"function_arns": {"eu-central-1": "arn:aws:lambda:eu-central-1:444455556666:function:a",
                        "eu-west-1": "arn:aws:lambda:eu-west-1:111122223333:function:a"}}, "the app's account 111122223333"),
])
def test_function_arns_must_cover_every_region_in_the_apps_account(legacy, message):
    context = {**cdk_json_context(), "account": "111122223333", "services": _with_legacy(legacy)}
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        load_config(context)
    assert error.value.key.startswith("services.auth.legacy") and "\n" not in str(error.value)


@pytest.mark.parametrize("percent, service_weights, serving, expected", [
    (0, {"live": 100, "alt": 0}, frozenset(), {"legacy": 100, "live": 0, "alt": 0}),
    (37, {"live": 100, "alt": 0}, frozenset(), {"legacy": 63, "live": 37, "alt": 0}),
    (100, {"live": 100, "alt": 0}, frozenset(), {"legacy": 0, "live": 100, "alt": 0}),
    # ECS's canary (95/5 of the service's share) keeps a share even when the service's share is small.
    (10, {"live": 95, "alt": 5}, frozenset(), {"legacy": 90, "live": 9, "alt": 1}),
    # From 0 % the proportion is gone: the group with healthy targets takes the share.
    (20, {"live": 0, "alt": 0}, frozenset({"alt"}), {"legacy": 80, "live": 0, "alt": 20}),
    # A stack update wrote the template's weights onto the group ECS emptied: the serving group takes them.
    (37, {"live": 37, "alt": 0}, frozenset({"alt"}), {"legacy": 63, "live": 0, "alt": 37}),
    # During a canary both groups serve: ECS's proportion stands.
    (10, {"live": 95, "alt": 5}, frozenset({"live", "alt"}), {"legacy": 90, "live": 9, "alt": 1}),
])
def test_the_weights_give_the_legacy_function_the_rest_and_keep_ecs_proportion(percent, service_weights, serving, expected):
    assert rule_weights(percent, "legacy", service_weights, serving) == expected


def test_the_weights_refuse_what_would_send_traffic_nowhere():
    with pytest.raises(ValueError, match="no service target group has healthy targets"):
        rule_weights(20, "legacy", {"live": 0, "alt": 0}, frozenset())
    with pytest.raises(InvalidPercent):
        rule_weights(101, "legacy", {"live": 100})


@pytest.mark.parametrize("raw, expected", [("0", 0), ("37", 37), ("100", 100), ("37\n", 37)])
def test_the_flag_parses_whole_numbers_from_0_to_100(raw, expected):
    assert parse_percent(raw) == expected


@pytest.mark.parametrize("raw", ["101", "abc", "-1", "3.5", "", "1e2"])
def test_the_flag_rejects_anything_else_naming_the_range(raw):
    with pytest.raises(InvalidPercent, match="expected a whole number from 0 to 100"):
        parse_percent(raw)


