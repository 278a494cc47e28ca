"""The SSM Automation documents the runbooks run (constructs/operations), and the signing-key rotation alarm.
The region-failover document and its function: tests/test_region_failover.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.assembly import Assembly

REGIONS = ("eu-central-1", "eu-west-1")
SERVICES = ("auth", "persona", "vc-start")


# ECS's service deployment states ("View service history using Amazon ECS service deployments", ECS developer
# guide): a deployment in one of the first five is still under way.
UNDER_WAY_DEPLOYMENT_STATES = {"PENDING", "IN_PROGRESS", "STOP_REQUESTED", "ROLLBACK_REQUESTED", "ROLLBACK_IN_PROGRESS"}
FINAL_DEPLOYMENT_STATES = {"SUCCESSFUL", "STOPPED", "ROLLBACK_SUCCESSFUL", "ROLLBACK_FAILED"}


def test_the_rollback_knows_every_deployment_state_ecs_has():
    """A state that botocore's ECS model gains must be sorted into under way or final, here and in the document."""
    import botocore.session

    from constructs.operations.service_rollback import DEPLOYMENT_FINAL_STATES

    model = botocore.session.get_session().get_service_model("ecs")
    assert set(model.shape_for("ServiceDeploymentStatus").enum) == UNDER_WAY_DEPLOYMENT_STATES | FINAL_DEPLOYMENT_STATES
    assert set(DEPLOYMENT_FINAL_STATES) == FINAL_DEPLOYMENT_STATES


def _document(assembly: Assembly, stack: str, name: str) -> dict[str, Any]:
    documents = [d["Properties"] for d in assembly.resources(stack, "AWS::SSM::Document").values() if d["Properties"]["Name"] == name]
    assert len(documents) == 1, f"{stack}: {name}"
    return documents[0]


def _steps(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["name"]: step for step in document["Content"]["mainSteps"]}


def _pick_revision(document: dict[str, Any]):
    """The PickRevision step's script, run here as Automation runs it."""
    namespace: dict[str, Any] = {}
    exec(_steps(document)["PickRevision"]["inputs"]["Script"], namespace)  # noqa: S102 (the app's own script)
    return namespace["handler"]


@pytest.mark.parametrize("variant", ["dev", "appmesh"])
def test_the_rollback_document_updates_the_service_and_waits_for_its_deployment(request, variant):
    assembly: Assembly = request.getfixturevalue(variant)
    for region in REGIONS:
        document = _document(assembly, f"mf-{region}/services", "mf-rollback-service")
        assert (document["DocumentType"], document["Content"]["schemaVersion"]) == ("Automation", "0.3")
        assert document["UpdateMethod"] == "NewVersion"  # a named document changes by new versions
        parameters = document["Content"]["parameters"]
        ecs_services = set(SERVICES) | ({f"{name}-canary" for name in SERVICES} if variant == "appmesh" else set())
        assert set(parameters["ServiceName"]["allowedValues"]) == ecs_services
        assert parameters["Revision"]["default"] == ""
        steps = _steps(document)
        assert [(name, step["action"]) for name, step in steps.items()] == [
            ("DescribeService", "aws:executeAwsApi"), ("PickRevision", "aws:executeScript"),
            ("UpdateService", "aws:executeAwsApi"), ("ReadDeployment", "aws:executeAwsApi"),
            ("CheckDeploymentTarget", "aws:assertAwsResourceProperty"), ("WaitForDeployment", "aws:waitForAwsResourceProperty"),
            ("CheckDeployment", "aws:assertAwsResourceProperty"), ("CheckRevision", "aws:assertAwsResourceProperty")]
        assert steps["UpdateService"]["inputs"] == {"Service": "ecs", "Api": "UpdateService", "cluster": "mf",
                                                   "service": "{{ ServiceName }}", "taskDefinition": "{{ PickRevision.TaskDefinition }}"}
        # Every later step follows the one service deployment that this UpdateService started ...
        assert steps["UpdateService"]["outputs"] == [
            {"Name": "ServiceDeployment", "Selector": "$.service.currentServiceDeployment", "Type": "String"}]
        for name in ("ReadDeployment", "WaitForDeployment", "CheckDeployment"):
            inputs = steps[name]["inputs"]
            assert (inputs["Api"], inputs["serviceDeploymentArns"]) == (
                "DescribeServiceDeployments", ["{{ UpdateService.ServiceDeployment }}"]), name
        # ... after checking that it deploys the picked revision (else the wait could pass on an older one).
        target = steps["CheckDeploymentTarget"]["inputs"]
        assert (target["Api"], target["serviceRevisionArns"], target["PropertySelector"], target["DesiredValues"]) == (
            "DescribeServiceRevisions", ["{{ ReadDeployment.TargetRevision }}"], "$.serviceRevisions[0].taskDefinition",
            ["{{ PickRevision.TaskDefinition }}"])
        # The wait ends on any final state (a rolled-back deployment ends it at once), and only SUCCESSFUL passes.
        wait, check = steps["WaitForDeployment"]["inputs"], steps["CheckDeployment"]["inputs"]
        assert wait["PropertySelector"] == check["PropertySelector"] == "$.serviceDeployments[0].status"
        assert set(wait["DesiredValues"]) == FINAL_DEPLOYMENT_STATES and check["DesiredValues"] == ["SUCCESSFUL"]
        assert steps["CheckRevision"]["inputs"]["DesiredValues"] == ["{{ PickRevision.TaskDefinition }}"]
        assert all(step["onFailure"] == "Abort" for step in steps.values())
        # The default CANARY (5 %, 10 min step bake, 10 min final bake): an hour covers it.
        assert steps["WaitForDeployment"]["timeoutSeconds"] == 3600


