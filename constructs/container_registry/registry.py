"""ECR repositories for services, and the registry's cross-region replication."""

from __future__ import annotations

from typing import Mapping, Sequence

import aws_cdk as cdk
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_kms as kms
from constructs import Construct


def repository_name(repository_prefix: str, service: str) -> str:
    """A service's repository: ``<prefix>/<service>``, the same name in every region (replication keeps it)."""
    return f"{repository_prefix}/{service}"


def _lifecycle_rules(kept_tags: Sequence[str], images_kept: int, untagged_expiry_days: int) -> list[ecr.LifecycleRule]:
    """One repository's rules, by priority: one per kept tag, then untagged images by age, then any by count.

    ECR expires an image by at most one rule, and an image that a higher-priority rule's tag selection
    matches cannot be expired by a lower-priority rule: the tag rules shield the images the service runs
    from the count rule however many pushes come after them (CI pushes every service on every change).
    One rule per tag, since a tagPatternList selects only images that carry ALL its patterns.
    """
    tags = list(dict.fromkeys(kept_tags))  # once each, in order (image_tag and canary_image_tag may be equal)
    keep = [
        # Tags are immutable, so a tag names one image: "expire all but the newest 1" never expires it.
        ecr.LifecycleRule(rule_priority=priority, description=f"Keep {tag}: the configuration runs it",
                          tag_status=ecr.TagStatus.TAGGED, tag_pattern_list=[tag], max_image_count=1)
        for priority, tag in enumerate(tags, 1)
    ]
    return keep + [
        ecr.LifecycleRule(rule_priority=len(tags) + 1, description=f"Expire untagged images after {untagged_expiry_days} days",
                          tag_status=ecr.TagStatus.UNTAGGED, max_image_age=cdk.Duration.days(untagged_expiry_days)),
        # ECR (and CDK) require the TagStatus.ANY rule to have the highest priority number: it goes last.
        ecr.LifecycleRule(rule_priority=len(tags) + 2, description=f"Keep the newest {images_kept} images",
                          tag_status=ecr.TagStatus.ANY, max_image_count=images_kept),
    ]


class ServiceRepositories(Construct):
    """One private ECR repository per service, named ``<repository_prefix>/<service>``.

    Every repository scans on push, has immutable tags, is encrypted with ``encryption_key``, never
    expires the images its service runs (``kept_tags``), drops untagged images after
    ``untagged_expiry_days`` and keeps the newest ``images_kept`` images. The repositories are
    retained when the stack is deleted (they hold released images).
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
        kept_tags: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        if len(set(service_names)) != len(service_names) or not service_names:
            raise ValueError(f"service_names={list(service_names)} is invalid: expected unique, non-empty names")
        if images_kept < 1 or untagged_expiry_days < 1:
            raise ValueError("images_kept and untagged_expiry_days must be at least 1")
        kept_tags = kept_tags or {}
        # A tag with * would be a pattern that keeps every image it matches, not the one a service runs.
        if set(kept_tags) - set(service_names) or any(
            isinstance(tags, str) or any(not tag or "*" in tag for tag in tags) for tags in kept_tags.values()
        ):
            raise ValueError(f"kept_tags={dict(kept_tags)} is invalid: expected names from service_names, each "
                             "with a list of exact image tags (non-empty, no *)")

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
                lifecycle_rules=_lifecycle_rules(kept_tags.get(service, ()), images_kept, untagged_expiry_days),
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
