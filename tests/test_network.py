"""Network stack: VPC over 3 AZs, NAT and endpoints by profile, flow logs, closed default SG."""

from __future__ import annotations

import ipaddress

import pytest
from aws_cdk.assertions import Match, Template

REGIONS = {"eu-central-1": "10.10.0.0/16", "eu-west-1": "10.20.0.0/16"}
NETWORK_STACKS = [f"mf-{region}/network" for region in REGIONS]

INTERFACE_ENDPOINT_SERVICES = {
    "ecr.api", "ecr.dkr", "logs", "monitoring", "xray", "ssm", "secretsmanager", "kms", "sts", "sqs", "events",
}


def _subnets_by_tier(dev, stack):
    tiers: dict[str, list[dict]] = {}
    for resource in dev.resources(stack, "AWS::EC2::Subnet").values():
        tier = next(t["Value"] for t in resource["Properties"]["Tags"] if t["Key"] == "aws-cdk:subnet-name")
        tiers.setdefault(tier, []).append(resource["Properties"])
    return tiers


def _endpoint_service(endpoint) -> str:
    """'com.amazonaws.eu-central-1.ecr.api' -> 'ecr.api' (the name is a Fn::Join in templates)."""
    name = endpoint["Properties"]["ServiceName"]
    if isinstance(name, dict):
        name = "".join(part if isinstance(part, str) else "{region}" for part in name["Fn::Join"][1])
    return name.split(".", 3)[-1]


@pytest.mark.parametrize("region, cidr", REGIONS.items())
def test_vpc_spans_three_azs_with_three_subnet_tiers(dev, region, cidr):
    stack = f"mf-{region}/network"
    Template.from_json(dev.template(stack)).has_resource_properties(
        "AWS::EC2::VPC", {"CidrBlock": cidr, "EnableDnsHostnames": True, "EnableDnsSupport": True}
    )
    tiers = _subnets_by_tier(dev, stack)
    assert set(tiers) == {"public", "private", "isolated"}
    for subnets in tiers.values():
        assert sorted(s["AvailabilityZone"] for s in subnets) == [f"{region}a", f"{region}b", f"{region}c"]
    # Private subnets get most of the space: tasks take one address each.
    assert {s["CidrBlock"].split("/")[1] for s in tiers["private"]} == {"18"}
    assert all(s["MapPublicIpOnLaunch"] is False for s in tiers["public"])
    networks = [ipaddress.ip_network(s["CidrBlock"]) for subnets in tiers.values() for s in subnets]
    assert all(n.subnet_of(ipaddress.ip_network(cidr)) for n in networks)
    assert not any(a.overlaps(b) for i, a in enumerate(networks) for b in networks[i + 1 :])


def test_private_subnets_route_to_nat_and_isolated_subnets_do_not(dev):
    template = dev.template("mf-eu-central-1/network")
    routes = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::EC2::Route"]
    nat_routes = [r for r in routes if "NatGatewayId" in r]
    igw_routes = [r for r in routes if "GatewayId" in r]
    assert len(nat_routes) == 3 and len(igw_routes) == 3
    isolated_tables = {
        logical_id for logical_id, r in template["Resources"].items()
        if r["Type"] == "AWS::EC2::RouteTable" and "isolated" in logical_id
    }
    assert len(isolated_tables) == 3
    assert not any(r["RouteTableId"]["Ref"] in isolated_tables for r in routes)


@pytest.mark.parametrize("profile, nat_gateways", [("dev", 1), ("prod", 3)])
def test_nat_gateways_follow_the_profile(dev, prod, profile, nat_gateways):
    assembly = {"dev": dev, "prod": prod}[profile]
    for stack in NETWORK_STACKS:
        assert len(assembly.resources(stack, "AWS::EC2::NatGateway")) == nat_gateways


@pytest.mark.parametrize("stack", NETWORK_STACKS)
def test_interface_endpoints_cover_what_tasks_call(dev, stack):
    endpoints = dev.resources(stack, "AWS::EC2::VPCEndpoint").values()
    interface = [e for e in endpoints if e["Properties"].get("VpcEndpointType") == "Interface"]
    gateway = [e for e in endpoints if e["Properties"].get("VpcEndpointType") == "Gateway"]
    assert {_endpoint_service(e) for e in interface} == INTERFACE_ENDPOINT_SERVICES
    assert all(e["Properties"]["PrivateDnsEnabled"] is True for e in interface)
    assert {_endpoint_service(e) for e in gateway} == {"s3", "dynamodb"}


