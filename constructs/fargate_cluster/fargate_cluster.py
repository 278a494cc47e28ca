"""An ECS cluster for Fargate services: Container Insights, Spot, and a Service Connect namespace."""

from __future__ import annotations

from typing import Sequence

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_servicediscovery as servicediscovery
from constructs import Construct

_FARGATE_PROVIDERS = ("FARGATE", "FARGATE_SPOT")


class FargateCluster(Construct):
    """ECS cluster with FARGATE and FARGATE_SPOT capacity providers and a private DNS namespace.

    Exposes ``self.cluster`` and ``self.namespace`` (the cluster's default Cloud Map namespace,
    which services use for Service Connect and DNS discovery).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        namespace_name: str,
        capacity_strategy: Sequence[ecs.CapacityProviderStrategy],
        cluster_name: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        unknown = sorted({s.capacity_provider for s in capacity_strategy} - set(_FARGATE_PROVIDERS))
        if not capacity_strategy or unknown:
            raise ValueError(
                f"capacity_strategy providers={unknown or '[]'} is invalid: use {' and/or '.join(_FARGATE_PROVIDERS)}"
            )
        if sum(1 for s in capacity_strategy if (s.base or 0) > 0) > 1:
            raise ValueError("capacity_strategy is invalid: only one provider may have a base")

        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=vpc,
            cluster_name=cluster_name,
            container_insights_v2=ecs.ContainerInsights.ENHANCED,
            enable_fargate_capacity_providers=True,
            default_cloud_map_namespace=ecs.CloudMapNamespaceOptions(
                name=namespace_name,
                type=servicediscovery.NamespaceType.DNS_PRIVATE,
                vpc=vpc,
                use_for_service_connect=True,
            ),
        )
        self.cluster.add_default_capacity_provider_strategy(list(capacity_strategy))
        self.namespace = self.cluster.default_cloud_map_namespace
