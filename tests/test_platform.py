"""Platform stack (cluster, namespace, registry) and the global stack (registry replication)."""

from __future__ import annotations

import json

import aws_cdk as cdk
import pytest
from aws_cdk import aws_kms as kms
from aws_cdk.assertions import Match, Template

from constructs.container_registry import ServiceRepositories
from tests.conftest import PROD_IMAGE_TAG

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


def _lifecycle(repository: dict) -> list[tuple[int, dict]]:
    """(priority, selection) of each rule of a repository's lifecycle policy, in priority order."""
    rules = json.loads(repository["Properties"]["LifecyclePolicy"]["LifecyclePolicyText"])["rules"]
    assert all(r["action"] == {"type": "expire"} for r in rules)
    return sorted((r["rulePriority"], r["selection"]) for r in rules)


def _kept(tag: str) -> dict:
    """The selection that keeps the one image tagged ``tag``: it never holds more than one."""
    return {"tagStatus": "tagged", "tagPatternList": [tag], "countType": "imageCountMoreThan", "countNumber": 1}


def _untagged(days: int) -> dict:
    return {"tagStatus": "untagged", "countType": "sinceImagePushed", "countNumber": days, "countUnit": "days"}


def _newest(count: int) -> dict:
    return {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": count}


@pytest.mark.parametrize("profile, untagged_days, kept", [("dev", 7, 20), ("prod", 14, 50)])
def test_repository_lifecycle_expires_untagged_and_caps_image_count(dev, prod, profile, untagged_days, kept):
    """Services built from their Dockerfiles (the reference settings) run nothing from these repositories: no tag to keep."""
    assembly = {"dev": dev, "prod": prod}[profile]
    for repository in assembly.resources("mf-eu-west-1/platform", "AWS::ECR::Repository").values():
        assert _lifecycle(repository) == [(1, _untagged(untagged_days)), (2, _newest(kept))]


@pytest.mark.parametrize("stack", PLATFORM_STACKS)
def test_repositories_never_expire_the_image_tag_the_services_run(prod_pipeline, stack):
    """prod_pipeline runs every service on PROD_IMAGE_TAG (tests/conftest.py). However many pushes come after it
    (CI pushes every service on every change), the count rule cannot expire it: ECR lets no lower-priority rule
    expire an image that a higher-priority rule's tag selection matches, so a new task can always pull it."""
    repositories = prod_pipeline.resources(stack, "AWS::ECR::Repository").values()
    assert len(repositories) == len(SERVICES)
    for repository in repositories:
        assert _lifecycle(repository) == [(1, _kept(PROD_IMAGE_TAG)), (2, _untagged(14)), (3, _newest(50))]


def _repositories(kept_tags) -> dict[str, dict]:
    """The construct alone in a bare stack (what a canary tag adds needs App Mesh; no shared app has one)."""
    stack = cdk.Stack(cdk.App(), "Registry", env=cdk.Environment(account="111122223333", region="eu-west-1"))
    ServiceRepositories(stack, "Repositories", repository_prefix="mf", service_names=SERVICES,
                        encryption_key=kms.Key(stack, "Key"), images_kept=20, untagged_expiry_days=7, kept_tags=kept_tags)
    return {r["Properties"]["RepositoryName"]: r for r in Template.from_stack(stack).find_resources("AWS::ECR::Repository").values()}


def test_each_kept_tag_gets_its_own_rule_above_the_untagged_and_count_rules():
    """One rule per tag (a tagPatternList selects only images with ALL its patterns), in the order given, each tag
    once; a service without tags keeps the two rules."""
    repositories = _repositories({"auth": ["1.4.2", "1.5.0-rc1"], "persona": ["2.0.0", "2.0.0"]})
    assert _lifecycle(repositories["mf/auth"]) == [
        (1, _kept("1.4.2")), (2, _kept("1.5.0-rc1")), (3, _untagged(7)), (4, _newest(20))]
    assert _lifecycle(repositories["mf/persona"]) == [(1, _kept("2.0.0")), (2, _untagged(7)), (3, _newest(20))]
    assert _lifecycle(repositories["mf/vc-start"]) == [(1, _untagged(7)), (2, _newest(20))]


@pytest.mark.parametrize("kept_tags", [{"orders": ["1.0"]}, {"auth": ["1.*"]}, {"auth": [""]}, {"auth": "1.4.2"}],
                         ids=["unknown service", "wildcard", "empty tag", "a string, not a list"])
def test_kept_tags_must_name_exact_tags_of_known_services(kept_tags):
    with pytest.raises(ValueError, match=r"kept_tags=.* is invalid: expected names from service_names"):
        _repositories(kept_tags)


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
