"""ListenerRuleGuard's function (the strangler fig's, entry point ``guard``) against moto's ELBv2: traffic-shifting
listener rules without a legacy function, whose weights a stack update wrote back (aws/aws-cdk#36649).

The function knows only the cluster and the services' names; ECS's DescribeServices tells it each service's
production listener rule and target groups. moto has no ECS ListServiceDeployments nor the load balancers'
``advancedConfiguration``: botocore's Stubber answers both calls, checking each request's and answer's members
against the API's model (not enum values: the deployment statuses are checked against the model below).
"""

from __future__ import annotations

import boto3
import botocore.session
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from weights_function import REGION, forward, handler, listener
from weights import rule_weights  # importable once weights_function has put the function's folder on the path


@pytest.fixture
def stack(monkeypatch, aws_session):
    """Two services' routes as CloudFormation writes them: all weight on the first group, none on the alternate."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        elbv2, ec2 = aws_session.client("elbv2", REGION), aws_session.client("ec2", REGION)
        vpc, listener_arn = listener(elbv2, ec2)
        rules = {}
        for priority, name in enumerate(("persona", "vc-start"), start=1):
            live, alternate = (elbv2.create_target_group(Name=n, Protocol="HTTP", Port=8080, VpcId=vpc, TargetType="ip")
                               ["TargetGroups"][0]["TargetGroupArn"] for n in (name, f"{name}-alt"))
            rule_arn = elbv2.create_rule(
                ListenerArn=listener_arn, Priority=priority,
                Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": [f"/api/{name}", f"/api/{name}/*"]}}],
                Actions=[forward({live: 100, alternate: 0})])["Rules"][0]["RuleArn"]
            rules[name] = {"rule_arn": rule_arn, "target_group_arns": [live, alternate],
                           "service_arn": f"arn:aws:ecs:{REGION}:123456789012:service/mf/{name}"}
        ecs = aws_session.client("ecs", REGION)
        with Stubber(ecs) as ecs_stub:
            yield {"elbv2": elbv2, "ec2": ec2, "vpc": vpc, "ecs": ecs, "ecs_stub": ecs_stub, "rules": rules, "addresses": iter(range(10, 250))}


def _weights(stack, name):
    (described,) = stack["elbv2"].describe_rules(RuleArns=[stack["rules"][name]["rule_arn"]])["Rules"]
    (action,) = described["Actions"]
    return [g["Weight"] for g in action["ForwardConfig"]["TargetGroups"]]


def _serve_from(stack, name, group):
    """ECS registered a running task of ``name`` in its group ``group`` (0 first, 1 alternate); moto reports it healthy."""
    subnet = stack["ec2"].create_subnet(VpcId=stack["vpc"], CidrBlock=f"10.0.{next(stack['addresses'])}.0/24",
                                        AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
    address = stack["ec2"].create_network_interface(SubnetId=subnet)["NetworkInterface"]["PrivateIpAddress"]
    stack["elbv2"].register_targets(TargetGroupArn=stack["rules"][name]["target_group_arns"][group], Targets=[{"Id": address, "Port": 8080}])


def _service(stack, name, advanced=True):
    """DescribeServices' description of ``name``: its load balancer as the services stack configures it (the rule and
    both groups in ``advancedConfiguration``), or, ``advanced=False``, as before its first deployment with them."""
    arn = f"arn:aws:ecs:{REGION}:123456789012:service/mf/{name}"
    balancer = {"containerName": "app", "containerPort": 8080}
    if name in stack["rules"]:
        rule = stack["rules"][name]
        balancer["targetGroupArn"] = rule["target_group_arns"][0]
        if advanced:
            balancer["advancedConfiguration"] = {
                "alternateTargetGroupArn": rule["target_group_arns"][1], "productionListenerRule": rule["rule_arn"],
                "roleArn": f"arn:aws:iam::123456789012:role/{name}-alternate-target"}
    return {"serviceArn": arn, "serviceName": name, "clusterArn": f"arn:aws:ecs:{REGION}:123456789012:cluster/mf",
            "status": "ACTIVE", "loadBalancers": [balancer]}


def _describe(stack, *names, missing=(), advanced=True):
    """What DescribeServices answers for one call naming ``names`` (then ``missing``, which it does not find)."""
    stack["ecs_stub"].add_response(
        "describe_services",
        {"services": [_service(stack, name, advanced) for name in names],
         "failures": [{"arn": f"arn:aws:ecs:{REGION}:123456789012:service/mf/{name}", "reason": "MISSING"} for name in missing]},
        {"cluster": "mf", "services": [*names, *missing]})


def _deployments(stack, *under_way, names=None):
    """What ListServiceDeployments answers for each service, in order: a deployment under way or none."""
    for name, busy in zip(names or stack["rules"], under_way, strict=True):
        response = {"serviceDeployments": [{
            "serviceDeploymentArn": f"arn:aws:ecs:{REGION}:123456789012:service-deployment/mf/{name}/abc", "status": "IN_PROGRESS"}]
            if busy else []}
        stack["ecs_stub"].add_response("list_service_deployments", response, {
            "cluster": "mf", "service": f"arn:aws:ecs:{REGION}:123456789012:service/mf/{name}", "status": handler.DEPLOYMENT_UNDER_WAY})


def _guard(stack, services=None):
    return handler.guard_services(stack["elbv2"], stack["ecs"], "mf", services or list(stack["rules"]),
                                  trigger="CloudFormation Stack Status Change")


def test_weights_on_a_group_without_healthy_targets_move_to_the_group_that_has_them(stack):
    """After an odd number of deployments persona's tasks are in the alternate group; the stack update wrote 100/0."""
    _serve_from(stack, "persona", 1)
    _serve_from(stack, "vc-start", 0)
    _describe(stack, "persona", "vc-start")
    _deployments(stack, False, False)
    result = _guard(stack)
    assert [r["outcome"] for r in result["rules"]] == ["applied", "unchanged"]
    assert _weights(stack, "persona") == [0, 100]
    assert _weights(stack, "vc-start") == [100, 0]
    stack["ecs_stub"].assert_no_pending_responses()


