"""The region-failover Automation document and the function it starts (constructs/operations/region_failover.py):
one invoke step plus a check that fails the execution on the function's error, a Python 3.14 arm64 function with
boto3 and the AWS CRT in its layer, a role that may only read and set keys of the edge's store, and the edge
boundary that lets exactly that role through. The handler itself: services/tests/test_region_failover.py."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.assembly import Assembly
from tests.test_operations import _document as operations_document
from tests.test_operations import _steps
from constructs.lambda_layer import LAYER_TARGET

EDGE = "mf-edge/edge"
REGIONS = ("eu-central-1", "eu-west-1")
KVS_ACTIONS = ["cloudfront-keyvaluestore:DescribeKeyValueStore", "cloudfront-keyvaluestore:GetKey",
               "cloudfront-keyvaluestore:PutKey"]
REPO_ROOT = Path(__file__).resolve().parents[1]


def _document(assembly: Assembly) -> dict[str, Any]:
    return operations_document(assembly, EDGE, "mf-region-failover")


def _function(assembly: Assembly) -> tuple[str, dict[str, Any]]:
    (found,) = [(k, f["Properties"]) for k, f in assembly.resources(EDGE, "AWS::Lambda::Function").items()
                if f["Properties"].get("FunctionName") == "mf-region-failover"]
    return found


def _store_id(assembly: Assembly) -> str:
    (store_id,) = assembly.resources(EDGE, "AWS::CloudFront::KeyValueStore")
    return store_id


def _check_result(assembly: Assembly):
    """The CheckResult step's script, run here as Automation runs it."""
    namespace: dict[str, Any] = {}
    exec(_steps(_document(assembly))["CheckResult"]["inputs"]["Script"], namespace)  # noqa: S102 (the app's own script)
    return namespace["handler"]


def test_the_document_invokes_the_function_with_the_target_region_and_then_checks_its_result(dev):
    document = _document(dev)
    assert (document["DocumentType"], document["Content"]["schemaVersion"]) == ("Automation", "0.3")
    parameters = document["Content"]["parameters"]
    assert list(parameters) == ["TargetRegion"]  # no AutomationAssumeRole: it runs as the caller
    assert parameters["TargetRegion"]["allowedValues"] == list(REGIONS)  # primary first
    steps = _steps(document)
    assert [(name, step["action"]) for name, step in steps.items()] == [
        ("SetActiveRegion", "aws:invokeLambdaFunction"), ("CheckResult", "aws:executeScript")]
    function_id, _ = _function(dev)
    invoke = steps["SetActiveRegion"]["inputs"]
    assert invoke == {"FunctionName": {"Ref": function_id}, "InvocationType": "RequestResponse",
                      "InputPayload": {"target_region": "{{ TargetRegion }}"}}
    assert steps["CheckResult"]["inputs"]["InputPayload"] == {"Payload": "{{ SetActiveRegion.Payload }}",
                                                             "TargetRegion": "{{ TargetRegion }}"}
    assert all(step["onFailure"] == "Abort" for step in steps.values())
    # The region it replaced is an output of the execution, where the runbook reads it.
    assert [output["Name"] for output in steps["CheckResult"]["outputs"]] == ["Previous"]
    assert document["Content"]["outputs"] == ["CheckResult.Previous"]
    # No step calls the KeyValueStore API from Automation's own boto3 any more.
    assert "cloudfront-keyvaluestore" not in json.dumps(document["Content"])
    # The function the edge runs reads the key the handler sets.
    edge = json.dumps(dev.template(EDGE))
    assert "const KEY = 'active_region';" in edge and "kvs.get(KEY)" in edge and "kvs.exists(KEY)" in edge


