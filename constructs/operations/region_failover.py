"""RegionFailoverAutomation: an SSM Automation document, and the function it starts, that point the edge's /api/*
at one region."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from constructs.compliance import acknowledge_nag, skip_checkov, skip_role_dependency_lint
from constructs.lambda_layer import ARCHITECTURE, RUNTIME, built_layer
from constructs.permissions_boundary import KEY_VALUE_STORE_WRITER_ACTIONS

# The key the edge's CloudFront Function reads (constructs/ingress/functions/select_api_origin.js).
ACTIVE_REGION_KEY = "active_region"
HANDLER_DIR = Path(__file__).resolve().parent / "failover"
LAYER_DIR = Path(__file__).resolve().parent / "failover_layer" / "build"
# Runs inside Automation (aws:executeScript) on the function's result. A function error may not fail the
# invoke step itself (AWS documents FunctionError as an output, not as a step failure); its payload is then
# Lambda's error document, which names no region, so this step fails the execution with the function's message.
_CHECK_RESULT = '''
import json


def handler(events, context):
    result = events.get("Payload")
    if isinstance(result, str):
        try:
            result = json.loads(result)
        except ValueError:
            result = {"errorMessage": result}
    result = result if isinstance(result, dict) else {}
    if result.get("active_region") != events["TargetRegion"]:
        raise RuntimeError(f"the function did not set {events['TargetRegion']}: "
                           f"{result.get('errorType', '')} {result.get('errorMessage', result)}".strip())
    return {"Previous": str(result.get("previous"))}
'''


def layer_exclude() -> list[str]:
    """What the layer leaves out: botocore's models of every service the function does not call
    (handler.SERVICE_MODELS), keeping botocore's own files (endpoints, partitions, defaults, retries)."""
    tree = ast.parse((HANDLER_DIR / "handler.py").read_text())
    (models,) = [ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                 and any(getattr(target, "id", None) == "SERVICE_MODELS" for target in node.targets)]
    data = "python/botocore/data"
    return [f"{data}/*", f"!{data}/*.json", *(f"!{data}/{model}" for model in models),
            *(f"!{data}/{model}/**" for model in models)]


