"""Platform stack: the shared runtime every service lands on (cluster, namespace, registry, event bus)."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_events as events
from aws_cdk import aws_kms as kms
from constructs import Construct

from constructs.alarm_notifications import AlarmTopic
from constructs.container_registry import ServiceRepositories
from constructs.fargate_cluster import FargateCluster
from constructs.private_ca import PrivateCertificateAuthority

from .config import FoundationConfig
from .defaults import profile_defaults


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
            service_names=[service.name for service in config.services],
            encryption_key=self.registry_key,
            images_kept=defaults.images_kept,
            untagged_expiry_days=defaults.untagged_image_expiry_days,
        ).repositories

        # Services pass the same strategy explicitly: ECS ignores the cluster default for a service
        # that CDK gives a launch type.
        self.capacity_strategy = [
            ecs.CapacityProviderStrategy(capacity_provider=share.provider, base=share.base, weight=share.weight)
            for share in defaults.capacity_strategy
        ]
        platform = FargateCluster(
            self,
            "Compute",
            vpc=vpc,
            cluster_name=config.prefix,
            namespace_name=config.namespace,
            capacity_strategy=self.capacity_strategy,
        )
        self.cluster = platform.cluster
        self.namespace = platform.namespace

        # The region's event bus: services publish with source <prefix>.<service>, and each consumer's
        # rules (services stack) feed its queue. Issue 6 adds an archive, a resource policy and schemas.
        self.event_bus = events.EventBus(self, "EventBus", event_bus_name=config.event_bus_name,
                                         description=f"{config.prefix} {self.region}: events between the services")

        # Every alarm of the region notifies this topic.
        self.alarm_topic = AlarmTopic(self, "Alarms", topic_name=f"{config.prefix}-alarms").topic

        # The CA that signs service-to-service TLS certificates, when the mesh uses TLS: imported
        # from config, or created here. Service Connect needs only a short-lived-certificate CA;
        # App Mesh takes ACM private certificates, which need a general-purpose CA.
        self.certificate_authority_arn: str | None = config.mesh_options.private_ca_arn(self.region)
        if config.mesh_tls and not self.certificate_authority_arn:
            self.certificate_authority_arn = PrivateCertificateAuthority(
                self,
                "MeshCertificateAuthority",
                common_name=f"{config.prefix} {self.region} mesh",
                usage_mode="GENERAL_PURPOSE" if config.mesh == "appmesh" else "SHORT_LIVED_CERTIFICATE",
            ).certificate_authority_arn
