"""cdk-nag findings on what CDK Pipelines generates (roles, buckets), each acknowledged with its reason.

The pipeline's roles, artifact bucket and the other regions' replication buckets are built by CDK
Pipelines and CodePipeline; their shape is fixed there. cdk-nag 3 wants each granular finding named,
so the IDs that contain a project's logical ID or a generated bucket name are computed here.
"""

from __future__ import annotations


import aws_cdk as cdk
from aws_cdk import aws_codebuild as codebuild

from constructs.compliance import acknowledge_nag, skip_cfn_lint, skip_checkov

from .pipeline_stack import PipelineStack

# What CDK's bucket and key grants expand to (read/write of the pipeline's own artifact bucket and key).
_ARTIFACT_GRANT_ACTIONS = ("s3:Abort*", "s3:DeleteObject*", "s3:GetBucket*", "s3:GetObject*", "s3:List*",
                           "kms:GenerateDataKey*", "kms:ReEncrypt*")

_TRANSIENT_ARTIFACTS = (
    "CodePipeline's artifact store: it holds each execution's source and build outputs, which the pipeline re-creates "
    "from the commit by running again; every access is by the pipeline's own roles"
)
_BUCKET_REASONS = {
    "AwsSolutions-S1": f"{_TRANSIENT_ARTIFACTS}, and CloudTrail records who started which execution",
    "NIST.800.53.R5-S3BucketLoggingEnabled": f"{_TRANSIENT_ARTIFACTS}, and CloudTrail records who started which execution",
    "NIST.800.53.R5-S3BucketVersioningEnabled": f"{_TRANSIENT_ARTIFACTS}; every execution writes new object keys, none is overwritten",
    "NIST.800.53.R5-S3BucketReplicationEnabled": f"{_TRANSIENT_ARTIFACTS}; a copy in another region would hold nothing the commit cannot rebuild",
}
_CHECKOV_BUCKET_SKIPS = {
    "CKV_AWS_18": _BUCKET_REASONS["AwsSolutions-S1"],
    "CKV_AWS_21": _BUCKET_REASONS["NIST.800.53.R5-S3BucketVersioningEnabled"],
}


def acknowledge_pipeline_findings(stack: PipelineStack) -> None:
    """Call after ``build_pipeline()``: the roles and projects must exist."""
    pipeline = stack.pipeline
    region, account = stack.region, stack.account
    acknowledge_nag(
        pipeline,
        "CDK Pipelines writes each generated role's least-privilege grants (its artifact bucket and key, its "
        "CodeBuild project's logs and reports, the roles it assumes) into that role's own inline policy",
        "NIST.800.53.R5-IAMNoInlinePolicy",
    )
    artifact_bucket = pipeline.pipeline.artifact_bucket
    acknowledge_nag(
        pipeline,
        "CDK's read/write grant on the pipeline's own artifact bucket and its KMS key: the wildcards are S3 and KMS "
        "action families and the bucket's objects, nothing outside this bucket and key",
        *(f"AwsSolutions-IAM5[Action::{action}]" for action in _ARTIFACT_GRANT_ACTIONS),
        f"AwsSolutions-IAM5[Resource::<{stack.get_logical_id(artifact_bucket.node.default_child)}.Arn>/*]",
    )
    for support in pipeline.pipeline.cross_region_support.values():
        acknowledge_nag(
            pipeline.pipeline.role,
            "The pipeline copies artifacts into another region's replication bucket (a CDK Pipelines support stack) "
            "for the deploy actions there; the wildcard is that bucket's objects",
            f"AwsSolutions-IAM5[Resource::arn:aws:s3:::{stack.resolve(support.replication_bucket.bucket_name)}/*]",
        )
    replication_keys = ("The other regions' replication keys live in CDK Pipelines' support stacks, whose key ARNs the "
                        "pipeline stack cannot reference across regions; CodePipeline grants the encrypt/decrypt actions on them this way")
    acknowledge_nag(pipeline.pipeline.role, replication_keys, "AwsSolutions-IAM5[Resource::*]")
    _skip_checkov_on_default_policy(pipeline.pipeline.role, replication_keys)
    acknowledge_nag(
        pipeline.self_mutation_project.role,
        "Self-mutation runs `cdk deploy` of the pipeline stack: cloudformation:DescribeStacks and s3:ListBucket "
        "on any stack and bucket, and sts:AssumeRole only into roles tagged as CDK bootstrap roles "
        "(the permissions boundary narrows that to the cdk-<bootstrap qualifier>-* roles)",
        "AwsSolutions-IAM5[Resource::*]",
        f"AwsSolutions-IAM5[Resource::arn:*:iam::{account}:role/*]",
    )
    assets = pipeline.node.try_find_child("Assets")
    for asset_role in ("DockerRole", "FileRole"):
        # CDK Pipelines makes each role only for a kind of asset the app has: no DockerRole when every
        # service runs from an image_tag or image.
        role = assets.node.try_find_child(asset_role) if assets is not None else None
        if role is None:
            continue
        shared_role = ("CDK Pipelines shares one role among all asset-publishing projects of a type: it may start and read "
                       "any of the pipeline's CodeBuild builds and write to any /aws/codebuild log group and report group "
                       "of this account and region, because the projects are created after the role")
        _skip_checkov_on_default_policy(role, shared_role)
        acknowledge_nag(
            role,
            shared_role,
            "AwsSolutions-IAM5[Resource::*]",
            f"AwsSolutions-IAM5[Resource::arn:aws:logs:{region}:{account}:log-group:/aws/codebuild/*]",
            f"AwsSolutions-IAM5[Resource::arn:aws:codebuild:{region}:{account}:report-group/*]",
        )
    skip_cfn_lint(pipeline.pipeline.node.default_child, {
        "E3703": "CDK Pipelines renders the deploy actions' bootstrap role ARNs with Fn::Join; the ARNs are correct as written",
        "W3005": "CodePipeline's L2 writes a DependsOn on the pipeline role that its GetAtt already implies",
    })
    for project in _projects(stack):
        acknowledge_codebuild_defaults(project, region, account)
    for bucket in (artifact_bucket, *(support.replication_bucket for support in pipeline.pipeline.cross_region_support.values())):
        for rule_id, reason in _BUCKET_REASONS.items():
            acknowledge_nag(bucket, reason, rule_id)
        skip_checkov(bucket.node.default_child, _CHECKOV_BUCKET_SKIPS)


def acknowledge_codebuild_defaults(project: codebuild.Project, region: str, account: str) -> None:
    """The log group and report group grants CodeBuild gives every project's role (named after the project)."""
    logical_id = cdk.Stack.of(project).get_logical_id(project.node.default_child)
    acknowledge_nag(
        project.role,
        "CodeBuild's default grants to its project's role: the project's own /aws/codebuild log streams and "
        "report groups, named after the project; the wildcard is the stream and report suffix",
        f"AwsSolutions-IAM5[Resource::arn:aws:logs:{region}:{account}:log-group:/aws/codebuild/<{logical_id}>:*]",
        f"AwsSolutions-IAM5[Resource::arn:aws:codebuild:{region}:{account}:report-group/<{logical_id}>-*]",
    )


def _projects(stack: cdk.Stack) -> list[codebuild.Project]:
    return [construct for construct in stack.node.find_all() if isinstance(construct, codebuild.Project)]


def _skip_checkov_on_default_policy(role, reason: str) -> None:
    """checkov's CKV_AWS_111 (write actions on Resource "*") on the role's CDK-written default policy."""
    skip_checkov(role.node.find_child("DefaultPolicy").node.default_child, {"CKV_AWS_111": reason})
