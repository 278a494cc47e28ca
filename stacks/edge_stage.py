"""The edge: a stage of its own in us-east-1, deployed after every region: `cdk deploy '<prefix>-edge/*'`."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import Construct

from constructs.compliance import adopt_cdk_providers

from .baseline_stack import BaselineStack
from .config import FoundationConfig
from .edge_stack import EDGE_REGION, EdgeStack


class EdgeStage(cdk.Stage):
    """baseline (the edge's permissions boundary) -> edge (CloudFront, WAF, certificate, DNS).

    A stage of its own because it reads every region's load balancer: it can only be deployed once
    all regional stages are, and CDK does not let one stage's stacks depend on another's.
    """

    def __init__(self, scope: Construct, *, config: FoundationConfig) -> None:
        super().__init__(scope, f"{config.prefix}-edge", env=cdk.Environment(account=config.account, region=EDGE_REGION))
        tags = {"project": config.prefix, "environment": config.profile, "region": "global", "managed-by": "cdk"}
        common = {"termination_protection": config.is_prod, "tags": tags}
        self.baseline = BaselineStack(
            self, "baseline", boundary_name=f"{config.prefix}-edge",
            # The edge's custom resources read the regions' parameters from us-east-1.
            allowed_regions=[EDGE_REGION, *config.region_names],
            # us-east-1's analyzer, unless a regional stage there has it already (one per region).
            access_analyzer_name=None if EDGE_REGION in config.region_names else f"{config.prefix}-{EDGE_REGION}",
            # The region-failover function sets the API switch in the edge's KeyValueStore (a global API).
            key_value_store_writer_role_arns=[
                f"arn:{cdk.Aws.PARTITION}:iam::{cdk.Aws.ACCOUNT_ID}:role/{config.region_failover_role_name}"],
            description=f"{config.prefix} edge: permissions boundary for every role of the stage", **common,
        )
        self.edge = EdgeStack(
            self, "edge", config=config,
            description=f"{config.prefix} edge: CloudFront in front of {', '.join(config.region_names)}", **common,
        )
        self.edge.add_stack_dependency(self.baseline, "its roles name the permissions boundary")
        self.baseline.permissions_boundary.apply_to(self)
        for key, value in tags.items():
            cdk.Tags.of(self).add(key, value)
        for stack in (self.baseline, self.edge):
            adopt_cdk_providers(stack, tags)