@pytest.mark.parametrize("deployment, minutes", [
    ({"strategy": "ROLLING"}, 60),
    ({"strategy": "CANARY", "step_bake_minutes": 60, "bake_time_minutes": 30}, 60 + 30 + 30),
    ({"strategy": "LINEAR", "linear_step_percent": 20}, 5 * 10 + 10 + 30),
    # The longest the config allows (CloudFormation's 33 hours: 33 step bakes of 60 min); the rollback counts 34 steps.
    ({"strategy": "LINEAR", "linear_step_percent": 3, "step_bake_minutes": 60, "bake_time_minutes": 0}, 34 * 60 + 30),
])
def test_the_rollback_waits_as_long_as_the_deployment_settings_make_ecs_take(deployment, minutes):
    """A LINEAR rollback with the default 20 % steps bakes five times: a fixed hour would fail a rollback ECS completes."""
    from stacks.config import load_config
    from stacks.services_stack import rollback_timeout
    from tests.assembly import cdk_json_context

    config = load_config({**cdk_json_context(), "deployment": deployment})
    assert rollback_timeout(config.deployment).to_minutes() == minutes


def test_the_rollback_picks_the_previous_revision_or_the_one_asked_for(dev):
    pick = _pick_revision(_document(dev, "mf-eu-central-1/services", "mf-rollback-service"))
    running = "arn:aws:ecs:eu-central-1:111122223333:task-definition/mfeucentral1servicesauthTaskDefinitionB2C89D39:12"
    family = running.rsplit(":", 1)[0]
    assert pick({"Running": running, "Revision": ""}, None) == {"TaskDefinition": f"{family}:11"}
    assert pick({"Running": running, "Revision": "7"}, None) == {"TaskDefinition": f"{family}:7"}
    for revision in ("12", "0"):  # the running revision itself, or none
        with pytest.raises(ValueError, match="no revision to roll back to"):
            pick({"Running": running, "Revision": revision}, None)
    with pytest.raises(ValueError, match="no revision to roll back to"):
        pick({"Running": running.rsplit(":", 1)[0] + ":1", "Revision": ""}, None)  # nothing before revision 1


def test_the_rollback_role_may_only_describe_and_update_the_clusters_services_and_read_their_deployments(dev):
    stack = "mf-eu-central-1/services"
    document = _document(dev, stack, "mf-rollback-service")
    role_id = document["Content"]["parameters"]["AutomationAssumeRole"]["default"]["Fn::GetAtt"][0]
    role = dev.template(stack)["Resources"][role_id]["Properties"]
    trust = role["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "ssm.amazonaws.com"}]
    assert set(trust[0]["Condition"]) == {"StringEquals", "ArnLike"}  # this account's automation executions only
    statements = [s for p in dev.resources(stack, "AWS::IAM::Policy").values()
                  if {"Ref": role_id} in p["Properties"]["Roles"] for s in p["Properties"]["PolicyDocument"]["Statement"]]
    assert [sorted(s["Action"]) for s in statements] == [
        ["ecs:DescribeServices", "ecs:UpdateService"], ["ecs:DescribeServiceDeployments", "ecs:DescribeServiceRevisions"]]
    services = [json.dumps(r) for r in statements[0]["Resource"]]
    assert len(services) == len(SERVICES) and all(f':service/mf/{name}"' in r for name, r in zip(SERVICES, services, strict=True))
    # Only these services' deployments and revisions (ECS assigns their IDs, hence the trailing *), and the
    # services themselves, which the Service Authorization Reference lists as required for both actions too.
    deployments = sorted(json.dumps(r) for r in statements[1]["Resource"])
    assert deployments == sorted(r for r in deployments for kind in ("service", "service-deployment", "service-revision")
                                 for name in SERVICES if f':{kind}/mf/{name}{"" if kind == "service" else "/*"}"' in r)
    assert len(deployments) == 3 * len(SERVICES)
    assert "PermissionsBoundary" in role  # the stage's boundary caps it too


def test_replaced_task_definitions_stay_registered_for_the_rollback(dev, appmesh):
    for assembly in (dev, appmesh):
        for region in REGIONS:
            definitions = assembly.resources(f"mf-{region}/services", "AWS::ECS::TaskDefinition").values()
            assert definitions and all(d.get("UpdateReplacePolicy") == "Retain" for d in definitions)


def test_a_failed_signing_key_rotation_alarms_in_the_primary_region(dev):
    stack = "mf-eu-central-1/data"
    alarms = [a["Properties"] for a in dev.resources(stack, "AWS::CloudWatch::Alarm").values()]
    assert [a["AlarmName"] for a in alarms] == ["mf-auth-signing-key-rotation-errors"]
    alarm = alarms[0]
    (function_id,) = [k for k, f in dev.resources(stack, "AWS::Lambda::Function").items()
                      if "Rotates the RSA key" in f["Properties"].get("Description", "")]
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == ("AWS/Lambda", "Errors", "Sum")
    assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": function_id}}]
    assert (alarm["Threshold"], alarm["ComparisonOperator"], alarm["TreatMissingData"]) == (0, "GreaterThanThreshold", "notBreaching")
    assert alarm["AlarmDescription"].endswith("Runbook: runbooks/secret-rotation-failure.md")
    assert alarm["AlarmActions"] == alarm["OKActions"] and "AlarmsTopic" in json.dumps(alarm["AlarmActions"])
    # The other region has no data stack: the secret is rotated in the primary and replicated.
    assert not any(path.startswith("mf-eu-west-1/data") for path in dev.templates)
