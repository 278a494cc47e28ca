"""Data stack (primary region only): each service's global table and the signer's replicated, rotated secret."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_logs as logs
from constructs import Construct

from constructs.service_data import ServiceData

from .config import FoundationConfig
from .defaults import profile_defaults
from .network_stack import NetworkStack


class DataStack(cdk.Stack):
    """One ServiceData per service with ``table`` or ``signing_key``, replicated to every other region.

    Deployed in the primary region's stage after baseline and network, before its services; the other
    regions' services stacks find the replicas by name, so the primary stage deploys first.
    Exposes ``data``: service name -> ServiceData.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: FoundationConfig, network: NetworkStack, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        retention = logs.RetentionDays[profile_defaults(config.profile).log_retention]
        # CDK's custom-resource handler (replica keys) and the rotation function log apart.
        def log_group(construct_id: str) -> logs.LogGroup:
            return logs.LogGroup(self, construct_id, encryption_key=network.logs_key, retention=retention,
                                 removal_policy=cdk.RemovalPolicy.DESTROY)

        custom_resource_logs = log_group("CustomResourceLogs")
        rotation_logs = log_group("RotationLogs") if config.token_signer else None
        self.data = {
            service.name: ServiceData(
                self, f"{service.name}-data",
                name_prefix=config.prefix, name=service.name, retain=config.is_prod,
                replica_regions=config.other_regions(self.region),
                custom_resource_log_group=custom_resource_logs, rotation_log_group=rotation_logs,
                table_name=config.table_name(service.name) if service.table else None,
                signing_secret_name=config.signing_secret_name(service.name) if service.signing_key else None,
                rotation_interval=cdk.Duration.days(config.data.signing_key_rotation_days),
            )
            for service in config.services if service.table or service.signing_key
        }