def test_weights_already_on_the_serving_group_are_left_alone(stack, monkeypatch):
    _serve_from(stack, "persona", 0)
    _serve_from(stack, "vc-start", 0)
    # Draining or not, tasks left in the other group do not make the guard move anything.
    _serve_from(stack, "vc-start", 1)
    modified = []
    monkeypatch.setattr(stack["elbv2"], "modify_rule", lambda **kwargs: modified.append(kwargs))
    _describe(stack, "persona", "vc-start")
    _deployments(stack, False, False)
    assert [r["outcome"] for r in _guard(stack)["rules"]] == ["unchanged", "unchanged"]
    assert modified == [] and _weights(stack, "persona") == [100, 0]


def test_a_rule_without_any_healthy_group_keeps_its_weights_and_the_run_fails_after_the_others(stack, caplog):
    _serve_from(stack, "vc-start", 1)  # persona has no task in either group
    _describe(stack, "persona", "vc-start")
    _deployments(stack, False, False)
    with pytest.raises(RuntimeError, match="1 listener rules or services were left as they were"):
        _guard(stack)
    assert _weights(stack, "persona") == [100, 0]
    assert _weights(stack, "vc-start") == [0, 100]  # the other rule was still put right
    assert '"outcome": "failed"' in caplog.text and "no service target group has healthy targets" in caplog.text


