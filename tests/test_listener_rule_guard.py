"""ListenerRuleGuard (aws/aws-cdk#36649): a stack update that changes a listener rule ECS shifts traffic on
writes the template's weights back, all on the first target group, which after an odd number of ECS
deployments has no tasks. One function per services stack puts the weights back after each update.

Its function is the strangler fig's (entry point ``guard``), tested against moto in
services/tests/test_listener_rule_guard_handler.py. Its environment names the cluster and the services only
(ECS describes each service's rule and target groups).
"""

from __future__ import annotations

import json

import pytest

from tests.test_events import REGIONS

EXPOSED = ("auth", "persona", "vc-start")


def _services(assembly, region):
    return assembly.template(f"mf-{region}/services")["Resources"]


def _of_type(resources, resource_type):
    return {logical_id: r for logical_id, r in resources.items() if r["Type"] == resource_type}


def _guards(resources):
    return {i: r["Properties"] for i, r in _of_type(resources, "AWS::Lambda::Function").items()
            if r["Properties"]["Handler"] == "handler.guard"}


def _guard(resources):
    ((function_id, function),) = _guards(resources).items()
    return function_id, function


def _id(resources, prefix, resource_type):
    (logical_id,) = (i for i in _of_type(resources, resource_type) if i.startswith(prefix))
    return logical_id


def _rule_id(resources, service):
    return _id(resources, f"Ingress{service.replace('-', '')}route", "AWS::ElasticLoadBalancingV2::ListenerRule")


def _service_id(resources, service):
    return _id(resources, f"{service.replace('-', '')}Service", "AWS::ECS::Service")


def _guarded(resources):
    """The services (config names) the guard's environment names: CLUSTER, the services' own cluster, and SERVICES,
    their names joined by commas. Nothing else: ECS describes each service's rule and target groups."""
    _, function = _guard(resources)
    variables = function["Environment"]["Variables"]
    assert set(variables) == {"CLUSTER", "SERVICES"}
    services = _of_type(resources, "AWS::ECS::Service")
    separator, names = variables["SERVICES"]["Fn::Join"]
    assert separator == ","
    assert all(set(name) == {"Fn::GetAtt"} and name["Fn::GetAtt"][1] == "Name" for name in names), names
    guarded = [services[name["Fn::GetAtt"][0]]["Properties"]["ServiceName"] for name in names]
    assert len(set(guarded)) == len(guarded)
    assert {json.dumps(services[n["Fn::GetAtt"][0]]["Properties"]["Cluster"]) for n in names} == {json.dumps(variables["CLUSTER"])}
    return set(guarded)


def _statements(resources, function):
    role_id = function["Role"]["Fn::GetAtt"][0]
    assert resources[role_id]["Properties"].get("ManagedPolicyArns") is None
    return [s for p in _of_type(resources, "AWS::IAM::Policy").values() if {"Ref": role_id} in p["Properties"]["Roles"]
            for s in p["Properties"]["PolicyDocument"]["Statement"]]


def _resources_by_action(statements):
    by_action = {}
    for statement in statements:
        for action in [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]:
            by_action.setdefault(action, []).extend(statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]])
    return by_action


@pytest.mark.parametrize("region", REGIONS)
def test_one_function_per_services_stack_guards_the_rules_of_every_exposed_service(dev, region):
    resources = _services(dev, region)
    assert _guarded(resources) == set(EXPOSED)
    function_id, function = _guard(resources)
    assert (function["Runtime"], function["Architectures"], function["FunctionName"]) == ("python3.14", ["arm64"], "mf-listener-rule-guard")
    # No other stack of the stage has one.
    assert not [s for s in dev.templates if s.startswith(f"mf-{region}/") and not s.endswith("/services")
                and _guards(dev.template(s).get("Resources", {}))]
    log_group = next(r["Properties"] for r in _of_type(resources, "AWS::Logs::LogGroup").values()
                     if r["Properties"].get("LogGroupName") == "/mf/listener-rule-guard")
    assert log_group["RetentionInDays"] > 0 and "KmsKeyId" in log_group
    assert function["LoggingConfig"]["LogGroup"] == {"Ref": next(i for i, r in _of_type(resources, "AWS::Logs::LogGroup").items()
                                                                 if r["Properties"].get("LogGroupName") == "/mf/listener-rule-guard")}


