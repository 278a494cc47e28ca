"""Every AWS API call the app's automations make at run time is one botocore's service models accept: the
traffic-shift state machines' aws-sdk tasks (App Mesh variant), the rollback Automation documents' API steps,
and the AwsCustomResource calls (replica keys, the CloudFront prefix-list lookup, the edge's parameter reads).

A misspelled or wrongly cased parameter, a missing required one, or a selector into a response member that does
not exist fails only when the automation runs in AWS, typically during an incident; this reads the synthesized
templates instead (tests/sdk_calls.py has the rules and their sources)."""

from __future__ import annotations

from collections import Counter

import botocore.session
import pytest

from tests.sdk_calls import SdkCall, automation_calls, calls_in, check, custom_resource_call, exact, pascal, state_machine_calls

# The calls each variant must contain, so a change in how they are found cannot empty the check.
EXPECTED = {
    "dev": {("ecs", "DescribeServices"), ("ecs", "UpdateService"), ("ecs", "DescribeServiceDeployments"),
            ("ecs", "DescribeServiceRevisions"), ("kms", "ReplicateKey"), ("kms", "ScheduleKeyDeletion"),
            ("ec2", "DescribeManagedPrefixLists"), ("ssm", "GetParameter")},
    "appmesh": {("appmesh", "DescribeRoute"), ("appmesh", "UpdateRoute"), ("cloudwatch", "DescribeAlarms"),
                ("cloudwatch", "GetMetricData"), ("ecs", "DescribeServices"), ("ecs", "UpdateService"),
                ("ecs", "DescribeServiceDeployments")},
    "prod": {("ecs", "DescribeServices"), ("ecs", "UpdateService"), ("ecs", "DescribeServiceDeployments"), ("ssm", "GetParameter")},
}


@pytest.mark.parametrize("variant", sorted(EXPECTED))
def test_every_api_call_matches_the_service_model(variant: str, request: pytest.FixtureRequest) -> None:
    assembly = request.getfixturevalue(variant)
    calls = [call for stack, template in assembly.templates.items() for call in calls_in(template, stack)]
    found = Counter((call.service, call.operation) for call in calls)
    assert EXPECTED[variant] <= found.keys(), f"calls not found in {variant}: {EXPECTED[variant] - found.keys()}"
    assert [error for call in calls for error in check(call)] == []


def test_the_traffic_shift_reads_what_its_tasks_return(appmesh) -> None:
    """The selectors checked include the paths later states read through each task's ResultSelector, e.g. the
    running count the scale-out waits on, each alarm's state and the canary's request count."""
    selectors = {(call.operation, selector) for stack, template in appmesh.templates.items()
                 for call in calls_in(template, stack) for selector in call.selectors}
    assert {("DescribeServices", ("Services", 0, "RunningCount")), ("DescribeServices", ("Services", 0, "DesiredCount")),
            ("DescribeAlarms", ("MetricAlarms", 0, "StateValue")), ("DescribeRoute", ("Route", "Spec")),
            ("GetMetricData", ("MetricDataResults", 0, "Values"))} <= selectors


# --- The checker finds what it is for ------------------------------------------------------------------

def _task(resource: str, parameters: dict, **state) -> dict:
    return {"StartAt": "Call", "States": {"Call": {"Type": "Task", "Resource": resource, "Parameters": parameters,
                                                  "End": True, **state}}}


def _errors(calls) -> list[str]:
    return [error for call in calls for error in check(call)]


def test_unknown_services_and_operations_are_reported() -> None:
    assert "has no operation 'DescribeService'" in " ".join(_errors(state_machine_calls(
        _task("arn:aws:states:::aws-sdk:ecs:describeService", {"Services": ["a"]}), "sm")))
    assert "unknown service 'elasticcontainerservice'" in " ".join(_errors(state_machine_calls(
        _task("arn:aws:states:::aws-sdk:elasticcontainerservice:describeServices", {}), "sm")))
    assert "has no operation 'describe_services'" in " ".join(_errors(automation_calls(
        {"mainSteps": [{"name": "S", "action": "aws:executeAwsApi", "inputs": {"Service": "ecs", "Api": "describe_services"}}]}, "doc")))