class RegionFailoverAutomation(Construct):
    """An Automation document ``document_name`` that sets ``active_region`` in the KeyValueStore
    ``key_value_store_arn`` to one of ``regions`` (the primary: back to normal) through the function
    ``function_name`` (``failover/handler.py``), which reads the store's ETag, puts the key with it and checks
    that the store then holds the region: runbooks/region-failover.md, Action step 2 and Rollback.

    The KeyValueStore API takes SigV4A signatures only, which boto3 makes only with the AWS CRT; the function
    brings its own boto3 with ``botocore[crt]`` in a layer that ``make install`` builds into ``failover_layer/build``
    (without it this raises FileNotFoundError naming the command), so nothing depends on Automation's boto3.

    The document runs with the permissions of whoever starts it (no AutomationAssumeRole): they need
    ``lambda:InvokeFunction`` on the function, and moving all API traffic is a decision an operator signs with
    their own identity. The function's role ``role_name`` may call the store only; the stage's permissions
    boundary must let that role through (PermissionsBoundary ``key_value_store_writer_role_arns``).
    Exposes ``document`` (``ssm.CfnDocument``), ``function``, ``role``, ``layer`` and ``log_group``.
    """

    def __init__(self, scope: Construct, construct_id: str, *, document_name: str, key_value_store_arn: str,
                 regions: Sequence[str], function_name: str, role_name: str, log_encryption_key: kms.IKey,
                 log_retention: logs.RetentionDays, retain_logs: bool = False, layer_dir: Path | None = None) -> None:
        super().__init__(scope, construct_id)
        if not regions:
            raise ValueError("regions=[] is invalid: name the regions /api/* may be sent to")
        layer_dir = layer_dir or LAYER_DIR
        self.layer = built_layer(
            self, "Dependencies", layer_dir=layer_dir, purpose="the region-failover function's dependencies", exclude=layer_exclude(),
            description="boto3 with the AWS CRT (SigV4A) for the region-failover function (failover_layer/requirements.txt)",
        )
        self.log_group = logs.LogGroup(self, "Logs", log_group_name=f"/aws/lambda/{function_name}",
                                       encryption_key=log_encryption_key, retention=log_retention,
                                       # The record of each switch: kept when the stack goes (retain_logs, prod). Its
                                       # name is fixed, so a re-created stack fails on it, as on the kept WAF log group
                                       # (constructs/ingress/waf.py): delete it (after exporting it) first.
                                       removal_policy=cdk.RemovalPolicy.RETAIN if retain_logs else cdk.RemovalPolicy.DESTROY)
        self.role = iam.Role(self, "Role", role_name=role_name, assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                             description="Sets active_region in the edge's KeyValueStore (region failover)")
        self.function = lambda_.Function(
            self, "Function", function_name=function_name, runtime=RUNTIME, architecture=ARCHITECTURE, role=self.role,
            code=lambda_.Code.from_asset(str(HANDLER_DIR), exclude=["__pycache__", "*.pyc"]),
            handler="handler.handler", layers=[self.layer],
            # Four calls to one global API.
            timeout=cdk.Duration.seconds(30), memory_size=256, log_group=self.log_group,
            environment={"KEY_VALUE_STORE_ARN": key_value_store_arn, "REGIONS": ",".join(regions)},
            description=f"Sets {ACTIVE_REGION_KEY} in the edge's KeyValueStore (runbooks/region-failover.md)",
        )
        self.log_group.grant_write(self.role)
        self.role.add_to_principal_policy(iam.PolicyStatement(
            actions=list(KEY_VALUE_STORE_WRITER_ACTIONS), resources=[key_value_store_arn]))

        self.document = ssm.CfnDocument(
            self, "Document", name=document_name, document_type="Automation", document_format="JSON",
            update_method="NewVersion",
            content={
                "schemaVersion": "0.3",
                "description": f"Sends /api/* to TargetRegion: sets {ACTIVE_REGION_KEY} in the edge's KeyValueStore "
                               f"(the primary, {regions[0]}, is the normal state). runbooks/region-failover.md",
                "parameters": {
                    "TargetRegion": {"type": "String", "allowedValues": list(regions),
                                     "description": "The region /api/* goes to from now on"},
                },
                "mainSteps": [
                    # The function reads the ETag, puts the key with it (a change made meanwhile fails) and reads it back.
                    {"name": "SetActiveRegion", "action": "aws:invokeLambdaFunction", "onFailure": "Abort",
                     "timeoutSeconds": 60,
                     "inputs": {"FunctionName": self.function.function_name, "InvocationType": "RequestResponse",
                                "InputPayload": {"target_region": "{{ TargetRegion }}"}}},
                    {"name": "CheckResult", "action": "aws:executeScript", "onFailure": "Abort",
                     "inputs": {"Runtime": "python3.11", "Handler": "handler", "Script": _CHECK_RESULT.strip(),
                                "InputPayload": {"Payload": "{{ SetActiveRegion.Payload }}", "TargetRegion": "{{ TargetRegion }}"}},
                     "outputs": [{"Name": "Previous", "Selector": "$.Payload.Previous", "Type": "String"}]},
                ],
                # The execution's outputs (GetAutomationExecution's Outputs), where the runbook reads what changed.
                "outputs": ["CheckResult.Previous"],
            },
        )
        self._acknowledge()

    def _acknowledge(self) -> None:
        acknowledge_nag(
            self.role,
            "CDK writes the failover function's grants (three KeyValueStore calls on the one store, its log group) "
            "into the role's own inline policy, which lives and dies with the role",
            "NIST.800.53.R5-IAMNoInlinePolicy",
        )
        acknowledge_nag(
            self.function,
            "Automation invokes the failover function synchronously and fails the execution on its error, which the "
            "operator sees at once; a dead-letter queue would never be read",
            "NIST.800.53.R5-LambdaDLQ",
        )
        acknowledge_nag(
            self.function,
            "the failover function runs when an operator moves /api/*; reserving concurrency would only take capacity "
            "from the account's unreserved pool and protect nothing",
            "NIST.800.53.R5-LambdaConcurrency",
        )
        acknowledge_nag(
            self.function,
            "the failover function only calls the global CloudFront KeyValueStore API and reaches nothing inside a "
            "VPC (the edge stack has none)",
            "NIST.800.53.R5-LambdaInsideVPC",
        )
        skip_checkov(self.function.node.default_child, {
            "CKV_AWS_115": "The failover function runs when an operator moves /api/*; reserved concurrency would protect nothing",
            "CKV_AWS_116": "Automation invokes the failover function synchronously and fails on its error; a DLQ would never be read",
            "CKV_AWS_117": "The failover function only calls the global KeyValueStore API; the edge stack has no VPC",
            "CKV_AWS_173": "The environment holds the store's ARN and the region names, nothing secret; a customer key for it would protect nothing",
        })
        skip_role_dependency_lint(self.function.node.default_child)