def test_the_check_passes_the_functions_result_and_fails_on_its_error(dev):
    check = _check_result(dev)
    result = {"previous": None, "active_region": "eu-west-1"}
    for payload in (result, json.dumps(result)):  # as an object or as the JSON text Lambda returned
        assert check({"Payload": payload, "TargetRegion": "eu-west-1"}, None) == {"Previous": "None"}
    error = {"errorMessage": "active_region reads 'eu-central-1' after putting 'eu-west-1'", "errorType": "RuntimeError",
             "requestId": "0f6c", "stackTrace": []}
    for payload in (error, json.dumps(error)):
        with pytest.raises(RuntimeError, match="RuntimeError active_region reads 'eu-central-1'"):
            check({"Payload": payload, "TargetRegion": "eu-west-1"}, None)
    for payload in ({"previous": None, "active_region": "eu-central-1"}, "", "Task timed out after 30.00 seconds"):
        with pytest.raises(RuntimeError, match="did not set eu-west-1"):
            check({"Payload": payload, "TargetRegion": "eu-west-1"}, None)


@pytest.mark.parametrize("variant", ["dev", "prod"])
def test_the_function_runs_python_3_14_on_arm64_with_the_crt_layer_and_knows_the_store_and_regions(request, variant):
    assembly: Assembly = request.getfixturevalue(variant)
    _, function = _function(assembly)
    assert (function["Runtime"], function["Architectures"], function["Handler"]) == ("python3.14", ["arm64"], "handler.handler")
    assert function["Environment"]["Variables"] == {"KEY_VALUE_STORE_ARN": {"Fn::GetAtt": [_store_id(assembly), "Arn"]},
                                                    "REGIONS": ",".join(REGIONS)}
    (layer_ref,) = function["Layers"]
    layer = assembly.template(EDGE)["Resources"][layer_ref["Ref"]]["Properties"]
    assert layer["CompatibleRuntimes"] == ["python3.14"] and layer["CompatibleArchitectures"] == ["arm64"]
    log_group = assembly.template(EDGE)["Resources"][function["LoggingConfig"]["LogGroup"]["Ref"]]["Properties"]
    assert log_group["LogGroupName"] == "/aws/lambda/mf-region-failover" and "KmsKeyId" in log_group
    assert log_group["RetentionInDays"] == {"dev": 30, "prod": 365}[variant]
    log_group_resource = assembly.template(EDGE)["Resources"][function["LoggingConfig"]["LogGroup"]["Ref"]]
    assert log_group_resource["DeletionPolicy"] == {"dev": "Delete", "prod": "Retain"}[variant]


def test_the_layer_ships_botocores_model_of_the_one_service_the_function_calls_and_none_of_the_other_400(dev):
    """botocore's data folder is most of the layer's files: every deployment would upload them all."""
    _, function = _function(dev)
    (layer_ref,) = function["Layers"]
    key = dev.template(EDGE)["Resources"][layer_ref["Ref"]]["Properties"]["Content"]["S3Key"]
    (staged,) = dev.outdir.glob(f"**/asset.{key}")  # the archive built_layer made, as the CLI uploads it
    names = zipfile.ZipFile(staged).namelist()
    data = "python/botocore/data/"
    assert sorted({name.removeprefix(data).split("/")[0] for name in names if name.startswith(data)}) == sorted(
        ["cloudfront-keyvaluestore", "_retry.json", "endpoints.json", "partitions.json", "sdk-default-configuration.json"])
    assert any(name.startswith(f"{data}cloudfront-keyvaluestore/") and "/service-2.json" in name for name in names)
    assert "python/_awscrt.abi3.so" in names and not any(name.endswith(".installed") or name.endswith(".zip") for name in names)