@pytest.mark.parametrize("region", REGIONS)
def test_an_update_of_a_guarded_rule_or_its_own_stack_or_the_end_of_a_guarded_services_deployment_invokes_it(dev, region):
    """The stack's UPDATE_COMPLETE waits for every service in it to stabilise (a canary's bake), so CloudFormation's
    update of a guarded rule invokes it too. A stack update that ends while a deployment is under way finds its
    services skipped (ECS owns the weights); if it wrote the rule after ECS's last shift, only the deployment's end
    puts the weights right."""
    resources = _services(dev, region)
    function_id, function = _guard(resources)
    rules = {i: r["Properties"] for i, r in _of_type(resources, "AWS::Events::Rule").items()
             if any(t["Arn"] == {"Fn::GetAtt": [function_id, "Arn"]} for t in r["Properties"]["Targets"])}
    patterns = sorted((rule["EventPattern"] for rule in rules.values()), key=lambda pattern: (pattern["source"], pattern["detail-type"]))
    rule_pattern, deployment_pattern = patterns[0], patterns[2]
    assert patterns == [{
        "source": ["aws.cloudformation"], "detail-type": ["CloudFormation Resource Status Change"],
        "detail": {"stack-id": [{"Ref": "AWS::StackId"}], "logical-resource-id": rule_pattern["detail"]["logical-resource-id"],
                   "status-details": {"status": ["UPDATE_COMPLETE"]}},
    }, {
        "source": ["aws.cloudformation"], "detail-type": ["CloudFormation Stack Status Change"],
        "detail": {"stack-id": [{"Ref": "AWS::StackId"}], "status-details": {"status": ["UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE"]}},
    }, {
        "source": ["aws.ecs"], "detail-type": ["ECS Deployment State Change"], "resources": deployment_pattern["resources"],
        "detail": {"eventName": ["SERVICE_DEPLOYMENT_COMPLETED", "SERVICE_DEPLOYMENT_FAILED"]},
    }]
    # CloudFormation's events name the rule by its logical ID in this stack: exactly the guarded rules, literally.
    assert sorted(rule_pattern["detail"]["logical-resource-id"]) == sorted(_rule_id(resources, s) for s in EXPOSED)
    # The events name the service by its ARN, the Ref of AWS::ECS::Service: exactly the guarded services.
    assert sorted(r["Ref"] for r in deployment_pattern["resources"]) == sorted(_service_id(resources, s) for s in EXPOSED)
    for rule in rules.values():
        (target,) = rule["Targets"]
        assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0
        # Failed runs of the function (a rule without healthy targets) land where undeliverable events do, which alarms.
        assert function["DeadLetterConfig"]["TargetArn"] == target["DeadLetterConfig"]["Arn"]
    alarms = {a["Properties"]["AlarmName"]: a["Properties"] for a in dev.resources(f"mf-{region}/observability", "AWS::CloudWatch::Alarm").values()}
    alarm = alarms["mf-listener-rule-guard-dlq-not-empty"]
    assert alarm["AlarmDescription"].endswith("Runbook: runbooks/canary-rollback.md")
    # Only the three rules may invoke it.
    permissions = [p["Properties"] for p in _of_type(resources, "AWS::Lambda::Permission").values()
                   if p["Properties"]["FunctionName"] == {"Fn::GetAtt": [function_id, "Arn"]}]
    assert {p["Principal"] for p in permissions} == {"events.amazonaws.com"}
    assert sorted(p["SourceArn"]["Fn::GetAtt"][0] for p in permissions) == sorted(rules)


@pytest.mark.parametrize("region", REGIONS)
def test_it_may_modify_only_the_guarded_rules_and_read_only_their_services(dev, region):
    resources = _services(dev, region)
    _, function = _guard(resources)
    by_action = _resources_by_action(_statements(resources, function))
    assert set(by_action) == {"elasticloadbalancing:ModifyRule", "elasticloadbalancing:DescribeRules",
                              "elasticloadbalancing:DescribeTargetHealth", "ecs:DescribeServices", "ecs:ListServiceDeployments",
                              "logs:CreateLogStream", "logs:PutLogEvents", "sqs:SendMessage"}
    assert sorted(r["Ref"] for r in by_action["elasticloadbalancing:ModifyRule"]) == sorted(_rule_id(resources, s) for s in EXPOSED)
    # DescribeServices and ListServiceDeployments take the service's ARN as their resource.
    for action in ("ecs:DescribeServices", "ecs:ListServiceDeployments"):
        assert sorted(r["Ref"] for r in by_action[action]) == sorted(_service_id(resources, s) for s in EXPOSED), action
    assert by_action["elasticloadbalancing:DescribeRules"] == ["*"]  # no resource-level permissions for Describe*


def test_app_mesh_shifts_no_load_balancer_traffic_and_has_no_guard(appmesh):
    for region in REGIONS:
        resources = _services(appmesh, region)
        assert _guards(resources) == {}
        assert not [i for i in resources if i.startswith("ListenerRuleGuard")]


