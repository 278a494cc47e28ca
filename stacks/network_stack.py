"""Network stack: the stage's VPC and the key its log groups are encrypted with."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from constructs.encryption import LogsEncryptionKey
from constructs.vpc_network import DEFAULT_INTERFACE_ENDPOINTS, VpcNetwork

from .config import FoundationConfig, RegionConfig
from .defaults import profile_defaults


class NetworkStack(cdk.Stack):
    """VPC, endpoints and flow logs, and the KMS key for the stage's log groups."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: FoundationConfig, region: RegionConfig, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        defaults = profile_defaults(config.profile)

        self.logs_key = LogsEncryptionKey(self, "LogsKey", alias=config.platform_key_alias("logs")).key
        self.network = VpcNetwork(
            self,
            "Network",
            cidr=region.cidr,
            availability_zones=region.availability_zones,
            nat_gateways=defaults.nat_gateways,
            endpoint_az_count=defaults.endpoint_az_count,
            flow_log_retention=logs.RetentionDays[defaults.log_retention],
            log_encryption_key=self.logs_key,
            interface_endpoints=(
                {**DEFAULT_INTERFACE_ENDPOINTS, "AppMeshEnvoyManagement": ec2.InterfaceVpcEndpointAwsService.APP_MESH_ENVOY_MANAGEMENT}
                if config.mesh == "appmesh" else DEFAULT_INTERFACE_ENDPOINTS
            ),
        )
        self.vpc = self.network.vpc

        # CDK's handler that empties the default security group would log to an implicit
        # /aws/lambda/<name> group, kept forever and unencrypted: give it one like every other.
        provider = self.node.try_find_child("Custom::VpcRestrictDefaultSGCustomResourceProvider")
        if provider is not None:
            handler_logs = logs.LogGroup(
                self, "DefaultSecurityGroupHandlerLogs", encryption_key=self.logs_key,
                retention=logs.RetentionDays[defaults.log_retention], removal_policy=cdk.RemovalPolicy.DESTROY)
            handler = provider.node.find_child("Handler")
            handler.add_property_override("LoggingConfig", {"LogGroup": handler_logs.log_group_name})
            handler.node.add_dependency(handler_logs)
