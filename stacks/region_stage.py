"""One deployable unit per region: `cdk deploy '<prefix>-<region>/*'`."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import Construct

from constructs.compliance import adopt_cdk_providers

from .config import FoundationConfig, RegionConfig
from .baseline_stack import BaselineStack
from .global_stack import GlobalStack, ci_assumable_role_arns
from .network_stack import NetworkStack
from .platform_stack import PlatformStack
from .services_stack import ServicesStack


class RegionStage(cdk.Stage):
    """The stacks of one region, in deploy order, plus the stage's cross-cutting concerns.

    baseline (permissions boundary) -> network -> platform -> services; the primary region's stage also holds
    the global stack (when there are regions to replicate to or ``github`` is configured). In prod every
    stack has termination protection.
    """

    def __init__(self, scope: Construct, *, config: FoundationConfig, region: RegionConfig) -> None:
        super().__init__(
            scope,
            config.stage_name(region.name),
            env=cdk.Environment(account=config.account, region=region.name),
        )
        if config.account:
            # With a concrete account, CDK would look up the region's AZs through AWS. The app fixes
            # them in config instead, so seed that lookup: synth never needs credentials.
            self.node.set_context(
                f"availability-zones:account={config.account}:region={region.name}", list(region.availability_zones)
            )

        tags = {"project": config.prefix, "environment": config.profile, "region": region.name, "managed-by": "cdk"}
        # Stack tags too: CloudFormation puts them on resources whose templates cannot carry tags.
        common = {"termination_protection": config.is_prod, "tags": tags}

        is_primary = region.name == config.primary_region
        self.baseline = BaselineStack(
            self, "baseline", boundary_name=f"{config.prefix}-{region.name}", allowed_regions=config.region_names,
            # The CI diff role (global stack, primary stage only) reads through the CDK lookup roles.
            assumable_role_arns=ci_assumable_role_arns(self, config) if is_primary else (),
            description=f"{config.prefix} {region.name}: permissions boundary for every role of the stage", **common,
        )
        self.network = NetworkStack(
            self, "network", config=config, region=region,
            description=f"{config.prefix} {region.name}: VPC, endpoints, flow logs, logs KMS key", **common,
        )
        self.platform = PlatformStack(
            self, "platform", config=config, vpc=self.network.vpc,
            description=f"{config.prefix} {region.name}: ECS cluster, Cloud Map namespace, ECR repositories, event bus", **common,
        )
        self.services = ServicesStack(
            self, "services", config=config, network=self.network, platform=self.platform,
            description=f"{config.prefix} {region.name}: the services and their tables, queues and secrets, meshed with {config.mesh}", **common,
        )
        self.stacks: list[cdk.Stack] = [self.baseline, self.network, self.platform, self.services]
        self.global_ = None
        global_contents = ", ".join(
            [*(["ECR replication"] if config.other_regions(region.name) else []),
             *(["GitHub OIDC and CI roles"] if config.github else [])])
        if is_primary and global_contents:
            self.global_ = GlobalStack(
                self, "global", config=config,
                description=f"{config.prefix}: account-wide settings ({global_contents})", **common,
            )
            self.stacks.append(self.global_)
        for stack in self.stacks[1:]:
            stack.add_stack_dependency(self.baseline, "its roles name the permissions boundary")

        self.baseline.permissions_boundary.apply_to(self)
        for key, value in tags.items():
            cdk.Tags.of(self).add(key, value)
        for stack in self.stacks:
            adopt_cdk_providers(stack, tags)