def test_misspelled_and_wrongly_cased_parameters_are_reported() -> None:
    # Step Functions wants PascalCase at every level; Automation wants boto3's names.
    assert _errors(state_machine_calls(_task("arn:aws:states:::aws-sdk:ecs:describeServices", {"cluster": "c", "Services": ["s"]}), "sm")) \
        == ["sm state Call: ecs.DescribeServices: unknown member 'cluster' of DescribeServicesRequest (members: Cluster, Include, Services)"]
    nested = {"MeshName": "m", "VirtualRouterName": "r", "RouteName": "n",
              "Spec": {"HttpRoute": {"Match": {"Prefix": "/"}, "Action": {"WeightedTargets": [{"VirtualNode": "a", "weight": 1}]}}}}
    assert "unknown member 'weight' of WeightedTarget" in " ".join(_errors(state_machine_calls(
        _task("arn:aws:states:::aws-sdk:appmesh:updateRoute", nested), "sm")))
    assert "unknown member 'Cluster'" in " ".join(_errors(automation_calls({"mainSteps": [{
        "name": "S", "action": "aws:executeAwsApi", "inputs": {"Service": "ecs", "Api": "UpdateService", "Cluster": "c", "service": "s"}}]}, "doc")))
    assert "unknown member 'KeyID'" in " ".join(check(custom_resource_call(
        {"service": "KMS", "action": "scheduleKeyDeletion", "parameters": {"KeyID": "k"}}, "cr")))


def test_missing_required_members_and_wrong_values_are_reported() -> None:
    errors = " ".join(_errors(state_machine_calls(_task("arn:aws:states:::aws-sdk:ecs:updateService",
                                                        {"Cluster": "c", "DesiredCount": "two"}), "sm")))
    assert "required member 'Service' of UpdateServiceRequest is missing" in errors
    assert "DesiredCount: expected a integer, got 'two'" in errors
    # A JSONPath-valued key gives the member; a placeholder is any value.
    assert _errors(state_machine_calls(_task("arn:aws:states:::aws-sdk:ecs:updateService",
                                             {"Cluster": "c", "Service.$": "$.name", "DesiredCount": "${Token}"}), "sm")) == []
    assert "'Composite' is not one of" in " ".join(_errors(state_machine_calls(_task(
        "arn:aws:states:::aws-sdk:cloudwatch:describeAlarms", {"AlarmTypes": ["Composite"]}), "sm")))


def test_selectors_into_missing_response_members_are_reported() -> None:
    read = _task("arn:aws:states:::aws-sdk:ecs:describeServices", {"Services": ["s"]},
                 ResultSelector={"Services.$": "$.Services"}, ResultPath="$.svc", End=False, Next="Check")
    read["States"]["Check"] = {"Type": "Choice", "Choices": [
        {"Variable": "$.svc.Services[0].runningCount", "NumericGreaterThan": 0, "Next": "Call"}], "Default": "Call"}
    assert _errors(state_machine_calls(read, "sm")) == [
        "sm state Call: ecs.DescribeServices response has no $.Services[0].runningCount: "
        "Service has no member 'runningCount' (members: " + ", ".join(sorted(pascal(m) for m in _members("ecs", "Service"))) + ")"]
    assert "response has no $.Services[0].taskDefinition" in " ".join(_errors(automation_calls({"mainSteps": [{
        "name": "S", "action": "aws:executeAwsApi", "inputs": {"Service": "ecs", "Api": "DescribeServices", "services": ["s"]},
        "outputs": [{"Name": "Td", "Selector": "$.Services[0].taskDefinition", "Type": "String"}]}]}, "doc")))
    assert "response has no $.PrefixList[0].PrefixListId" in " ".join(check(custom_resource_call(
        {"service": "EC2", "action": "describeManagedPrefixLists", "outputPaths": ["PrefixList.0.PrefixListId"]}, "cr")))
    assert check(SdkCall("cr", "ssm", "GetParameter", {"Name": "n"}, exact, (("Parameter", "Value"),))) == []


def _members(service: str, shape: str) -> list[str]:
    return list(botocore.session.get_session().get_service_model(service).shape_for(shape).members)
