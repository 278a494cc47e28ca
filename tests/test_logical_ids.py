"""Stateful resources keep their logical IDs: a changed ID makes CloudFormation replace the resource.

If this fails after a refactor, keep the old construct IDs (or override the logical ID) instead of
updating the list, unless replacing the resource is the intent.
"""

from __future__ import annotations

import pytest

STATEFUL = {
    "baseline": {
        "PermissionsBoundaryPolicy2F8055A4": "AWS::IAM::ManagedPolicy",
    },
    "network": {
        "NetworkVpc7FB7348F": "AWS::EC2::VPC",
        # Subnets and the endpoint security group hold network interfaces: replacing them fails.
        "NetworkVpcprivateSubnet1Subnet9EC58498": "AWS::EC2::Subnet",
        "NetworkVpcprivateSubnet2Subnet6E5E8804": "AWS::EC2::Subnet",
        "NetworkVpcprivateSubnet3SubnetC252FE86": "AWS::EC2::Subnet",
        "NetworkVpcpublicSubnet1Subnet00617657": "AWS::EC2::Subnet",
        "NetworkVpcpublicSubnet2SubnetDCAA7C9A": "AWS::EC2::Subnet",
        "NetworkVpcpublicSubnet3SubnetB6CE113A": "AWS::EC2::Subnet",
        "NetworkVpcisolatedSubnet1Subnet188D06DD": "AWS::EC2::Subnet",
        "NetworkVpcisolatedSubnet2Subnet811E27B8": "AWS::EC2::Subnet",
        "NetworkVpcisolatedSubnet3Subnet8C51A120": "AWS::EC2::Subnet",
        "NetworkEndpointSecurityGroup6DEF6240": "AWS::EC2::SecurityGroup",
        "LogsKeyFE4C4A83": "AWS::KMS::Key",
        "NetworkFlowLogGroup4F8CEEEF": "AWS::Logs::LogGroup",
    },
    "platform": {
        "RegistryKeyDD63DA09": "AWS::KMS::Key",
        "Repositoriesauth3F70D807": "AWS::ECR::Repository",
        "RepositoriespersonaE4E28684": "AWS::ECR::Repository",
        "RepositoriesvcstartA5D17395": "AWS::ECR::Repository",
        "ComputeCluster4F8E5F81": "AWS::ECS::Cluster",
        "ComputeClusterDefaultServiceDiscoveryNamespaceC42D48F6": "AWS::ServiceDiscovery::PrivateDnsNamespace",
        # Rules name the bus; a new bus loses events in flight.
        "EventBus7B8748AA": "AWS::Events::EventBus",
    },
    "services": {
        # Events waiting or failed.
        "personaresourcesQueueE3A7D94D": "AWS::SQS::Queue",
        "personaresourcesDeadLetterQueue71F55F89": "AWS::SQS::Queue",
        "vcstartresourcesQueue0DBA0D54": "AWS::SQS::Queue",
        "vcstartresourcesDeadLetterQueueE70BCC9F": "AWS::SQS::Queue",
        # A new load balancer has a new ARN and DNS name, which the edge reads only when it is deployed.
        "IngressLoadBalancerAE82CB09": "AWS::ElasticLoadBalancingV2::LoadBalancer",
        "IngressAccessLogs80F9B44E": "AWS::S3::Bucket",
        # Port 80's listener keeps this ID with and without a domain: under another, CloudFormation would create the
        # new one while this one still holds the port (DuplicateListener; constructs/ingress/README.md).
        "IngressLoadBalancerHttp38EB6668": "AWS::ElasticLoadBalancingV2::Listener",
    },
}
# The primary region only (constructs/service_data): each service's global table, the multi-Region key it
# and the signing-key secret are encrypted with, the key's replica in the other region (a new one would
# be a new key the replicas of table and secret do not use), and the secret.
PRIMARY_STATEFUL = {
    "data": {
        "authdataTable703D2B51": "AWS::DynamoDB::GlobalTable",
        "personadataTableB4DE4350": "AWS::DynamoDB::GlobalTable",
        "vcstartdataTable27972B7F": "AWS::DynamoDB::GlobalTable",
        "authdataKey69E5D817": "AWS::KMS::Key",
        "personadataKey5EE35C3C": "AWS::KMS::Key",
        "vcstartdataKeyF2A71DB1": "AWS::KMS::Key",
        "authdataKeyeuwest1365889EF": "Custom::KmsReplicaKey",
        "personadataKeyeuwest1F8EF4398": "Custom::KmsReplicaKey",
        "vcstartdataKeyeuwest14B291790": "Custom::KmsReplicaKey",
        "authdataSigningKey5FA6556A": "AWS::SecretsManager::Secret",
    },
}
EDGE_STATEFUL = {
    # The distribution's domain name is what viewers (or the DNS alias) use.
    "EdgeDistribution0060737B": "AWS::CloudFront::Distribution",
    # A new store would lose the active_region switch (runbooks/region-failover.md).
    "EdgeSwitches062D2B34": "AWS::CloudFront::KeyValueStore",
    # Not the VPC origins: they hold no data, and CloudFront cannot update one in use, so their logical IDs change
    # with what they hold (tests/test_update_safety.py test_no_vpc_origin_changes_under_its_logical_id).
    "EdgeLogsA4EA23EB": "AWS::S3::Bucket",
    "LogsKeyFE4C4A83": "AWS::KMS::Key",
}


@pytest.mark.parametrize("region", ["eu-central-1", "eu-west-1"])
@pytest.mark.parametrize("stack", sorted(STATEFUL))
def test_stateful_resources_keep_their_logical_ids(dev, region, stack):
    resources = dev.template(f"mf-{region}/{stack}")["Resources"]
    assert {logical_id: resources.get(logical_id, {}).get("Type") for logical_id in STATEFUL[stack]} == STATEFUL[stack]


@pytest.mark.parametrize("stack", sorted(PRIMARY_STATEFUL))
def test_primary_region_stateful_resources_keep_their_logical_ids(dev, stack):
    resources = dev.template(f"mf-eu-central-1/{stack}")["Resources"]
    assert {logical_id: resources.get(logical_id, {}).get("Type") for logical_id in PRIMARY_STATEFUL[stack]} == PRIMARY_STATEFUL[stack]


def test_edge_stateful_resources_keep_their_logical_ids(dev):
    resources = dev.template("mf-edge/edge")["Resources"]
    assert {logical_id: resources.get(logical_id, {}).get("Type") for logical_id in EDGE_STATEFUL} == EDGE_STATEFUL