def test_a_rule_whose_service_is_being_deployed_is_skipped_and_logged(stack, caplog, monkeypatch):
    """ECS owns the weights while it deploys (the canary's split would look like weights to move); its end
    leaves them on the live group."""
    _serve_from(stack, "persona", 1)
    _serve_from(stack, "vc-start", 1)
    described = []
    monkeypatch.setattr(stack["elbv2"], "describe_rules", lambda **kwargs: described.append(kwargs) or pytest.fail("read a rule"))
    _describe(stack, "persona", "vc-start")
    _deployments(stack, True, True)
    result = _guard(stack)
    assert [r["outcome"] for r in result["rules"]] == ["skipped", "skipped"]
    assert described == []
    monkeypatch.undo()
    assert _weights(stack, "persona") == [100, 0] and _weights(stack, "vc-start") == [100, 0]
    assert '"outcome": "skipped"' in caplog.text and "service-deployment/mf/persona/abc" in caplog.text


def test_a_service_without_an_advanced_configuration_is_skipped_with_a_warning(stack, caplog, monkeypatch):
    """Not yet deployed with its alternate group and rule: ECS shifts nothing on it, and nothing names the rule."""
    _serve_from(stack, "persona", 1)
    _serve_from(stack, "vc-start", 1)
    _describe(stack, "persona", advanced=False)
    _describe(stack, "vc-start")
    _deployments(stack, False, names=["vc-start"])  # none for persona: nothing to guard
    result = handler.guard_services(stack["elbv2"], stack["ecs"], "mf", ["persona"], trigger=None)
    assert [(r["outcome"], r["service"]) for r in result["rules"]] == [("skipped", "persona")]
    assert "advancedConfiguration" in caplog.text and "WARNING" in caplog.text
    assert _weights(stack, "persona") == [100, 0]
    assert handler.guard_services(stack["elbv2"], stack["ecs"], "mf", ["vc-start"])["rules"][0]["outcome"] == "applied"
    stack["ecs_stub"].assert_no_pending_responses()


def test_services_are_described_ten_at_a_time_and_each_rule_comes_from_ecs(stack):
    """12 services: two DescribeServices calls (10, then 2). Only the two with a rule have one to guard; the rules'
    and groups' ARNs the function writes are the ones ECS answered, as the function was given none."""
    _serve_from(stack, "persona", 1)
    _serve_from(stack, "vc-start", 1)
    services = ["persona", *(f"worker-{i}" for i in range(9)), "vc-start", "worker-9"]
    _describe(stack, *services[:10])
    _deployments(stack, False, names=["persona"])
    _describe(stack, *services[10:])
    _deployments(stack, False, names=["vc-start"])
    result = _guard(stack, services)
    outcomes = {r["service"]: r["outcome"] for r in result["rules"]}
    assert outcomes == {"persona": "applied", "vc-start": "applied", **{f"worker-{i}": "skipped" for i in range(10)}}
    assert [r["rule_arn"] for r in result["rules"] if r["outcome"] == "applied"] == [
        stack["rules"]["persona"]["rule_arn"], stack["rules"]["vc-start"]["rule_arn"]]
    assert _weights(stack, "persona") == [0, 100] and _weights(stack, "vc-start") == [0, 100]
    stack["ecs_stub"].assert_no_pending_responses()


def test_a_service_ecs_does_not_find_fails_the_run_after_the_others(stack, caplog):
    _serve_from(stack, "persona", 1)
    _describe(stack, "persona", missing=["vc-start"])
    _deployments(stack, False, names=["persona"])
    with pytest.raises(RuntimeError, match="1 listener rules or services were left as they were"):
        _guard(stack, ["persona", "vc-start"])
    assert _weights(stack, "persona") == [0, 100]
    assert '"outcome": "failed"' in caplog.text and "DescribeServices: MISSING" in caplog.text


def test_an_aws_error_for_one_service_fails_the_run_after_the_others(stack, caplog):
    _serve_from(stack, "vc-start", 1)
    _describe(stack, "persona", "vc-start")
    stack["ecs_stub"].add_client_error("list_service_deployments", "AccessDeniedException", "not authorized")
    _deployments(stack, False, names=["vc-start"])
    with pytest.raises(RuntimeError, match="1 listener rules or services were left as they were"):
        _guard(stack)
    assert _weights(stack, "vc-start") == [0, 100]  # guarded although persona's check failed before it
    assert "AccessDeniedException" in caplog.text


