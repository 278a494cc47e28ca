"""A three-tier VPC for Fargate workloads: subnets, NAT, VPC endpoints, flow logs, closed default SG."""

from __future__ import annotations

import ipaddress
from typing import Mapping, Sequence

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from constructs.compliance import acknowledge_nag

_svc = ec2.InterfaceVpcEndpointAwsService

# Interface endpoints keep the AWS API calls of tasks and sidecars off the NAT gateway. Each entry
# says who calls it. S3 (ECR image layers) and DynamoDB are gateway endpoints, which cost nothing.
DEFAULT_INTERFACE_ENDPOINTS: Mapping[str, ec2.InterfaceVpcEndpointAwsService] = {
    "EcrApi": _svc.ECR,  # image pull: authorization and manifests
    "EcrDocker": _svc.ECR_DOCKER,  # image pull: layer locations
    "CloudWatchLogs": _svc.CLOUDWATCH_LOGS,  # awslogs driver, ADOT EMF metrics, Envoy access logs
    "CloudWatchMonitoring": _svc.CLOUDWATCH_MONITORING,  # ADOT collector metrics
    "XRay": _svc.XRAY,  # ADOT collector trace export
    "Ssm": _svc.SSM,  # parameters injected into task definitions
    "SecretsManager": _svc.SECRETS_MANAGER,  # secrets injected into task definitions
    "Kms": _svc.KMS,  # decrypting customer-key encrypted secrets and parameters
    "Sts": _svc.STS,  # AWS SDK web-identity and assume-role calls in services
    "Sqs": _svc.SQS,  # event consumers
    "EventBridge": _svc.EVENTBRIDGE,  # event producers
}


class VpcNetwork(Construct):
    """VPC over the given AZs with public, private-with-egress and isolated subnets.

    Subnet sizes derive from the VPC prefix /N: private /N+2, public and isolated /N+5 per AZ,
    so a /16 gives 16,379 usable task addresses per AZ.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cidr: str,
        availability_zones: Sequence[str],
        nat_gateways: int,
        endpoint_az_count: int,
        flow_log_retention: logs.RetentionDays,
        log_encryption_key: kms.IKey,
        interface_endpoints: Mapping[str, ec2.InterfaceVpcEndpointAwsService] = DEFAULT_INTERFACE_ENDPOINTS,
    ) -> None:
        super().__init__(scope, construct_id)
        if not 1 <= endpoint_az_count <= len(availability_zones):
            raise ValueError(
                f"endpoint_az_count={endpoint_az_count} is invalid: expected 1 to {len(availability_zones)}"
            )
        if not 1 <= nat_gateways <= len(availability_zones):
            # Private subnets are "with egress": without a NAT gateway they would have no route out.
            raise ValueError(f"nat_gateways={nat_gateways} is invalid: expected 1 to {len(availability_zones)}")
        prefix = ipaddress.IPv4Network(cidr).prefixlen

        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(cidr),
            availability_zones=list(availability_zones),
            nat_gateways=nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=prefix + 2),
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=prefix + 5, map_public_ip_on_launch=False),
                ec2.SubnetConfiguration(name="isolated", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=prefix + 5),
            ],
            # Revokes the default security group's rules, so nothing can use it by accident.
            restrict_default_security_group=True,
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
                "DynamoDb": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.DYNAMODB),
            },
        )

        self.flow_log_group = logs.LogGroup(
            self,
            "FlowLogGroup",
            retention=flow_log_retention,
            encryption_key=log_encryption_key,
        )
        stack = cdk.Stack.of(self)
        # The flow logs service may use this role only for flow logs of this account (confused deputy).
        flow_log_role = iam.Role(
            self,
            "FlowLogRole",
            assumed_by=iam.ServicePrincipal(
                "vpc-flow-logs.amazonaws.com",
                conditions={
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnLike": {"aws:SourceArn": stack.format_arn(service="ec2", resource="vpc-flow-log", resource_name="*")},
                },
            ),
        )
        self.flow_log = self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(self.flow_log_group, flow_log_role),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )

        # CDK writes the flow log role's grant as an inline policy of that one role.
        acknowledge_nag(
            flow_log_role,
            "The flow log role's only policy is CDK's least-privilege grant to write this one log group; it lives and dies with the role, so it is inline on purpose",
            "NIST.800.53.R5-IAMNoInlinePolicy",
        )
        # Public subnets exist for NAT gateways (and internet-facing load balancers where chosen);
        # their route to the internet gateway is what makes them public.
        for subnet in self.vpc.public_subnets:
            acknowledge_nag(
                subnet,
                "Public subnets hold only the NAT gateways (and internet-facing load balancers); they need 0.0.0.0/0 to the internet gateway. Tasks run in private subnets",
                "NIST.800.53.R5-VPCNoUnrestrictedRouteToIGW",
            )

        # One security group for every interface endpoint: HTTPS from inside the VPC, nothing out.
        self.endpoint_security_group = ec2.SecurityGroup(
            self,
            "EndpointSecurityGroup",
            vpc=self.vpc,
            description="Interface VPC endpoints: HTTPS from the VPC only",
            allow_all_outbound=False,
        )
        self.endpoint_security_group.add_ingress_rule(
            ec2.Peer.ipv4(cidr), ec2.Port.tcp(443), "HTTPS from inside the VPC"
        )
        endpoint_subnets = ec2.SubnetSelection(
            subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS,
            availability_zones=list(availability_zones[:endpoint_az_count]),
        )
        self.interface_endpoints = {
            endpoint_id: self.vpc.add_interface_endpoint(
                endpoint_id,
                service=service,
                subnets=endpoint_subnets,
                security_groups=[self.endpoint_security_group],
                open=False,
                private_dns_enabled=True,
            )
            for endpoint_id, service in interface_endpoints.items()
        }
