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
    # Target tracking waits this long after a scaling activity before the next one in the same
    # direction: out quickly when load rises, in slowly so a dip between bursts does not remove
    # tasks the next burst needs (and Fargate takes a minute or two to start a task).
    scale_out_cooldown_seconds: int
    scale_in_cooldown_seconds: int
    # How long an event may wait in a service's queue before a worker takes it (see backlog_per_task).
    event_latency_target_seconds: int
    # Load balancer requests one task should serve per minute (see REQUESTS_PER_TASK_PER_MINUTE).
    requests_per_task_per_minute: int

    def shared_zone_count(self, az_count: int) -> int:
        """How many of the VPC's first AZs hold a NAT gateway or interface endpoints that the other AZs use too
        (constructs/vpc_network puts both into the first AZs): 0 when every AZ has its own. Losing one of these
        AZs takes internet egress and AWS API access from every AZ, not from that one alone."""
        return max((count for count in (self.nat_gateways, self.endpoint_az_count) if count < az_count), default=0)

    @property
    def backlog_per_task(self) -> int:
        """SQS messages per running task that target tracking keeps the queue at: the acceptable
        wait divided by the time one worker takes per message. A backlog of that size drains within
        the acceptable wait, so the worker scales out before events wait longer."""
        return max(1, round(self.event_latency_target_seconds / EVENT_PROCESSING_SECONDS))


# One event through a worker (servicekit.events): claim it in the table, run the handler (a
# DynamoDB write or transaction and usually a PutEvents), mark it done, delete the message: about
# five sequential AWS calls of 10-40 ms each, one message at a time per worker.
EVENT_PROCESSING_SECONDS = 0.2
# A task (512 CPU units, sidecars included) serves the services' reads at 100+ requests per second
# with p95 under 20 ms (services/README.md, benchmark); 1000 per minute (about 17 per second) keeps
# each task far from that, so request-count scaling acts before latency rises. CPU-heavy routes
# (auth's argon2 login: about 25 per second per core) are caught by the CPU target instead.
REQUESTS_PER_TASK_PER_MINUTE = 1000


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
        scale_out_cooldown_seconds=60,
        scale_in_cooldown_seconds=300,
        # Dev tolerates a minute; well within persona's 120 s reservation hold either way.
        event_latency_target_seconds=60,
        requests_per_task_per_minute=REQUESTS_PER_TASK_PER_MINUTE,
    ),
    "prod": ProfileDefaults(
        nat_gateways=3,
        endpoint_az_count=3,
        log_retention="ONE_YEAR",
        # Two on-demand tasks per service always; above that, half the tasks on Spot.
        capacity_strategy=(CapacityShare("FARGATE", base=2, weight=1), CapacityShare("FARGATE_SPOT", base=0, weight=1)),
        images_kept=50,
        untagged_image_expiry_days=14,
        # One task per AZ at least (the services rebalance across the 3 AZs), so an AZ loss leaves
        # two thirds of the capacity serving; up to four per AZ.
        min_tasks=3,
        max_tasks=12,
        scale_out_cooldown_seconds=60,
        scale_in_cooldown_seconds=600,
        # A session's slot is held 120 s (persona's RESERVATION_HOLD_SECONDS): an event must reach its
        # worker well within that, or the saga times out. 30 s leaves the rest for retries.
        event_latency_target_seconds=30,
        requests_per_task_per_minute=REQUESTS_PER_TASK_PER_MINUTE,
    ),
}


def profile_defaults(profile: str) -> ProfileDefaults:
    return _PROFILES[profile]
