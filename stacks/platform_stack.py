"""Platform stack: the shared runtime every service lands on (cluster, namespace, registry, event bus)."""

from __future__ import annotations

import json

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_events as events
from aws_cdk import aws_kms as kms
from constructs import Construct

from constructs.alarm_notifications import AlarmTopic
from constructs.container_registry import ServiceRepositories
from constructs.event_bus import EventArchiveAndSchemas, EventContract
from constructs.fargate_cluster import FargateCluster
from constructs.private_ca import PrivateCertificateAuthority

from .config import EVENT_CONTRACTS_DIR, FoundationConfig
from .defaults import profile_defaults


def event_contracts(config: FoundationConfig) -> list[EventContract]:
    """Every event a service consumes, with its schema from services/contracts/events: the bus's registry."""
    contracts = {}
    for consumer in config.services:
        for producer, detail_types in consumer.consumes:
            for detail_type in detail_types:
                path = EVENT_CONTRACTS_DIR / f"{detail_type}.schema.json"  # load_config checked it exists
                contracts[detail_type] = EventContract(detail_type=detail_type, source=config.event_source(producer),
                                                       data_schema=json.loads(path.read_text()))
    return list(contracts.values())


class PlatformStack(cdk.Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: FoundationConfig, vpc: ec2.IVpc, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        defaults = profile_defaults(config.profile)

        self.registry_key = kms.Key(
            self,
            "RegistryKey",
            alias=config.platform_key_alias("ecr"),
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
            # What the services run from these repositories is never expired, however many pushes follow it.
            kept_tags={service.name: list(service.ecr_tags)
                       for service in config.services},
        ).repositories

        # Services pass the same strategy explicitly: ECS ignores the cluster default for a service
        # that CDK gives a launch type.
        self.capacity_strategy = [
            ecs.CapacityProviderStrategy(capacity_provider=share.provider, base=share.base, weight=share.weight)
            for share in defaults.capacity_strategy
        ]
        # A literal name: other stacks (chaos) build the cluster's ARNs from it without a cross-stack export.
        self.cluster_name = config.prefix
        platform = FargateCluster(
            self,
            "Compute",
            vpc=vpc,
            cluster_name=self.cluster_name,
            namespace_name=config.namespace,
            capacity_strategy=self.capacity_strategy,
        )
        self.cluster = platform.cluster
        self.namespace = platform.namespace

        # The region's event bus: services publish with source <prefix>.<service>, and each consumer's
        # rules (services stack) feed its queue. The services stack adds the policy that only the
        # producers may put events (it holds their roles). Events stay in the region they were put in:
        # constructs/event_bus/README.md says why they are not replicated.
        self.event_bus = events.EventBus(self, "EventBus", event_bus_name=config.event_bus_name,
                                         description=f"{config.prefix} {self.region}: events between the services")
        self.event_records = EventArchiveAndSchemas(
            self, "EventRecords",
            event_bus=self.event_bus,
            archive_name=f"{config.event_bus_name}-archive",
            archive_retention=cdk.Duration.days(config.events.archive_retention_days),
            registry_name=config.event_bus_name,
            envelope_schema=json.loads((EVENT_CONTRACTS_DIR / "envelope.schema.json").read_text()),
            contracts=event_contracts(config),
        )

        # Every alarm of the region notifies this topic.
        self.alarm_topic = AlarmTopic(self, "Alarms", topic_name=f"{config.prefix}-alarms",
                                      emails=config.observability.notify_emails).topic

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
