"""One deployable unit per region: `cdk deploy '<prefix>-<region>/*'`."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import Construct

from constructs.compliance import adopt_cdk_providers

from .config import FoundationConfig, RegionConfig
from .baseline_stack import BaselineStack
from .chaos_stack import ChaosStack
from .data_stack import DataStack
from .global_stack import GlobalStack, ci_assumable_role_arns
from .network_stack import NetworkStack
from .observability_stack import ObservabilityStack
from .platform_stack import PlatformStack
from .services_stack import ServicesStack


class RegionStage(cdk.Stage):
    """The stacks of one region, in deploy order, plus the stage's cross-cutting concerns.

    baseline (permissions boundary, Access Analyzer) -> network -> platform -> services -> observability;
    the primary region's stage also holds the data stack (global tables, replicated secrets; before
    services) and the global stack (cost budget; ECR replication when there are regions to replicate
    to). In prod every stack has termination protection.
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
        # The primary region holds each service's global table and the signer's secret; every region's
        # services find their replica by name.
        holds_data = is_primary and any(s.table or s.signing_key for s in config.services)
        self.baseline = BaselineStack(
            self, "baseline", boundary_name=f"{config.prefix}-{region.name}", allowed_regions=config.region_names,
            access_analyzer_name=f"{config.prefix}-{region.name}",
            # The CI diff role (global stack, primary stage only) reads through the CDK lookup roles.
            assumable_role_arns=ci_assumable_role_arns(self, config) if is_primary else (),
            **_fault_injection_boundary(config, region.name),
            # The data stack's custom resource provider calls its handler, named after the stack (constructs/service_data).
            invokable_function_name_prefix=f"{config.prefix}-{region.name}-" if holds_data else None,
            description=f"{config.prefix} {region.name}: permissions boundary for every role of the stage, IAM Access Analyzer", **common,
        )
        self.network = NetworkStack(
            self, "network", config=config, region=region,
            description=f"{config.prefix} {region.name}: VPC, endpoints, flow logs, logs KMS key", **common,
        )
        self.platform = PlatformStack(
            self, "platform", config=config, vpc=self.network.vpc,
            description=f"{config.prefix} {region.name}: ECS cluster, Cloud Map namespace, ECR repositories, event bus", **common,
        )
        self.data = None
        if holds_data:
            self.data = DataStack(
                self, "data", config=config, network=self.network, alarm_topic=self.platform.alarm_topic,
                description=f"{config.prefix}: the services' global tables and replicated secrets, their keys and the signing-key rotation", **common,
            )
        self.services = ServicesStack(
            self, "services", config=config, network=self.network, platform=self.platform,
            description=f"{config.prefix} {region.name}: the services, their queues and their access to the global tables and secret, meshed with {config.mesh}", **common,
        )
        self.observability = ObservabilityStack(
            self, "observability", config=config, network=self.network, platform=self.platform, services=self.services,
            description=f"{config.prefix} {region.name}: dashboards, alarms and X-Ray sampling rules", **common,
        )
        self.stacks: list[cdk.Stack] = [self.baseline, self.network, self.platform, self.services, self.observability]
        # Last: it reads the services' alarms and subnets, and nothing reads it.
        self.chaos = None
        if config.chaos:
            self.chaos = ChaosStack(
                self, "chaos", config=config, network=self.network, platform=self.platform, services=self.services,
                observability=self.observability,
                description=f"{config.prefix} {region.name}: AWS FIS experiment templates (stop tasks, network faults, AZ outage)", **common,
            )
            self.chaos.add_stack_dependency(self.observability, "its stop conditions watch the observability stack's alarms")
            self.chaos.add_stack_dependency(self.services, "its stop conditions watch the services' deployment alarms")
            self.stacks.append(self.chaos)
        if self.data:
            self.services.add_stack_dependency(self.data, "its task roles use the tables and secret the data stack creates")
            self.stacks.insert(3, self.data)
        self.global_ = None
        global_contents = ", ".join(
            ["cost budget", *(["ECR replication"] if config.other_regions(region.name) else []),
             *(["GitHub OIDC and CI roles"] if config.github else [])])
        if is_primary:
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


def _fault_injection_boundary(config: FoundationConfig, region: str) -> dict[str, list[str]]:
    """The two named roles of the FIS network faults that the boundary must let through (none without them)."""
    names = config.fault_injection_role_names(region)
    if names is None:
        return {}
    instance_role, experiment_role = (f"arn:{cdk.Aws.PARTITION}:iam::{cdk.Aws.ACCOUNT_ID}:role/{name}" for name in names)
    return {"ssm_managed_instance_role_arns": [instance_role], "tag_reader_role_arns": [experiment_role]}
