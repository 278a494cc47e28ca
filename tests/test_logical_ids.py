"""Stateful resources keep their logical IDs: a changed ID makes CloudFormation replace the resource.

If this fails after a refactor, keep the old construct IDs (or override the logical ID) instead of
updating the list, unless replacing the resource is the intent.
"""

from __future__ import annotations

import pytest

STATEFUL = {
    "network": {
        "NetworkVpc7FB7348F": "AWS::EC2::VPC",
        "LogsKeyFE4C4A83": "AWS::KMS::Key",
        "NetworkFlowLogGroup4F8CEEEF": "AWS::Logs::LogGroup",
        "PermissionsBoundaryPolicy2F8055A4": "AWS::IAM::ManagedPolicy",
    },
    "platform": {
        "RegistryKeyDD63DA09": "AWS::KMS::Key",
        "Repositoriesauth3F70D807": "AWS::ECR::Repository",
        "RepositoriespersonaE4E28684": "AWS::ECR::Repository",
        "RepositoriesvcstartA5D17395": "AWS::ECR::Repository",
        "ComputeCluster4F8E5F81": "AWS::ECS::Cluster",
        "ComputeClusterDefaultServiceDiscoveryNamespaceC42D48F6": "AWS::ServiceDiscovery::PrivateDnsNamespace",
    },
}


@pytest.mark.parametrize("region", ["eu-central-1", "eu-west-1"])
@pytest.mark.parametrize("stack", sorted(STATEFUL))
def test_stateful_resources_keep_their_logical_ids(dev, region, stack):
    resources = dev.template(f"mf-{region}/{stack}")["Resources"]
    assert {logical_id: resources.get(logical_id, {}).get("Type") for logical_id in STATEFUL[stack]} == STATEFUL[stack]
