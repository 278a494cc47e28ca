"""Platform stack: the shared runtime every service lands on (cluster, namespace, registry)."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_kms as kms
from constructs import Construct

from constructs.container_registry import ServiceRepositories
from constructs.fargate_cluster import FargateCluster

from .config import FoundationConfig
from .defaults import SERVICE_NAMES, profile_defaults


class PlatformStack(cdk.Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: FoundationConfig, vpc: ec2.IVpc, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        defaults = profile_defaults(config.profile)

        self.registry_key = kms.Key(
            self,
            "RegistryKey",
            alias=f"{config.prefix}/ecr",
            description="Encrypts this region's service images in ECR",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        self.repositories = ServiceRepositories(
            self,
            "Repositories",
            repository_prefix=config.prefix,
            service_names=SERVICE_NAMES,
            encryption_key=self.registry_key,
            images_kept=defaults.images_kept,
            untagged_expiry_days=defaults.untagged_image_expiry_days,
        ).repositories

        platform = FargateCluster(
            self,
            "Compute",
            vpc=vpc,
            cluster_name=config.prefix,
            namespace_name=config.namespace,
            capacity_strategy=[
                ecs.CapacityProviderStrategy(capacity_provider=share.provider, base=share.base, weight=share.weight)
                for share in defaults.capacity_strategy
            ],
        )
        self.cluster = platform.cluster
        self.namespace = platform.namespace
