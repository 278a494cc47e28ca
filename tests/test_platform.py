"""Platform stack (cluster, namespace, registry) and the global stack (registry replication)."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match, Template

PLATFORM_STACKS = ["mf-eu-central-1/platform", "mf-eu-west-1/platform"]
SERVICES = ["auth", "persona", "vc-start"]


@pytest.mark.parametrize("stack", PLATFORM_STACKS)
def test_cluster_has_enhanced_container_insights_and_service_connect_namespace(dev, stack):
    template = Template.from_json(dev.template(stack))
    template.has_resource_properties(
        "AWS::ECS::Cluster",
        {
            "ClusterSettings": [{"Name": "containerInsights", "Value": "enhanced"}],
            "ServiceConnectDefaults": {"Namespace": {"Fn::GetAtt": [Match.string_like_regexp("Namespace"), "Arn"]}},
        },
    )
    template.resource_properties_count_is("AWS::ServiceDiscovery::PrivateDnsNamespace", {"Name": "svc.local"}, 1)


@pytest.mark.parametrize(
    "profile, strategy",
    [
        ("dev", [{"Base": 1, "CapacityProvider": "FARGATE", "Weight": 1}, {"Base": 0, "CapacityProvider": "FARGATE_SPOT", "Weight": 3}]),
        ("prod", [{"Base": 2, "CapacityProvider": "FARGATE", "Weight": 1}, {"Base": 0, "CapacityProvider": "FARGATE_SPOT", "Weight": 1}]),
    ],
)
def test_capacity_strategy_has_an_on_demand_base_and_spot_weight(dev, prod, profile, strategy):
    assembly = {"dev": dev, "prod": prod}[profile]
    for stack in PLATFORM_STACKS:
        Template.from_json(assembly.template(stack)).has_resource_properties(
            "AWS::ECS::ClusterCapacityProviderAssociations",
            {"CapacityProviders": ["FARGATE", "FARGATE_SPOT"], "DefaultCapacityProviderStrategy": strategy},
        )


def test_namespace_name_is_configurable(one_region):
    """one_region (tests/conftest.py): namespace mesh.internal, eu-west-1 alone."""
    Template.from_json(one_region.template("mf-eu-west-1/platform")).has_resource_properties(
        "AWS::ServiceDiscovery::PrivateDnsNamespace", {"Name": "mesh.internal"}
    )
    # With one region there is nothing to replicate to: the global stack holds only the cost budget.
    assert one_region.resources("mf-eu-west-1/global", "AWS::ECR::ReplicationConfiguration") == {}


@pytest.mark.parametrize("stack", PLATFORM_STACKS)
def test_one_hardened_repository_per_service(dev, stack):
    repositories = {
        r["Properties"]["RepositoryName"]: r["Properties"] for r in dev.resources(stack, "AWS::ECR::Repository").values()
    }
    assert sorted(repositories) == [f"mf/{service}" for service in SERVICES]
    key_ids = set(dev.resources(stack, "AWS::KMS::Key"))
    for properties in repositories.values():
        assert properties["ImageScanningConfiguration"] == {"ScanOnPush": True}
        assert properties["ImageTagMutability"] == "IMMUTABLE"
        assert properties["EncryptionConfiguration"]["EncryptionType"] == "KMS"
        assert properties["EncryptionConfiguration"]["KmsKey"]["Fn::GetAtt"][0] in key_ids
    for key in dev.resources(stack, "AWS::KMS::Key").values():
        assert key["Properties"]["EnableKeyRotation"] is True


@pytest.mark.parametrize("profile, untagged_days, kept", [("dev", 7, 20), ("prod", 14, 50)])
def test_repository_lifecycle_expires_untagged_and_caps_image_count(dev, prod, profile, untagged_days, kept):
    assembly = {"dev": dev, "prod": prod}[profile]
    for repository in assembly.resources("mf-eu-west-1/platform", "AWS::ECR::Repository").values():
        rules = json.loads(repository["Properties"]["LifecyclePolicy"]["LifecyclePolicyText"])["rules"]
        assert [r["selection"] for r in rules] == [
            {"tagStatus": "untagged", "countType": "sinceImagePushed", "countNumber": untagged_days, "countUnit": "days"},
            {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": kept},
        ]
        assert all(r["action"] == {"type": "expire"} for r in rules)


def test_repositories_and_keys_survive_stack_deletion(dev):
    for stack in PLATFORM_STACKS:
        for resource_type in ("AWS::ECR::Repository", "AWS::KMS::Key"):
            for resource in dev.resources(stack, resource_type).values():
                assert resource["DeletionPolicy"] == "Retain" and resource["UpdateReplacePolicy"] == "Retain"


def test_registry_replicates_once_from_the_primary_to_the_other_region(dev):
    assert "mf-eu-west-1/global" not in dev.templates
    configurations = [
        resource for _, _, resource in dev.all_resources() if resource["Type"] == "AWS::ECR::ReplicationConfiguration"
    ]
    assert len(configurations) == 1
    Template.from_json(dev.template("mf-eu-central-1/global")).has_resource_properties(
        "AWS::ECR::ReplicationConfiguration",
        {"ReplicationConfiguration": {"Rules": [{
            "Destinations": [{"Region": "eu-west-1", "RegistryId": {"Ref": "AWS::AccountId"}}],
            "RepositoryFilters": [{"Filter": "mf/", "FilterType": "PREFIX_MATCH"}],
        }]}},
    )


def test_primary_region_choice_moves_the_global_stack(prod_pipeline):
    """prod_pipeline's primary region is eu-west-1, listed second in cdk.json's regions (tests/conftest.py). Its
    other settings do not place the global stack: the stage of the configured primary region makes it."""
    assert "mf-eu-west-1/global" in prod_pipeline.templates
    assert "mf-eu-central-1/global" not in prod_pipeline.templates
    Template.from_json(prod_pipeline.template("mf-eu-west-1/global")).has_resource_properties(
        "AWS::ECR::ReplicationConfiguration",
        {"ReplicationConfiguration": {"Rules": [Match.object_like({"Destinations": [Match.object_like({"Region": "eu-central-1"})]})]}},
    )