def test_a_strangler_fig_keeps_its_own_guard_and_the_guard_takes_the_other_rules(strangler):
    for region in REGIONS:
        resources = _services(strangler, region)
        assert _guarded(resources) == {"persona", "vc-start"}
        guard_id, guard = _guard(resources)
        modified = {r["Ref"] for r in _resources_by_action(_statements(resources, guard))["elasticloadbalancing:ModifyRule"]}
        assert _rule_id(resources, "auth") not in modified
        (updated,) = (r["Properties"]["EventPattern"] for r in _of_type(resources, "AWS::Events::Rule").values()
                      if r["Properties"]["EventPattern"]["detail-type"] == ["CloudFormation Resource Status Change"]
                      and r["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": [guard_id, "Arn"]})
        assert sorted(updated["detail"]["logical-resource-id"]) == sorted(_rule_id(resources, s) for s in ("persona", "vc-start"))
        # auth's rule: its strangler fig's function, invoked by the same stack events, puts the flag's split back.
        (fig,) = (r["Properties"] for i, r in _of_type(resources, "AWS::Lambda::Function").items() if i.startswith("authstranglerfig"))
        assert fig["Handler"] == "handler.handler"
        assert fig["Environment"]["Variables"]["RULE_ARN"] == {"Ref": _rule_id(resources, "auth")}


def test_one_guard_takes_the_services_of_one_cluster_only():
    """Its environment names one cluster: services in two would be looked for in the first and not found."""
    import aws_cdk as cdk
    from aws_cdk import aws_ec2 as ec2
    from aws_cdk import aws_ecs as ecs
    from aws_cdk import aws_elasticloadbalancingv2 as elbv2
    from aws_cdk import aws_logs as logs
    from aws_cdk.assertions import Template

    from constructs.listener_rule_guard import GuardedRule, ListenerRuleGuard

    stack = cdk.Stack(cdk.App(), "guard", env=cdk.Environment(account="111122223333", region="eu-west-1"))
    vpc = ec2.Vpc.from_vpc_attributes(stack, "Vpc", vpc_id="vpc-0123456789abcdef0", availability_zones=["eu-west-1a"])
    listener = elbv2.ApplicationListener.from_application_listener_attributes(
        stack, "Listener", listener_arn="arn:aws:elasticloadbalancing:eu-west-1:111122223333:listener/app/mf/0123456789abcdef/0123456789abcdef",
        security_group=ec2.SecurityGroup.from_security_group_id(stack, "Group", "sg-0123456789abcdef0"))

    def rule(name, cluster_name):
        cluster = ecs.Cluster.from_cluster_attributes(stack, f"{name}Cluster", cluster_name=cluster_name, vpc=vpc)
        return GuardedRule(
            listener_rule=elbv2.ApplicationListenerRule(stack, f"{name}Rule", listener=listener, priority=len(stack.node.children),
                                                        conditions=[elbv2.ListenerCondition.path_patterns([f"/api/{name}"])],
                                                        action=elbv2.ListenerAction.fixed_response(200)),
            service=ecs.FargateService.from_fargate_service_attributes(stack, f"{name}Service", cluster=cluster, service_name=name))

    log_group = logs.LogGroup(stack, "Logs")
    with pytest.raises(ValueError, match="rules=\\[\\] is invalid"):
        ListenerRuleGuard(stack, "Empty", rules=[], log_group=log_group)
    with pytest.raises(ValueError, match="in 2 clusters"):
        ListenerRuleGuard(stack, "Two", rules=[rule("persona", "mf"), rule("vc-start", "other")], log_group=log_group)
    other = cdk.Stack(stack.node.scope, "other", env=cdk.Environment(account="111122223333", region="eu-west-1"))
    foreign = GuardedRule(listener_rule=elbv2.ApplicationListenerRule(
        other, "Rule", listener=listener, priority=9, conditions=[elbv2.ListenerCondition.path_patterns(["/api/other"])],
        action=elbv2.ListenerAction.fixed_response(200)), service=rule("solo", "mf").service)
    # CloudFormation's resource events would name the rule by a logical ID in another stack, which this one never has.
    # (In a stack of its own: the refusal comes after the guard has made its function.)
    scratch = cdk.Stack(stack.node.scope, "scratch", env=cdk.Environment(account="111122223333", region="eu-west-1"))
    with pytest.raises(ValueError, match="must be in the stack of"):
        ListenerRuleGuard(scratch, "Foreign", rules=[foreign], log_group=logs.LogGroup(scratch, "Logs"))
    ListenerRuleGuard(stack, "One", rules=[rule("auth", "mf"), rule("docs", "mf")], log_group=log_group)
    (function,) = _guards(Template.from_stack(stack).to_json()["Resources"]).values()
    assert function["Environment"]["Variables"] == {"CLUSTER": "mf", "SERVICES": "auth,docs"}