@pytest.mark.parametrize("profile, endpoint_azs", [("dev", 1), ("prod", 3)])
def test_endpoints_sit_in_private_subnets_of_as_many_azs_as_the_profile_says(dev, prod, profile, endpoint_azs):
    assembly = {"dev": dev, "prod": prod}[profile]
    for stack in NETWORK_STACKS:
        subnets = assembly.resources(stack, "AWS::EC2::Subnet")
        for endpoint in assembly.resources(stack, "AWS::EC2::VPCEndpoint").values():
            if endpoint["Properties"]["VpcEndpointType"] == "Interface":
                used = [subnets[ref["Ref"]]["Properties"] for ref in endpoint["Properties"]["SubnetIds"]]
                assert len({s["AvailabilityZone"] for s in used}) == endpoint_azs
                assert all({"Key": "aws-cdk:subnet-type", "Value": "Private"} in s["Tags"] for s in used)


@pytest.mark.parametrize("region, cidr", REGIONS.items())
def test_endpoint_security_group_admits_only_https_from_the_vpc(dev, region, cidr):
    stack = f"mf-{region}/network"
    groups = dev.resources(stack, "AWS::EC2::SecurityGroup")
    assert len(groups) == 1
    (group_id, group), = groups.items()
    assert group["Properties"]["SecurityGroupIngress"] == [
        {"CidrIp": cidr, "Description": "HTTPS from inside the VPC", "FromPort": 443, "IpProtocol": "tcp", "ToPort": 443}
    ]
    # CDK's marker for "no egress": a rule that matches no traffic.
    assert group["Properties"]["SecurityGroupEgress"] == [
        {"CidrIp": "255.255.255.255/32", "Description": "Disallow all traffic", "FromPort": 252, "IpProtocol": "icmp", "ToPort": 86}
    ]
    for endpoint in dev.resources(stack, "AWS::EC2::VPCEndpoint").values():
        if endpoint["Properties"]["VpcEndpointType"] == "Interface":
            assert endpoint["Properties"]["SecurityGroupIds"] == [{"Fn::GetAtt": [group_id, "GroupId"]}]


@pytest.mark.parametrize("profile, retention_days", [("dev", 30), ("prod", 365)])
def test_flow_logs_capture_all_traffic_into_an_encrypted_log_group(dev, prod, profile, retention_days):
    assembly = {"dev": dev, "prod": prod}[profile]
    for stack in NETWORK_STACKS:
        template = Template.from_json(assembly.template(stack))
        template.has_resource_properties(
            "AWS::EC2::FlowLog",
            {"ResourceType": "VPC", "TrafficType": "ALL", "LogDestinationType": "cloud-watch-logs"},
        )
        template.has_resource_properties(
            "AWS::Logs::LogGroup",
            {"RetentionInDays": retention_days, "KmsKeyId": {"Fn::GetAtt": [Match.string_like_regexp("^LogsKey"), "Arn"]}},
        )


def test_flow_log_role_is_only_for_this_accounts_flow_logs(dev):
    Template.from_json(dev.template("mf-eu-west-1/network")).has_resource_properties(
        "AWS::IAM::Role",
        {"AssumeRolePolicyDocument": {"Statement": [{
            "Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "vpc-flow-logs.amazonaws.com"},
            "Condition": {
                "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
                "ArnLike": {"aws:SourceArn": {"Fn::Join": ["", ["arn:aws:ec2:eu-west-1:", {"Ref": "AWS::AccountId"}, ":vpc-flow-log/*"]]}},
            },
        }]}},
    )


def test_logs_key_rotates_and_admits_only_this_accounts_log_groups(dev):
    template = Template.from_json(dev.template("mf-eu-central-1/network"))
    template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    template.has_resource_properties(
        "AWS::KMS::Key",
        {"KeyPolicy": {"Statement": Match.array_with([Match.object_like({
            "Principal": {"Service": "logs.eu-central-1.amazonaws.com"},
            "Condition": {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": Match.any_value()}},
        })])}},
    )


@pytest.mark.parametrize("stack", NETWORK_STACKS)
def test_default_security_group_is_closed(dev, stack):
    Template.from_json(dev.template(stack)).has_resource_properties(
        "Custom::VpcRestrictDefaultSG", {"DefaultSecurityGroupId": {"Fn::GetAtt": [Match.any_value(), "DefaultSecurityGroup"]}}
    )
