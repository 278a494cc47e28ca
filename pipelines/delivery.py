"""Wire the delivery pipeline to the app's stages: order, approval, smoke tests, boundary and tags."""

from __future__ import annotations

from typing import Sequence

import aws_cdk as cdk
from aws_cdk import pipelines

from constructs.compliance import adopt_cdk_providers
from stacks.config import FoundationConfig
from stacks.edge_stack import EDGE_REGION
from stacks.edge_stage import EdgeStage
from stacks.region_stage import RegionStage

from .acknowledgments import acknowledge_pipeline_findings
from .approval_notifications import ApprovalNotifications
from .image_check import checked_repository_arns, image_check_step
from .pipeline_stack import PipelineBaselineStack, PipelineStack, grant_connection_use
from .smoke_test import SmokeTestStack, smoke_test_step


def add_delivery_pipeline(
    app: cdk.App, *, config: FoundationConfig, region_stages: Sequence[RegionStage], edge_stage: EdgeStage | None,
) -> PipelineStack:
    """Add ``<prefix>-pipeline`` (and its baseline) to ``app``; it deploys the given stages.

    The stages stay where app.py made them, at the top of the app: each is defined once, `cdk deploy
    '<prefix>-<region>/*'` still reaches it by hand, and the pipeline deploys the same CloudFormation stacks.
    Order: the primary region, then the others one at a time, then the edge, which reads every region's
    load balancer. Before each region deploys, a step checks that the image tags it runs from ECR are in
    that region's repositories (when it runs any). In prod a manual approval comes before the first deploy
    (after that region's image check), and its approvers (config ``pipeline.approval_emails``) are notified
    when a release reaches it. Each region with a load balancer gets a smoke test after its deploy; a
    failing one stops the pipeline before the next region.
    """
    primary = next(stage for stage in region_stages if stage.region == config.primary_region)
    ordered = [primary, *(stage for stage in region_stages if stage is not primary)]
    env = cdk.Environment(account=config.account, region=config.primary_region)
    tags = {"project": config.prefix, "environment": config.profile, "region": config.primary_region, "managed-by": "cdk"}
    common = {"env": env, "termination_protection": config.is_prod, "tags": tags}
    name = f"{config.prefix}-pipeline"

    baseline = PipelineBaselineStack(
        app, f"{name}-baseline", config=config, pipeline_stack_name=name,
        allowed_regions=sorted({*config.region_names, *([EDGE_REGION] if edge_stage else [])}),
        # What the image checks read, in every region: nothing when no service runs a tag from ECR.
        describable_repository_arns=checked_repository_arns(config, config.region_names),
        description=f"{config.prefix} pipeline: permissions boundary for every role of the pipeline stack", **common,
    )
    stack = PipelineStack(app, name, config=config, description=f"{config.prefix}: the delivery pipeline (CDK Pipelines)", **common)
    stack.add_stack_dependency(baseline, "its roles name the permissions boundary")

    for index, stage in enumerate(ordered):
        post = []
        if stage.services.ingress is not None:
            # Before add_stage: the pipeline synthesizes the stage when it is added.
            smoke_test = SmokeTestStack(
                stage, "smoke-test", config=config, termination_protection=config.is_prod,
                tags={**tags, "region": stage.region},
                description=f"{config.prefix} {stage.region}: the pipeline's post-deploy smoke test, inside the VPC",
            )
            smoke_test.add_stack_dependency(stage.baseline, "its role names the permissions boundary")
            adopt_cdk_providers(smoke_test, {**tags, "region": stage.region})
            post.append(smoke_test_step(config, stage))
        image_check = image_check_step(config, region=stage.region)
        # The image check first, then the approval: the approvers are asked (and mailed) only about a release that
        # can deploy, and a typo fails a minute after the push without waiting for anyone.
        pre = [*([image_check] if image_check else []), *([approval_step(config)] if config.is_prod and index == 0 else [])]
        stack.pipeline.add_stage(stage, pre=pipelines.Step.sequence(pre), post=post)
    if edge_stage is not None:
        stack.pipeline.add_stage(edge_stage)

    # Built now rather than at synth, so that the boundary, tags and acknowledgments below reach every
    # role, bucket and key CDK Pipelines generates, including the other regions' support stacks.
    stack.pipeline.build_pipeline()
    grant_connection_use(stack.pipeline, config.pipeline.connection_arn)
    if config.is_prod:  # the approval waits in prod only
        ApprovalNotifications(stack, "ApprovalNotifications", pipeline=stack.pipeline.pipeline,
                              topic_name=f"{name}-approvals", emails=config.pipeline.approval_emails)
    baseline.permissions_boundary.apply_to(stack)
    support_stacks = [support.stack for support in stack.pipeline.pipeline.cross_region_support.values()]
    for scope in (baseline, stack, *support_stacks):
        for key, value in {**tags, "region": scope.region}.items():
            cdk.Tags.of(scope).add(key, value)
    acknowledge_pipeline_findings(stack)
    return stack


def approval_step(config: FoundationConfig) -> pipelines.ManualApprovalStep:
    return pipelines.ManualApprovalStep(
        "PromoteToProd",
        comment=f"Deploy this commit to {config.prefix} production ({', '.join(config.region_names)}, one region at a time, "
                "each smoke-tested before the next; then the edge)?",
    )