def test_the_deployment_statuses_it_skips_are_ecs_statuses_of_deployments_under_way():
    """Stubber does not check enum values: a misspelt status would pass there and fail every run in ECS."""
    statuses = botocore.session.get_session().get_service_model("ecs").shape_for("ServiceDeploymentStatus").enum
    assert set(handler.DEPLOYMENT_UNDER_WAY) <= set(statuses)
    assert not {"SUCCESSFUL", "STOPPED", "ROLLBACK_SUCCESSFUL", "ROLLBACK_FAILED"} & set(handler.DEPLOYMENT_UNDER_WAY)


def _lambda_environment(stack, monkeypatch) -> None:
    """What the Lambda entry point reads: the cluster and its guarded services, and boto3 clients (the stubbed ones)."""
    monkeypatch.setenv("CLUSTER", "mf")
    monkeypatch.setenv("SERVICES", "persona,vc-start")
    monkeypatch.setattr(boto3, "client", lambda name: {"elbv2": stack["elbv2"], "ecs": stack["ecs"]}[name])


# The two CloudFormation events that invoke it (shapes: CloudFormation User Guide, "Stack Status Change" and "Resource
# Status Change event detail"): the function reads the current state, not the event, and logs which one ran it.
_STACK_UPDATED = {"source": "aws.cloudformation", "detail-type": "CloudFormation Stack Status Change",
                  "detail": {"status-details": {"status": "UPDATE_COMPLETE"}}}
_RULE_UPDATED = {"source": "aws.cloudformation", "detail-type": "CloudFormation Resource Status Change",
                 "detail": {"logical-resource-id": "IngresspersonarouteRule0123ABCD", "status-details": {"status": "UPDATE_COMPLETE"},
                            "resource-type": "AWS::ElasticLoadBalancingV2::ListenerRule"}}


@pytest.mark.parametrize("event", [_STACK_UPDATED, _RULE_UPDATED], ids=["stack-updated", "rule-updated"])
def test_the_lambda_entry_point_reads_the_cluster_and_its_services_from_the_environment(stack, monkeypatch, caplog, event):
    _serve_from(stack, "persona", 1)
    _serve_from(stack, "vc-start", 1)
    _describe(stack, "persona", "vc-start")
    _deployments(stack, False, False)
    _lambda_environment(stack, monkeypatch)
    with caplog.at_level("INFO"):
        assert handler.guard(event, None)["outcome"] == "guarded"
    assert _weights(stack, "persona") == [0, 100] and _weights(stack, "vc-start") == [0, 100]
    assert f'"trigger": "{event["detail-type"]}"' in caplog.text



@pytest.mark.parametrize("service_weights, serving, expected", [
    ({"live": 100, "alt": 0}, frozenset({"alt"}), {"live": 0, "alt": 100}),
    ({"live": 0, "alt": 100}, frozenset({"alt"}), {"live": 0, "alt": 100}),
    ({"live": 100, "alt": 0}, frozenset({"live", "alt"}), {"live": 100, "alt": 0}),
    # Weights on neither group (a rule written by hand): the serving ones share equally.
    ({"live": 0, "alt": 0}, frozenset({"live", "alt"}), {"live": 50, "alt": 50}),
])
def test_without_a_legacy_group_the_service_takes_everything_on_its_serving_groups(service_weights, serving, expected):
    assert rule_weights(100, None, service_weights, serving) == expected


def test_without_a_legacy_group_the_weights_refuse_to_guess_the_live_group_or_a_share():
    with pytest.raises(ValueError, match="no service target group has healthy targets"):
        rule_weights(100, None, {"live": 100, "alt": 0}, frozenset())
    with pytest.raises(ValueError, match="the service takes 100 %"):
        rule_weights(40, None, {"live": 100, "alt": 0}, frozenset({"live"}))
