"""ECR repositories for services, and the registry's cross-region replication."""

from __future__ import annotations

from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_kms as kms
from constructs import Construct


def repository_name(repository_prefix: str, service: str) -> str:
    """A service's repository: ``<prefix>/<service>``, the same name in every region (replication keeps it)."""
    return f"{repository_prefix}/{service}"


class ServiceRepositories(Construct):
    """One private ECR repository per service, named ``<repository_prefix>/<service>``.

    Every repository scans on push, has immutable tags, is encrypted with ``encryption_key``, keeps
    the newest ``images_kept`` images and drops untagged ones after ``untagged_expiry_days``. The
    repositories are retained when the stack is deleted (they hold released images).
    Exposes ``self.repositories``: service name -> ``ecr.Repository``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        repository_prefix: str,
        service_names: Sequence[str],
        encryption_key: kms.IKey,
        images_kept: int,
        untagged_expiry_days: int,
    ) -> None:
        super().__init__(scope, construct_id)
        if len(set(service_names)) != len(service_names) or not service_names:
            raise ValueError(f"service_names={list(service_names)} is invalid: expected unique, non-empty names")
        if images_kept < 1 or untagged_expiry_days < 1:
            raise ValueError("images_kept and untagged_expiry_days must be at least 1")

        self.repositories: dict[str, ecr.Repository] = {}
        for service in service_names:
            repository = ecr.Repository(
                self,
                service,
                repository_name=repository_name(repository_prefix, service),
                image_scan_on_push=True,
                image_tag_mutability=ecr.TagMutability.IMMUTABLE,
                encryption=ecr.RepositoryEncryption.KMS,
                encryption_key=encryption_key,
                removal_policy=cdk.RemovalPolicy.RETAIN,
                lifecycle_rules=[
                    ecr.LifecycleRule(
                        rule_priority=1,
                        description=f"Expire untagged images after {untagged_expiry_days} days",
                        tag_status=ecr.TagStatus.UNTAGGED,
                        max_image_age=cdk.Duration.days(untagged_expiry_days),
                    ),
                    ecr.LifecycleRule(
                        rule_priority=2,
                        description=f"Keep the newest {images_kept} images",
                        tag_status=ecr.TagStatus.ANY,
                        max_image_count=images_kept,
                    ),
                ],
            )
            cdk.Tags.of(repository).add("service", service)
            self.repositories[service] = repository


class RegistryReplication(Construct):
    """Replicates this region's repositories under ``repository_prefix`` to other regions.

    ECR allows one replication configuration per registry, so create this once, in the primary
    region. Create the destination repositories (``ServiceRepositories`` in each region) before the
    first push: a repository that replication creates gets ECR's defaults, not this app's settings.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        destination_regions: Sequence[str],
        repository_prefix: str,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        if not destination_regions or stack.region in destination_regions:
            raise ValueError(
                f"destination_regions={list(destination_regions)} is invalid: name other regions than {stack.region}"
            )
        self.configuration = ecr.CfnReplicationConfiguration(
            self,
            "Configuration",
            replication_configuration=ecr.CfnReplicationConfiguration.ReplicationConfigurationProperty(
                rules=[
                    ecr.CfnReplicationConfiguration.ReplicationRuleProperty(
                        destinations=[
                            ecr.CfnReplicationConfiguration.ReplicationDestinationProperty(
                                region=region, registry_id=stack.account
                            )
                            for region in destination_regions
                        ],
                        repository_filters=[
                            ecr.CfnReplicationConfiguration.RepositoryFilterProperty(
                                filter=f"{repository_prefix}/", filter_type="PREFIX_MATCH"
                            )
                        ],
                    )
                ]
            ),
        )
