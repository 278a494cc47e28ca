"""Profile-dependent defaults, in one place, as pure data.

A profile (`dev` or `prod`) picks cost against resilience. Stacks read these values; constructs get
them as explicit props, so a construct never knows which profile it runs under.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CapacityShare:
    """A capacity provider's place in the cluster's default strategy."""

    provider: str  # FARGATE or FARGATE_SPOT
    base: int  # tasks always placed on this provider first
    weight: int  # share of the tasks above all bases


@dataclass(frozen=True)
class ProfileDefaults:
    nat_gateways: int
    # Interface endpoints cost per AZ-hour; dev keeps them in one AZ, prod in every AZ.
    endpoint_az_count: int
    log_retention: str  # an aws_logs.RetentionDays member name
    capacity_strategy: tuple[CapacityShare, ...]
    # ECR lifecycle: how many tagged images each repository keeps, and days before untagged ones go.
    images_kept: int
    untagged_image_expiry_days: int
    # Task count bounds of a service whose config does not set min_tasks / max_tasks.
    min_tasks: int
    max_tasks: int


_PROFILES = {
    "dev": ProfileDefaults(
        nat_gateways=1,
        endpoint_az_count=1,
        log_retention="ONE_MONTH",
        # One on-demand task per service keeps it reachable through a Spot reclaim; the rest is Spot.
        capacity_strategy=(CapacityShare("FARGATE", base=1, weight=1), CapacityShare("FARGATE_SPOT", base=0, weight=3)),
        images_kept=20,
        untagged_image_expiry_days=7,
        min_tasks=1,
        max_tasks=3,
    ),
    "prod": ProfileDefaults(
        nat_gateways=3,
        endpoint_az_count=3,
        log_retention="ONE_YEAR",
        # Two on-demand tasks per service always; above that, half the tasks on Spot.
        capacity_strategy=(CapacityShare("FARGATE", base=2, weight=1), CapacityShare("FARGATE_SPOT", base=0, weight=1)),
        images_kept=50,
        untagged_image_expiry_days=14,
        min_tasks=2,
        max_tasks=10,
    ),
}


def profile_defaults(profile: str) -> ProfileDefaults:
    return _PROFILES[profile]
