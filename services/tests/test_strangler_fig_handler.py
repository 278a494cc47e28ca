"""The strangler fig's traffic-shift function (constructs/strangler_fig/function) against moto's SSM and
ELBv2: a real listener rule whose weights the function rewrites from the migration flag."""

from __future__ import annotations

import pytest
from moto import mock_aws
from weights_function import REGION, forward, handler, listener

PARAMETER = "/mf/auth/migration/percent-to-service"


@pytest.fixture
def rule(monkeypatch, aws_session):
    """auth's route as the stack creates it with initial_percent_to_service 37: live 37, alternate 0, legacy 63."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        ssm, elbv2, ec2 = (aws_session.client(name, REGION) for name in ("ssm", "elbv2", "ec2"))
        vpc, listener_arn = listener(elbv2, ec2)

        def group(name, **kwargs):
            return elbv2.create_target_group(Name=name, **kwargs)["TargetGroups"][0]["TargetGroupArn"]

        live, alternate = (group(n, Protocol="HTTP", Port=8080, VpcId=vpc, TargetType="ip") for n in ("auth", "auth-alt"))
        legacy = group("mf-auth-legacy", TargetType="lambda")
        rule_arn = elbv2.create_rule(
            ListenerArn=listener_arn, Priority=10, Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/api/auth", "/api/auth/*"]}}],
            Actions=[forward({live: 37, alternate: 0, legacy: 63})])["Rules"][0]["RuleArn"]
        ssm.put_parameter(Name=PARAMETER, Type="String", Value="37")
        settings = {"parameter_name": PARAMETER, "rule_arn": rule_arn, "legacy_target_group_arn": legacy,
                    "service_target_group_arns": [live, alternate]}
        yield {"ssm": ssm, "elbv2": elbv2, "ec2": ec2, "vpc": vpc, "settings": settings,
               "live": live, "alternate": alternate, "legacy": legacy}


def _weights(rule):
    (described,) = rule["elbv2"].describe_rules(RuleArns=[rule["settings"]["rule_arn"]])["Rules"]
    (action,) = described["Actions"]
    return {g["TargetGroupArn"]: g["Weight"] for g in action["ForwardConfig"]["TargetGroups"]}


def _flip(rule, value):
    """What the runbook does (put-parameter --overwrite), then what the EventBridge rule's invocation does."""
    rule["ssm"].put_parameter(Name=PARAMETER, Type="String", Value=value, Overwrite=True)
    return handler.reconcile(rule["ssm"], rule["elbv2"], rule["settings"], trigger="Parameter Store Change")


@pytest.mark.parametrize("percent", [0, 37, 100])
def test_the_flag_sets_the_service_share_and_the_legacy_function_gets_the_rest(rule, percent):
    result = _flip(rule, str(percent))
    expected = {rule["live"]: percent, rule["alternate"]: 0, rule["legacy"]: 100 - percent}
    assert _weights(rule) == expected
    assert result["outcome"] == ("unchanged" if percent == 37 else "applied")


@pytest.mark.parametrize("value", ["101", "abc", "-1", "3.5", " "])
def test_a_value_other_than_a_whole_number_from_0_to_100_is_logged_and_leaves_the_rule_alone(rule, value, caplog):
    before = _weights(rule)
    result = _flip(rule, value)
    assert result["outcome"] == "rejected" and _weights(rule) == before
    assert '"outcome": "rejected"' in caplog.text and "0 to 100" in caplog.text


def test_during_an_ecs_canary_the_service_groups_keep_the_proportion_ecs_gave_them(rule):
    # ECS's canary step: 90 % of the service's traffic to the old revision, 10 % to the new one.
    rule["elbv2"].modify_rule(RuleArn=rule["settings"]["rule_arn"],
                              Actions=[forward({rule["live"]: 90, rule["alternate"]: 10, rule["legacy"]: 0})])
    _flip(rule, "50")
    assert _weights(rule) == {rule["live"]: 45, rule["alternate"]: 5, rule["legacy"]: 50}


def test_after_a_deployment_that_dropped_the_legacy_group_the_flag_is_applied_again(rule):
    """What the deployment-ended rule is for: whatever ECS left on the rule, the flag's split comes back."""
    # A finished blue/green deployment: the alternate group is live now, and the legacy group is gone.
    rule["elbv2"].modify_rule(RuleArn=rule["settings"]["rule_arn"], Actions=[forward({rule["live"]: 0, rule["alternate"]: 100})])
    result = handler.reconcile(rule["ssm"], rule["elbv2"], rule["settings"], trigger="ECS Deployment State Change")
    assert result["outcome"] == "applied"
    assert _weights(rule) == {rule["live"]: 0, rule["alternate"]: 37, rule["legacy"]: 63}


def test_from_0_percent_the_share_goes_to_the_group_with_healthy_targets_and_without_one_nothing_changes(rule):
    _flip(rule, "0")
    # No group has healthy targets: the function fails (Lambda retries, then its dead-letter queue alarms).
    with pytest.raises(ValueError, match="no service target group has healthy targets"):
        _flip(rule, "20")
    assert _weights(rule) == {rule["live"]: 0, rule["alternate"]: 0, rule["legacy"]: 100}

    # ECS registered the running tasks in the alternate group (the last deployment made it live).
    _serve_from(rule, "alternate")
    _flip(rule, "20")
    assert _weights(rule) == {rule["live"]: 0, rule["alternate"]: 20, rule["legacy"]: 80}


def _serve_from(rule, group):
    """ECS registered a running task in ``group`` (moto reports a registered target healthy)."""
    ec2 = rule["ec2"]
    subnet = ec2.create_subnet(VpcId=rule["vpc"], CidrBlock="10.0.9.0/24", AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
    address = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["PrivateIpAddress"]
    rule["elbv2"].register_targets(TargetGroupArn=rule[group], Targets=[{"Id": address, "Port": 8080}])


def test_after_a_stack_update_wrote_the_share_onto_the_emptied_group_the_serving_group_gets_it_back(rule):
    """ECS's last deployment made the alternate group live; the stack update put the template's 37 % back
    on the first group, which has no tasks (what aws/aws-cdk#36649 describes). The function moves it."""
    _serve_from(rule, "alternate")
    result = handler.reconcile(rule["ssm"], rule["elbv2"], rule["settings"], trigger="CloudFormation Stack Status Change")
    assert result["outcome"] == "applied"
    assert _weights(rule) == {rule["live"]: 0, rule["alternate"]: 37, rule["legacy"]: 63}


def test_the_lambda_entry_point_reads_its_settings_from_the_environment(rule, monkeypatch):
    settings = rule["settings"]
    for name, value in (("PARAMETER_NAME", settings["parameter_name"]), ("RULE_ARN", settings["rule_arn"]),
                        ("LEGACY_TARGET_GROUP_ARN", settings["legacy_target_group_arn"]),
                        ("SERVICE_TARGET_GROUP_ARNS", ",".join(settings["service_target_group_arns"]))):
        monkeypatch.setenv(name, value)
    rule["ssm"].put_parameter(Name=PARAMETER, Type="String", Value="80", Overwrite=True)
    event = {"source": "aws.ssm", "detail-type": "Parameter Store Change", "detail": {"name": PARAMETER, "operation": "Update"}}
    assert handler.handler(event, None)["outcome"] == "applied"
    assert _weights(rule) == {rule["live"]: 80, rule["alternate"]: 0, rule["legacy"]: 20}