def test_the_layer_holds_boto3_with_the_crt_for_the_functions_runtime_and_architecture():
    """make install chooses the layer's wheels: botocore[crt]'s pins, for what the function runs on."""
    from constructs.operations import region_failover

    makefile = (REPO_ROOT / "Makefile").read_text()
    python = re.search(r"^LAYER_PYTHON := (\S+)$", makefile, re.MULTILINE).group(1)
    arch = re.search(r"^LAYER_ARCH := (\S+)$", makefile, re.MULTILINE).group(1)
    layers = re.search(r"^LAYERS := (.+)$", makefile, re.MULTILINE).group(1).split()
    assert str(region_failover.LAYER_DIR.parent.relative_to(REPO_ROOT)) in layers  # `make install` builds every one
    assert "$(addsuffix /build/.installed,$(LAYERS))" in makefile.split("\ninstall:")[1].split("\n")[0]
    assert region_failover.RUNTIME.name == f"python{python}" and region_failover.ARCHITECTURE.name == "arm64"
    assert (region_failover.LAYER_DIR / ".installed").read_text().strip() == LAYER_TARGET == f"python{python} {arch}"
    pins = dict(line.split("==") for line in (region_failover.LAYER_DIR.parent / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    built = region_failover.LAYER_DIR / "python"
    for name in ("boto3", "botocore", "awscrt"):
        assert (built / f"{name}-{pins[name]}.dist-info").is_dir(), name
    # botocore[crt] names the one awscrt version it was released with.
    metadata = (built / f"botocore-{pins['botocore']}.dist-info" / "METADATA").read_text()
    assert f"Requires-Dist: awscrt (=={pins['awscrt']}) ; extra == 'crt'" in metadata or \
        f"Requires-Dist: awscrt=={pins['awscrt']}; extra == \"crt\"" in metadata
    # The CRT's native extension (abi3) is built for the function's CPU: ELF e_machine 183 is aarch64, 62 x86_64.
    (extension,) = built.glob("_awscrt.*.so")
    assert int.from_bytes(extension.read_bytes()[18:20], "little") == {"aarch64": 183, "x86_64": 62}[arch]
    services = dict(line.split("==") for line in (REPO_ROOT / "services" / "constraints.txt").read_text().splitlines() if "==" in line)
    assert {name: services[name] for name in pins} == pins  # what services/tests/test_region_failover.py runs


def test_the_functions_role_may_only_read_and_set_keys_of_the_edge_store_and_write_its_logs(dev):
    function_id, function = _function(dev)
    role_id = function["Role"]["Fn::GetAtt"][0]
    role = dev.template(EDGE)["Resources"][role_id]["Properties"]
    assert role["RoleName"] == "mf-region-failover"  # the name the edge boundary lets through
    assert "mf-edge-permissions-boundary" in json.dumps(role["PermissionsBoundary"])
    assert "ManagedPolicyArns" not in role and "Policies" not in role
    (policy,) = [p["Properties"] for p in dev.resources(EDGE, "AWS::IAM::Policy").values() if p["Properties"]["Roles"] == [{"Ref": role_id}]]
    statements = {tuple(s["Action"]): s for s in policy["PolicyDocument"]["Statement"]}
    assert set(statements) == {("logs:CreateLogStream", "logs:PutLogEvents"), tuple(KVS_ACTIONS)}
    assert statements[tuple(KVS_ACTIONS)]["Resource"] == {"Fn::GetAtt": [_store_id(dev), "Arn"]}
    assert statements[("logs:CreateLogStream", "logs:PutLogEvents")]["Resource"] == {
        "Fn::GetAtt": [function["LoggingConfig"]["LogGroup"]["Ref"], "Arn"]}
    assert all("Condition" not in s and s["Effect"] == "Allow" for s in statements.values())


@pytest.mark.parametrize("variant", ["dev", "prod"])
def test_the_edge_boundary_lets_only_the_failover_role_set_key_value_store_keys(request, variant):
    assembly: Assembly = request.getfixturevalue(variant)
    (boundary,) = assembly.resources("mf-edge/baseline", "AWS::IAM::ManagedPolicy").values()
    statements = boundary["Properties"]["PolicyDocument"]["Statement"]
    kvs = [s for s in statements if "cloudfront-keyvaluestore" in json.dumps(s["Action"])]
    assert len(kvs) == 1
    (statement,) = kvs
    assert (statement["Effect"], statement["Action"]) == ("Allow", KVS_ACTIONS)
    resource = json.dumps(statement["Resource"])
    assert ":cloudfront::" in resource and ":key-value-store/*" in resource
    (principal,) = statement["Condition"]["ArnEquals"]["aws:PrincipalArn"]
    assert json.dumps(principal).endswith(':role/mf-region-failover"]]}')
    assert list(statement["Condition"]) == ["ArnEquals"]  # a global API: no region condition
    # The regional boundaries do not carry it.
    for region in REGIONS:
        (regional,) = assembly.resources(f"mf-{region}/baseline", "AWS::IAM::ManagedPolicy").values()
        assert "cloudfront-keyvaluestore" not in json.dumps(regional["Properties"]["PolicyDocument"])
