"""The app's typed configuration: cdk.json context -> one frozen dataclass tree, validated once.

Every public config key is declared in ``_KEYS`` below with its default; ``load_config`` is the only
place that reads context. A bad value raises ``ConfigError`` whose message is one line naming the
key, the bad value and what is allowed. This module does not import aws_cdk, so it stays fast and
testable on its own; app.py turns ``ConfigError`` into a one-line message and a non-zero exit.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from .defaults import profile_defaults

PROFILES = ("dev", "prod")
MESH_BACKENDS = ("service-connect", "appmesh")

# AWS commercial regions whose first three availability zones are named <region>a/b/c in every
# account. (ap-northeast-1 and ca-central-1 are left out: most accounts there see a/c/d and a/b/d.)
KNOWN_REGIONS = (
    "af-south-1", "ap-east-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1",
    "ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4",
    "eu-central-1", "eu-central-2", "eu-north-1", "eu-south-1", "eu-south-2",
    "eu-west-1", "eu-west-2", "eu-west-3", "il-central-1", "me-central-1", "me-south-1",
    "sa-east-1", "us-east-1", "us-east-2", "us-west-2",
)

# Every event a service consumes has its JSON Schema here; the bus's schema registry is built from them.
EVENT_CONTRACTS_DIR = Path(__file__).resolve().parent.parent / "services" / "contracts" / "events"

AZ_COUNT = 3
# Each AZ gets one private subnet of VPC prefix + 2 and a public and an isolated one of prefix + 5
# (see constructs/vpc_network). AWS subnets can be no smaller than /28, so the VPC can be no
# smaller than /23; AWS VPCs can be no larger than /16.
VPC_PREFIX_MIN, VPC_PREFIX_MAX = 16, 23
_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
# Lower-case letters, digits and hyphens; it starts resource names, so keep it short.
_PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,9}$")
_NAMESPACE_PATTERN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_ACCOUNT_PATTERN = re.compile(r"^[0-9]{12}$")


class ConfigError(ValueError):
    """A config value is wrong. The message is one line: key, bad value, what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key = key
        super().__init__(f"config error: {key}={_show(value)} is invalid: {allowed}")


@dataclass(frozen=True)
class RegionConfig:
    """One deployment region and its VPC address range."""

    name: str
    cidr: str

    @property
    def availability_zones(self) -> tuple[str, ...]:
        return tuple(f"{self.name}{letter}" for letter in "abc"[:AZ_COUNT])


@dataclass(frozen=True)
class LegacyConfig:
    """A legacy Lambda function behind the service's path (strangler fig): the load balancer splits the
    path's requests between it and the service by the SSM flag /<prefix>/<service>/migration/percent-to-service.
    A load balancer invokes only functions of its own region, so: one function name in every region
    (in the app's account), or an ARN per configured region."""

    function_name: str | None  # <name> or <name>:<alias>, the same in every region
    function_arns: tuple[tuple[str, str], ...]  # region -> function ARN in that region
    initial_percent_to_service: int  # the flag's value when the stack creates it; runbooks change it after

    def function_arn(self, region: str, partition: str, account: str) -> str:
        if self.function_name:
            return f"arn:{partition}:lambda:{region}:{account}:function:{self.function_name}"
        return dict(self.function_arns)[region]


@dataclass(frozen=True)
class TableIndexConfig:
    """A global secondary index on a service's table: a string partition key, a string or number sort key, the
    projection is the keys only."""

    name: str
    partition_key: str
    sort_key: str
    sort_key_type: str = "string"  # "string" or "number" (INDEX_KEY_TYPES)


@dataclass(frozen=True)
class ServiceConfig:
    """One service of the mesh. Its image: ``image_tag`` from the platform's ECR repository, else
    ``image`` from another registry, else services/<name>/Dockerfile built as a CDK asset."""

    name: str
    port: int
    cpu: int  # task CPU units, sidecars included
    memory_mib: int  # task memory, sidecars included
    health_check_path: str
    calls: tuple[str, ...]
    min_tasks: int | None  # None: the profile's default
    max_tasks: int | None
    image: str | None
    image_tag: str | None  # run <prefix>/<name>:<tag> from this region's ECR repository
    canary_image_tag: str | None  # App Mesh only: what the canary runs, from the same repository
    liveness_path: str
    health_check_command: tuple[str, ...] | None  # None: probe liveness_path with the image's python
    user: str
    environment: tuple[tuple[str, str], ...]
    secrets: tuple[tuple[str, str], ...]  # env var -> "secretsmanager:<name>" or "ssm:<parameter>"
    path: str | None  # the URL path the edge routes to this service (path and path/*); None: mesh only
    table: bool  # the service owns a DynamoDB table (TABLE_NAME); nothing else may touch it
    grpc_port: int | None  # a second, gRPC port the mesh publishes besides `port`
    worker: bool  # a second essential container runs `python -m <module>.worker` (reads QUEUE_URL)
    module: str  # the service's Python package in its image (`python -m <module>`)
    consumes: tuple[tuple[str, tuple[str, ...]], ...]  # producer service -> event detail-types; feeds the queue
    signing_key: bool  # the stack creates the service's JWT signing-key secret (JWT_SIGNING_SECRET_ID)
    legacy: LegacyConfig | None = None  # a legacy function that shares the service's path (strangler fig)
    table_actions: tuple[str, ...] = ()  # the DynamoDB item actions its task role gets on its table (with table)
    table_indexes: tuple[TableIndexConfig, ...] = ()  # GSIs on its table; its task role may Query each (with table)
    priority: int | None = None  # its load balancer rule's priority (with path): config, else default_rule_priority

    @property
    def worker_command(self) -> tuple[str, ...]:
        return ("python", "-m", f"{self.module}.worker")

    @property
    def ecr_tags(self) -> tuple[str, ...]:
        """The tags it runs from its ECR repository, each once: ``image_tag`` and ``canary_image_tag`` (``image`` is
        another registry's). The repository never expires them; the pipeline checks they exist before a deploy."""
        return tuple(dict.fromkeys(tag for tag in (self.image_tag, self.canary_image_tag) if tag))


def min_task_count(service: ServiceConfig, profile: str) -> int:
    """The fewest tasks a service runs: its own min_tasks, else the profile's."""
    return service.min_tasks or profile_defaults(profile).min_tasks


@dataclass(frozen=True)
class MeshOptionsConfig:
    """Settings of whichever mesh backend is chosen (``tls`` applies to Service Connect; App Mesh always uses TLS)."""

    per_request_timeout_seconds: int
    idle_timeout_seconds: int
    tls: str  # auto (prod on, dev off) | on | off
    private_ca_arns: tuple[tuple[str, str], ...]  # region -> an existing CA to use instead of creating one

    def private_ca_arn(self, region: str) -> str | None:
        return dict(self.private_ca_arns).get(region)


@dataclass(frozen=True)
class DeploymentConfig:
    """How a new task definition reaches traffic (Service Connect backend) and when it rolls back."""

    strategy: str  # CANARY | LINEAR | ROLLING
    canary_percent: float
    linear_step_percent: float
    step_bake_minutes: int
    bake_time_minutes: int
    alarm_5xx_percent: float
    alarm_p95_latency_ms: int


@dataclass(frozen=True)
class AppMeshConfig:
    canary_weight_percent: int
    max_retries: int
    per_retry_timeout_ms: int
    shift_steps_percent: tuple[int, ...]  # the traffic shift's canary percentages, in order, ending at 100
    shift_bake_minutes: int  # wait after each step before the next alarm check
    shift_min_canary_requests: int  # requests the canary must answer in a bake at 100 % (a step at p %: p % of them)


@dataclass(frozen=True)
class DomainConfig:
    """A Route 53 public hosted zone the app may add records and certificates to."""

    zone_name: str
    hosted_zone_id: str
    subdomain: str  # the edge answers at <subdomain>.<zone_name>; each region at <region>.<subdomain>.<zone_name>

    @property
    def edge_name(self) -> str:
        return f"{self.subdomain}.{self.zone_name}"

    def regional_name(self, region: str) -> str:
        return f"{region}.{self.edge_name}"


@dataclass(frozen=True)
class GitHubConfig:
    """The GitHub repository whose workflows may assume the app's CI roles, from one branch only."""

    repository: str  # owner/name
    branch: str  # the only ref whose workflows get credentials: refs/heads/<branch>
    oidc_provider_arn: str | None  # the account's existing GitHub OIDC provider; None: the app creates one

    @property
    def subject(self) -> str:
        """The OIDC token's ``sub`` claim of a job that runs on a push to the branch (no environment)."""
        return f"repo:{self.repository}:ref:refs/heads/{self.branch}"


@dataclass(frozen=True)
class IngressConfig:
    """The regional load balancers and the CloudFront edge in front of them."""

    waf: str  # auto (prod on, dev off) | on | off
    waf_rate_limit_per_5_minutes: int  # requests one IP may make in 5 minutes before WAF blocks it
    access_log_days: int  # days load balancer access logs are kept
    failover_status_codes: tuple[int, ...]  # origin answers that send CloudFront to the other region
    price_class: str  # CloudFront price class: which edge locations serve viewers
    # Raise it to make the edge read the regions' load balancers again (after one was replaced).
    origin_generation: int


@dataclass(frozen=True)
class EventsConfig:
    """The event bus and the services' event queues."""

    max_receive_count: int  # deliveries of a message before its queue moves it to the dead-letter queue
    archive_retention_days: int  # how long the bus's archive keeps events for replay


@dataclass(frozen=True)
class BudgetConfig:
    """The monthly AWS Budgets cost budget of this deployment and who hears when it is reached."""

    monthly_limit_usd: tuple[tuple[str, float], ...]  # profile -> limit in USD
    alert_thresholds_percent: tuple[float, ...]  # each: an ACTUAL and a FORECASTED alert at this % of the limit
    notify_emails: tuple[str, ...]  # e-mail subscribers of every alert, besides the budget's SNS topic
    # Count only costs tagged project=<prefix> (a cost allocation tag, activated once per account);
    # false: the whole account's costs.
    filter_by_project_tag: bool

    def limit_usd(self, profile: str) -> float:
        return dict(self.monthly_limit_usd)[profile]


@dataclass(frozen=True)
class ObservabilityConfig:
    """Trace sampling and the thresholds of the observability stack's alarms."""

    xray_sampling_rate: float  # share of requests that start a trace (X-Ray rules and the services' OTel sampler)
    xray_reservoir_per_second: int  # traces per second X-Ray samples before the rate applies (X-Ray clients)
    quota_alarm_percent: int  # a service quota's usage above this share of the quota alarms
    queue_age_alarm_minutes: int  # an event queue's oldest message older than this alarms
    edge_5xx_alarm_percent: float  # the edge's share of 5xx answers to viewers above this alarms (us-east-1)
    edge_5xx_alarm_minutes: int  # ... in this many of the last EDGE_5XX_ALARM_WINDOW_MINUTES one-minute periods
    table_throttle_alarm_requests: int  # a service table's throttled requests a minute above this make a bad minute
    table_system_error_alarm_requests: int  # ... and its DynamoDB system errors (500s) a minute above this
    notify_emails: tuple[str, ...]  # e-mail subscribers of every alarm topic (each region's and the edge's)


@dataclass(frozen=True)
class DataConfig:
    """The services' global tables and the token signer's replicated secret (the primary region's data stack)."""

    signing_key_rotation_days: int  # days between rotations of the JWT signing key


@dataclass(frozen=True)
class PipelineConfig:
    """The CDK Pipelines pipeline (pipelines/): where its source comes from, who hears that a release awaits approval."""

    connection_arn: str  # a CodeConnections connection in the app's account and primary region
    repository: str  # owner/name (GitLab: group/subgroup/name) as the connection's provider spells it
    branch: str  # the branch the pipeline builds and deploys
    # e-mail subscribers of the approval topic: told when a release waits for the manual approval before prod
    approval_emails: tuple[str, ...]


@dataclass(frozen=True)
class ChaosConfig:
    """The AWS FIS experiment templates of every region (the chaos stack). Templates cost nothing until run."""

    service: str  # the service the task experiments target (stop tasks, network faults)
    stop_percent: int  # share of the service's minimum task count the stop-tasks experiment stops (stop_task_count)
    task_network_faults: bool  # create the latency and packet-loss experiment (adds the SSM agent sidecar to the service)
    latency_ms: int  # delay the network-faults experiment adds to every packet of the targeted tasks
    packet_loss_percent: int  # share of packets the network-faults experiment drops
    duration_minutes: int  # how long each fault lasts
    availability_zone: str  # the zone letter (a, b or c) whose tasks the AZ experiment stops and whose subnets it cuts off


@dataclass(frozen=True)
class FoundationConfig:
    """The whole app's configuration. Built only by ``load_config``."""

    prefix: str
    regions: tuple[RegionConfig, ...]
    primary_region: str
    profile: str
    mesh: str
    account: str | None
    namespace: str
    services: tuple[ServiceConfig, ...]
    mesh_options: MeshOptionsConfig
    deployment: DeploymentConfig
    appmesh: AppMeshConfig
    ingress: IngressConfig
    domain: DomainConfig | None
    events: EventsConfig
    budget: BudgetConfig
    observability: ObservabilityConfig
    data: DataConfig
    github: GitHubConfig | None
    pipeline: PipelineConfig | None = None
    chaos: ChaosConfig | None = None

    def platform_key_alias(self, name: str) -> str:
        """A platform key's alias (CDK adds ``alias/``): one of PLATFORM_KEY_ALIASES, which no service may be named."""
        if name not in PLATFORM_KEY_ALIASES:
            raise ValueError(f"{name!r} is not in PLATFORM_KEY_ALIASES: add it there, so that no service can take it")
        return f"{self.prefix}/{name}"

    def event_source(self, service: str) -> str:
        """The ``source`` of every event a service publishes; its task role may put no other."""
        return f"{self.prefix}.{service}"

    @property
    def event_bus_name(self) -> str:
        return f"{self.prefix}-events"

    @property
    def producers(self) -> frozenset[str]:
        """Services whose events another service consumes: only they may publish to the bus."""
        return frozenset(producer for service in self.services for producer, _ in service.consumes)

    @property
    def token_signer(self) -> ServiceConfig | None:
        """The service that signs access tokens (``signing_key``); its callers verify them."""
        return next((service for service in self.services if service.signing_key), None)

    @property
    def mesh_tls(self) -> bool:
        """Whether service-to-service traffic is TLS. App Mesh always is; Service Connect by setting."""
        if self.mesh == "appmesh":
            return True
        return {"on": True, "off": False, "auto": self.is_prod}[self.mesh_options.tls]

    @property
    def waf_enabled(self) -> bool:
        return {"on": True, "off": False, "auto": self.is_prod}[self.ingress.waf]

    @property
    def exposed_services(self) -> tuple[ServiceConfig, ...]:
        """The services the edge routes to, in config order."""
        return tuple(service for service in self.services if service.path)

    @property
    def has_edge(self) -> bool:
        """The edge needs a load balancer in at least two regions to fail over between."""
        return bool(self.exposed_services) and len(self.regions) > 1

    @property
    def is_prod(self) -> bool:
        return self.profile == "prod"

    @property
    def region_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.regions)

    def other_regions(self, region: str) -> tuple[str, ...]:
        return tuple(name for name in self.region_names if name != region)

    def stage_name(self, region: str) -> str:
        return f"{self.prefix}-{region}"

    def table_name(self, service: str) -> str:
        """A service's global table: the same name in every region, so each region finds its replica by name."""
        return f"{self.prefix}-{service}"

    def fault_injection_role_names(self, region: str) -> tuple[str, str] | None:
        """(SSM managed-instance role of the chaos service's tasks, FIS network-faults experiment role),
        named so the stage's permissions boundary can let exactly them pass to SSM and read tags.
        None without network-fault experiments."""
        if self.chaos is None or not self.chaos.task_network_faults:
            return None
        return fault_injection_role_names(self.prefix, region, self.chaos.service)

    @property
    def stop_task_count(self) -> int:
        """How many tasks the stop-tasks experiment stops (FIS COUNT(n)): stop_percent of the chaos service's minimum,
        rounded down, and at least one. FIS's PERCENT(n) would round down to none at small counts (30 % of 1, 2 or 3
        tasks), and a target that resolves to nothing fails the experiment. With stop_percent at most 99 that leaves
        a task serving whenever the minimum is 2 or more; at a minimum of 1 (dev's default) it is the only task."""
        assert self.chaos is not None, "only with chaos configured"
        service = next(service for service in self.services if service.name == self.chaos.service)
        return max(1, min_task_count(service, self.profile) * self.chaos.stop_percent // 100)

    @property
    def region_failover_role_name(self) -> str:
        """The role of the edge's region-failover function, named so the edge's permissions boundary can let
        exactly it set keys in a KeyValueStore (whose ARN the boundary cannot know: the edge stack creates it)."""
        return f"{self.prefix}-region-failover"

    def signing_secret_name(self, service: str) -> str:
        """The signer's secret: the same name in every region (primary and replicas)."""
        return f"{self.prefix}/{service}/jwt-signing-key"


def _show(value: Any) -> str:
    """Render a bad value compactly on one line."""
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, value, "expected a string")
    return value


def _one_of(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    def parse(key: str, value: Any) -> str:
        # Whatever the type, the useful answer is the list of choices (not "expected a string").
        if not isinstance(value, str) or value not in choices:
            raise ConfigError(key, value, f"allowed values are {', '.join(choices)}")
        return value

    return parse


def _parse_prefix(key: str, value: Any) -> str:
    if not _PREFIX_PATTERN.match(_string(key, value)):
        raise ConfigError(
            key, value, "expected 1-10 lower-case letters, digits or hyphens, starting with a letter"
        )
    return value


def _parse_namespace(key: str, value: Any) -> str:
    if not _NAMESPACE_PATTERN.match(_string(key, value)):
        raise ConfigError(key, value, "expected a lower-case DNS domain name such as svc.local")
    return value


def _parse_account(key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _ACCOUNT_PATTERN.match(value):
        raise ConfigError(key, value, "expected an AWS account ID of exactly 12 digits, as a string")
    return value


def _parse_cidr(key: str, value: Any) -> ipaddress.IPv4Network:
    try:
        network = ipaddress.IPv4Network(_string(key, value), strict=True)
    except ValueError:
        raise ConfigError(key, value, "expected an IPv4 network in CIDR notation, e.g. 10.10.0.0/16") from None
    if not any(network.subnet_of(private) for private in _PRIVATE_NETWORKS):
        raise ConfigError(key, value, "expected a private (RFC 1918) range: 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16")
    if not VPC_PREFIX_MIN <= network.prefixlen <= VPC_PREFIX_MAX:
        raise ConfigError(
            key, value,
            f"prefix must be /{VPC_PREFIX_MIN} to /{VPC_PREFIX_MAX} to fit 3 subnet tiers in {AZ_COUNT} AZs",
        )
    return network


def _parse_regions(key: str, value: Any) -> tuple[RegionConfig, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(key, value, 'expected a non-empty list of {"name": ..., "cidr": ...} objects')
    regions: list[RegionConfig] = []
    networks: list[tuple[str, ipaddress.IPv4Network]] = []
    for index, entry in enumerate(value):
        item_key = f"{key}[{index}]"
        if not isinstance(entry, dict) or set(entry) != {"name", "cidr"}:
            raise ConfigError(item_key, entry, 'expected an object with exactly the keys "name" and "cidr"')
        name = _string(f"{item_key}.name", entry["name"])
        if name not in KNOWN_REGIONS:
            raise ConfigError(f"{item_key}.name", name, f"expected one of the AWS regions {', '.join(KNOWN_REGIONS)}")
        if name in (r.name for r in regions):
            raise ConfigError(f"{item_key}.name", name, "each region may appear only once")
        network = _parse_cidr(f"{item_key}.cidr", entry["cidr"])
        for other_name, other in networks:
            if network.overlaps(other):
                raise ConfigError(
                    f"{item_key}.cidr", entry["cidr"], f"must not overlap {other} of {other_name}"
                )
        networks.append((name, network))
        regions.append(RegionConfig(name=name, cidr=str(network)))
    return tuple(regions)


def _integer(low: int, high: int) -> Callable[[str, Any], int]:
    def parse(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(key, value, f"expected an integer from {low} to {high}")
        return value

    return parse


def _number(low: float, high: float) -> Callable[[str, Any], float]:
    def parse(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ConfigError(key, value, f"expected a number from {low} to {high}")
        return float(value)

    return parse


def _optional(parse: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda key, value: None if value is None else parse(key, value)


def _object(key: str, value: Any, fields: Mapping[str, tuple[Any, Callable[[str, Any], Any]]]) -> dict[str, Any]:
    """Parse a JSON object whose keys are all in ``fields`` (name -> (default, parser))."""
    if not isinstance(value, dict):
        raise ConfigError(key, value, f"expected an object with keys {', '.join(fields)}")
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", value[unknown[0]], f"unknown key; known keys are {', '.join(fields)}")
    return {name: parse(f"{key}.{name}", value.get(name, default)) for name, (default, parse) in fields.items()}


# Each environment name is published as the SSM parameter /<prefix>/<service>/config/<NAME>, whose name (with its ARN
# prefix) SSM caps at 1011 characters and whose description, which repeats it, at 1024: 128 stays well clear of both.
MAX_ENV_NAME_LENGTH = 128


def _string_map(pattern: re.Pattern[str], what: str) -> Callable[[str, Any], tuple[tuple[str, str], ...]]:
    def parse(key: str, value: Any) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, dict):
            raise ConfigError(key, value, "expected an object of environment variable name -> string")
        for name, item in value.items():
            if not _ENV_NAME_PATTERN.match(name) or len(name) > MAX_ENV_NAME_LENGTH:
                raise ConfigError(f"{key}.{name}", item, f"the name must be an upper-case environment variable name of at most {MAX_ENV_NAME_LENGTH} characters")
            if not isinstance(item, str) or not pattern.match(item):
                raise ConfigError(f"{key}.{name}", item, what)
        return tuple(sorted(value.items()))

    return parse


# Fargate task sizes: CPU units -> allowed memory in MiB.
FARGATE_MEMORY_BY_CPU = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4097, 1024)),
    1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)),
    4096: tuple(range(8192, 30721, 1024)),
}
_SERVICE_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
# <name>-sc and <name>-grpc-sc are Service Connect's Cloud Map entries and <name>-canary the App Mesh
# canary service.
_RESERVED_SUFFIXES = ("-sc", "-grpc", "-canary")
# The platform's KMS key aliases, alias/<prefix>/<name> (FoundationConfig.platform_key_alias), beside the services'
# keys, alias/<prefix>/<service> (data stack): a service of one of these names would claim a platform key's alias.
PLATFORM_KEY_ALIASES = ("logs", "ecr", "pipeline-logs", "edge-logs")
_ENV_NAME_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]*$")
_SECRET_REFERENCE = re.compile(r"^(secretsmanager:[A-Za-z0-9/_+=.@-]+|ssm:/[A-Za-z0-9/_.-]+)$")
# Each non-empty environment value becomes an SSM Standard parameter: at most 4096 characters, and no {{ }} (SSM
# refuses a value that nests a parameter; CloudFormation would resolve {{resolve:...}} instead of storing it).
SSM_STANDARD_MAX_VALUE = 4096
_ENV_VALUE = re.compile(r"^(?!.*\{\{).{0,%d}\Z" % SSM_STANDARD_MAX_VALUE, re.DOTALL)
_IMAGE_PATTERN = re.compile(r"^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+(:[A-Za-z0-9._-]+|@sha256:[0-9a-f]{64})$")
# A load balancer target group's HealthCheckPath is at most 1024 characters.
_PATH_PATTERN = re.compile(r"^/[A-Za-z0-9/_.-]{0,1023}$")
# The edge sends /api/* to the load balancers uncached; each service owns one segment below it.
_EDGE_PATH_PATTERN = re.compile(r"^/api/[a-z0-9][a-z0-9-]{0,30}$")
_TAG_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


# What a service's task role may do on its own table: item-level only (constructs/service_resources TABLE_ACTIONS).
TABLE_ITEM_ACTIONS = ("BatchGetItem", "BatchWriteItem", "DeleteItem", "GetItem", "PutItem", "Query", "UpdateItem")


def _parse_table_actions(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or len(set(value)) != len(value) or not set(value) <= set(TABLE_ITEM_ACTIONS):
        raise ConfigError(key, value, f"expected a non-empty list of distinct DynamoDB item actions: {', '.join(TABLE_ITEM_ACTIONS)}")
    return tuple(sorted(value))


# DynamoDB's rules for index names; 20 is its default quota of global secondary indexes per table.
_INDEX_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
MAX_TABLE_INDEXES = 20
# The table's TTL attribute holds a number: declared a string index key, every write that sets it would fail.
_NOT_INDEX_KEYS = ("expires_at",)
# The DynamoDB attribute types an index's sort key may have (the partition key is a string).
INDEX_KEY_TYPES = {"string": "S", "number": "N"}


def _attribute_name(what: str) -> Callable[[str, Any], str]:
    def parse(key: str, value: Any) -> str:
        if not isinstance(value, str) or not 1 <= len(value.encode()) <= 255 or value in _NOT_INDEX_KEYS:
            raise ConfigError(key, value, f"expected the name of {what}, 1 to 255 bytes, not the table's TTL attribute expires_at")
        return value

    return parse


_index_key = _attribute_name("a string attribute")
_index_sort_key = _attribute_name("a string or number attribute (sort_key_type)")


def _index_key_type(key: str, value: Any) -> str:
    if value not in INDEX_KEY_TYPES:
        raise ConfigError(key, value, f"expected one of {', '.join(INDEX_KEY_TYPES)}: the type of the sort key's attribute")
    return value


def _parse_table_indexes(key: str, value: Any) -> tuple[TableIndexConfig, ...]:
    if not isinstance(value, dict) or len(value) > MAX_TABLE_INDEXES:
        raise ConfigError(key, value, f'expected an object of up to {MAX_TABLE_INDEXES} index name -> '
                                      '{"partition_key": ..., "sort_key": ..., "sort_key_type"?: "string" | "number"}, '
                                      'e.g. {"sweep": {"partition_key": "sweep_shard", "sort_key": "sweep_at"}}')
    indexes = []
    for name, entry in value.items():
        if not _INDEX_NAME_PATTERN.fullmatch(name):
            raise ConfigError(key, name, "the index name must be 3-255 letters, digits, underscores, dots or hyphens")
        fields = _object(f"{key}.{name}", entry, {"partition_key": (None, _index_key), "sort_key": (None, _index_sort_key),
                                                  "sort_key_type": ("string", _index_key_type)})
        if fields["partition_key"] == fields["sort_key"]:
            raise ConfigError(f"{key}.{name}.sort_key", fields["sort_key"], "must differ from partition_key")
        indexes.append(TableIndexConfig(name=name, **fields))
    # One attribute has one type in the table's attribute definitions (its own keys pk and sk are strings).
    types = {"pk": "string", "sk": "string"}
    for index in indexes:
        for attribute, kind, field in ((index.partition_key, "string", "partition_key"), (index.sort_key, index.sort_key_type, "sort_key")):
            if types.setdefault(attribute, kind) != kind:
                raise ConfigError(f"{key}.{index.name}.{field}", attribute,
                                  f"is a {types[attribute]} key elsewhere on the table; one attribute has one type")
    return tuple(sorted(indexes, key=lambda index: index.name))


def _boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, value, "expected true or false")
    return value


_MODULE_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# EventBridge detail-types: up to 128 characters; these are the names in services/contracts/events.
_DETAIL_TYPE_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,127}$")
# Ports a task's other containers already listen on: the ADOT collector (4317, 4318 and its health check's 13133,
# constructs/meshed_service/adot-collector.yaml), Envoy (9901, 15000, 15001) and the Service Connect proxy behind a
# load balancer (15443). Whichever container binds second fails, and the task never becomes healthy.
SIDECAR_PORTS = (4317, 4318, 9901, 13133, 15000, 15001, 15443)
# The app's and worker's variable that holds the hash of the service's SSM settings (ServiceConfigParameters.digest).
CONFIG_DIGEST = "CONFIG_DIGEST"
# What the services stack sets in every task's environment itself (services_stack._environment,
# constructs/service_resources and the ADOT collector's exporter settings, constructs/meshed_service/adot.py):
# a value of the same name in `environment` would be overwritten.
GENERATED_ENVIRONMENT = frozenset({
    "SERVICE_NAME", "PORT", "OTEL_EXPORTER_OTLP_ENDPOINT", "PUBLIC_PATH", "TRUSTED_PROXY_HOPS", "GRPC_PORT", "TABLE_NAME", "EVENT_BUS_NAME",
    "EVENT_SOURCE", "QUEUE_URL", "JWT_SIGNING_SECRET_ID", "JWT_ISSUER", "JWT_AUDIENCE",
    "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", CONFIG_DIGEST,
    "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION", "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
})


# How long a task has to finish after SIGTERM (every container's stop timeout); ECS SIGKILLs it then. The load
# balancer drains a leaving task as long first (services_stack.py), so a request begun before deregistration completes.
STOP_TIMEOUT_SECONDS = 30
# servicekit's defaults (services/common/servicekit/settings.py; tests/test_config.py checks they are the same): on
# SIGTERM a service turns not-ready and keeps serving for DRAIN_SECONDS while the load balancer takes it out, then
# gives in-flight requests SHUTDOWN_TIMEOUT_SECONDS; a worker gives the message in hand SHUTDOWN_TIMEOUT_SECONDS.
SERVICEKIT_DRAIN_SECONDS = 5.0
SERVICEKIT_SHUTDOWN_TIMEOUT_SECONDS = 20.0
# What a task still does after both, before the SIGKILL: close its clients, hand a cut-off message back to its
# queue (one SQS call), flush its spans and metrics to the collector beside it, exit. Each takes well under a
# second; 3 s leaves room for a busy task, and the defaults (5 + 20) stay within it with 2 s to spare.
STOP_MARGIN_SECONDS = 3


def _check_stop_timings(key: str, environment: dict[str, str]) -> None:
    """DRAIN_SECONDS + SHUTDOWN_TIMEOUT_SECONDS (servicekit's default for one not set) must end
    STOP_MARGIN_SECONDS before ECS's SIGKILL; ``key`` is the service's environment key."""
    seconds = {"DRAIN_SECONDS": SERVICEKIT_DRAIN_SECONDS, "SHUTDOWN_TIMEOUT_SECONDS": SERVICEKIT_SHUTDOWN_TIMEOUT_SECONDS}
    for name in seconds:
        if name in environment:
            try:
                value = float(environment[name])
            except ValueError:
                value = math.nan
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{key}.{name}", environment[name], "expected a number of seconds, 0 or more")
            seconds[name] = value
    limit = STOP_TIMEOUT_SECONDS - STOP_MARGIN_SECONDS
    total = sum(seconds.values())
    if total > limit:
        name = "SHUTDOWN_TIMEOUT_SECONDS" if "SHUTDOWN_TIMEOUT_SECONDS" in environment else "DRAIN_SECONDS"
        other = next(n for n in seconds if n != name)
        where = "" if other in environment else " (servicekit's default)"
        raise ConfigError(f"{key}.{name}", environment[name],
                          f"with {other}={seconds[other]:g}{where} a stopping task takes {total:g} s; DRAIN_SECONDS + "
                          f"SHUTDOWN_TIMEOUT_SECONDS must be at most {limit} s, {STOP_MARGIN_SECONDS} s under the "
                          f"{STOP_TIMEOUT_SECONDS} s stop timeout after which ECS kills the task")


def env_prefix(service_name: str) -> str:
    """'vc-start' -> 'VC_START': how a service's name starts the variables that point at it
    (<CALLEE>_URL, <CALLEE>_GRPC_TARGET in its callers' environment)."""
    return service_name.upper().replace("-", "_")


def _parse_consumes(key: str, value: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """producer service -> detail-types; the producers are checked against the services below."""
    allowed = 'expected an object of producer service -> non-empty list of event detail-types, e.g. {"persona": ["SlotConfirmed"]}'
    if not isinstance(value, dict):
        raise ConfigError(key, value, allowed)
    for producer, detail_types in value.items():
        if (not isinstance(detail_types, list) or not detail_types or len(set(map(str, detail_types))) != len(detail_types)
                or not all(isinstance(t, str) and _DETAIL_TYPE_PATTERN.match(t) for t in detail_types)):
            raise ConfigError(f"{key}.{producer}", detail_types, "expected a non-empty list of distinct event detail-types "
                              "(a letter, then up to 127 letters, digits, dots, hyphens or underscores)")
    return tuple(sorted((producer, tuple(detail_types)) for producer, detail_types in value.items()))


def _parse_health_check_command(key: str, value: Any) -> tuple[str, ...]:
    if (not isinstance(value, list) or len(value) < 2 or value[0] not in ("CMD", "CMD-SHELL")
            or not all(isinstance(part, str) for part in value)):
        raise ConfigError(key, value, 'expected a list of strings starting with "CMD" or "CMD-SHELL", e.g. ["CMD", "/bin/healthcheck"]')
    return tuple(value)


def _pattern(pattern: re.Pattern[str], allowed: str) -> Callable[[str, Any], str]:
    def parse(key: str, value: Any) -> str:
        if not pattern.match(_string(key, value)):
            raise ConfigError(key, value, allowed)
        return value

    return parse


_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}(:[A-Za-z0-9_$-]{1,128})?$")
_FUNCTION_ARN = re.compile(r"^arn:aws[a-z-]*:lambda:([a-z0-9-]+):([0-9]{12}):function:[A-Za-z0-9_-]{1,64}(:[A-Za-z0-9_$-]{1,128})?$")
# Target group names are at most 32 characters: <prefix>-<service>-legacy must fit.
LEGACY_TARGET_GROUP_SUFFIX = "-legacy"


def legacy_target_group_name(prefix: str, service: str) -> str:
    return f"{prefix}-{service}{LEGACY_TARGET_GROUP_SUFFIX}"


def _parse_function_arns(key: str, value: Any) -> tuple[tuple[str, str], ...]:
    """region -> Lambda function ARN in that region; the regions are checked against config regions later."""
    if not isinstance(value, dict) or not value:
        raise ConfigError(key, value, "expected an object of region -> Lambda function ARN, one per configured region")
    for region, arn in value.items():
        match = _FUNCTION_ARN.match(arn) if isinstance(arn, str) else None
        if not match:
            raise ConfigError(f"{key}.{region}", arn, "expected a Lambda function ARN (arn:aws:lambda:<region>:<account>:function:<name>[:<alias>])")
        if match.group(1) != region:
            raise ConfigError(f"{key}.{region}", arn, f"the function must be in {region}: a load balancer invokes only functions of its own region")
    return tuple(sorted(value.items()))


def _parse_legacy(key: str, value: Any) -> LegacyConfig:
    fields = _object(key, value, {
        "function_name": (None, _optional(_pattern(_FUNCTION_NAME, "expected a Lambda function name, optionally with :<alias>"))),
        "function_arns": (None, _optional(_parse_function_arns)),
        "initial_percent_to_service": (0, _integer(0, 100)),
    })
    if (fields["function_name"] is None) == (fields["function_arns"] is None):
        raise ConfigError(key, value, "set exactly one of function_name (the same name in every region) or function_arns (region -> ARN)")
    return LegacyConfig(**{**fields, "function_arns": fields["function_arns"] or ()})


# The smallest Fargate task size above Envoy's 256 and the collector's 64 CPU units (mesh=appmesh).
APPMESH_MIN_TASK_CPU = 512

_SERVICE_FIELDS: dict[str, tuple[Any, Callable[[str, Any], Any]]] = {
    "port": (8080, _integer(1024, 65535)),
    "cpu": (512, _integer(256, 4096)),
    "memory_mib": (1024, _integer(512, 30720)),
    "health_check_path": ("/health/ready", _pattern(_PATH_PATTERN, "expected a URL path of at most 1024 characters such as /health/ready")),
    "calls": ([], lambda key, value: value),  # checked against the other services below
    "min_tasks": (None, _optional(_integer(1, 100))),
    "max_tasks": (None, _optional(_integer(1, 500))),
    "image": (None, _optional(_pattern(_IMAGE_PATTERN, "expected a registry image with a tag or digest, e.g. registry.example.com/team/app:1.2.3"))),
    "image_tag": (None, _optional(_pattern(_TAG_PATTERN, "expected an image tag of the service's ECR repository, e.g. 1.4.2"))),
    "canary_image_tag": (None, _optional(_pattern(_TAG_PATTERN, "expected an image tag of the service's ECR repository, e.g. 1.5.0-rc1"))),
    "liveness_path": ("/health/live", _pattern(_PATH_PATTERN, "expected a URL path of at most 1024 characters such as /health/live")),
    "health_check_command": (None, _optional(_parse_health_check_command)),
    "user": ("10001:10001", _pattern(re.compile(r"^(?!0(:|$))(?!root(:|$))[0-9]{1,10}(:[0-9]{1,10})?$"), "expected a non-root numeric uid[:gid] such as 10001:10001")),
    "environment": ({}, _string_map(_ENV_VALUE, f"expected a string of at most {SSM_STANDARD_MAX_VALUE} characters without {{{{ "
                                                  "(an SSM Standard parameter's value)")),
    "secrets": ({}, _string_map(_SECRET_REFERENCE, "expected secretsmanager:<secret name> or ssm:/<parameter name>")),
    "path": (None, _optional(_pattern(_EDGE_PATH_PATTERN, "expected a path under /api/ such as /api/auth (lower-case letters, digits, hyphens; no trailing slash)"))),
    "table": (False, _boolean),
    "table_actions": (None, _optional(_parse_table_actions)),
    "table_indexes": ({}, _parse_table_indexes),
    "grpc_port": (None, _optional(_integer(1024, 65535))),
    "worker": (False, _boolean),
    "module": (None, _optional(_pattern(_MODULE_PATTERN, "expected a Python module name such as persona_service"))),
    "consumes": ({}, _parse_consumes),
    "signing_key": (False, _boolean),
    "legacy": (None, _optional(_parse_legacy)),
    "priority": (None, _optional(_integer(1, 50000))),
}


def default_rule_priority(name: str) -> int:
    """A routed service's load balancer rule priority when its config sets none: from its name alone, so adding,
    removing or reordering services moves no other rule. 1000 and up stays clear of hand-picked numbers and of the
    10, 20, ... that earlier versions gave by position (a rule deployed that way then moves to a free number)."""
    return 1000 + zlib.crc32(name.encode()) % 49001


def _parse_services(key: str, value: Any) -> tuple[ServiceConfig, ...]:
    if not isinstance(value, dict) or not value:
        raise ConfigError(key, value, "expected a non-empty object of service name -> service settings")
    services = []
    for name, entry in value.items():
        item_key = f"{key}.{name}"
        if not _SERVICE_NAME_PATTERN.match(name) or name.endswith(_RESERVED_SUFFIXES):
            raise ConfigError(item_key, entry, "the service name must be 1-20 lower-case letters, digits or hyphens, "
                                               f"not ending in {', '.join(_RESERVED_SUFFIXES)} (names the mesh derives)")
        if name in PLATFORM_KEY_ALIASES:
            raise ConfigError(item_key, entry, f"the service name must not be {', '.join(PLATFORM_KEY_ALIASES)}: the service's "
                                               f"KMS key would take the alias <prefix>/{name}, which a platform key has")
        fields = _object(item_key, entry, _SERVICE_FIELDS)
        if fields["memory_mib"] not in FARGATE_MEMORY_BY_CPU.get(fields["cpu"], ()):
            raise ConfigError(
                f"{item_key}.memory_mib", fields["memory_mib"],
                f"Fargate allows {', '.join(map(str, FARGATE_MEMORY_BY_CPU.get(fields['cpu'], ())))} MiB"
                f" with cpu {fields['cpu']} (cpu must be 256, 512, 1024, 2048 or 4096)",
            )
        calls = fields["calls"]
        if not isinstance(calls, list) or any(c not in value or c == name for c in calls) or len(set(calls)) != len(calls):
            raise ConfigError(f"{item_key}.calls", calls, f"expected a list of other services: {', '.join(n for n in value if n != name)}")
        generated = GENERATED_ENVIRONMENT | {f"{env_prefix(callee)}_{suffix}" for callee in calls for suffix in ("URL", "GRPC_TARGET")}
        clash = sorted(set(dict(fields["environment"])) & generated)
        if clash:
            raise ConfigError(f"{item_key}.environment.{clash[0]}", dict(fields["environment"])[clash[0]],
                              "the stack sets this variable itself; choose another name")
        _check_stop_timings(f"{item_key}.environment", dict(fields["environment"]))
        # ECS refuses a task definition whose secret shares a name with an environment variable, and a secret would
        # silently replace a setting the stack reads from SSM (TABLE_NAME): a secret's name must be new.
        clash = sorted(set(dict(fields["secrets"])) & (generated | {"LOG_LEVEL"} | set(dict(fields["environment"]))))
        if clash:
            raise ConfigError(f"{item_key}.secrets.{clash[0]}", dict(fields["secrets"])[clash[0]],
                              "the stack or environment already sets this variable; choose another name")
        if fields["canary_image_tag"] and fields["image"]:
            raise ConfigError(f"{item_key}.canary_image_tag", fields["canary_image_tag"], "needs the service's ECR repository; remove image or use image_tag")
        if fields["image"] and fields["image_tag"]:
            raise ConfigError(f"{item_key}.image_tag", fields["image_tag"], "set either image or image_tag, not both")
        if fields["min_tasks"] and fields["max_tasks"] and fields["min_tasks"] > fields["max_tasks"]:
            raise ConfigError(f"{item_key}.min_tasks", fields["min_tasks"], f"must not exceed max_tasks={fields['max_tasks']}")
        taken = next((other.name for other in services if fields["path"] and other.path == fields["path"]), None)
        if taken:
            raise ConfigError(f"{item_key}.path", fields["path"], f"already routes to {taken}; give each service its own path")
        _check_events_and_ports(item_key, name, fields, value)
        signer = next((other.name for other in services if other.signing_key), None)
        if fields["signing_key"] and signer:
            raise ConfigError(f"{item_key}.signing_key", True, f"only one service signs tokens, and {signer} already does")
        if fields["priority"] and not fields["path"]:
            raise ConfigError(f"{item_key}.priority", fields["priority"], "needs the service's path: it is the priority of the path's load balancer rule")
        priority = fields["priority"] or (default_rule_priority(name) if fields["path"] else None)
        taken = next((other.name for other in services if priority and other.priority == priority), None)
        if taken:
            derived = "" if fields["priority"] else " (derived from the name)"
            raise ConfigError(f"{item_key}.priority", priority, f"{taken}'s load balancer rule already has this priority{derived}; "
                                                               "set a priority 1-50000 that no other service has")
        if fields["legacy"] and not fields["path"]:
            raise ConfigError(f"{item_key}.legacy", entry["legacy"], "needs the service's path: the legacy function shares the path's load balancer rule")
        module = fields["module"] or name.replace("-", "_")
        if fields["table_actions"] and not fields["table"]:
            raise ConfigError(f"{item_key}.table_actions", list(fields["table_actions"]), "needs table: true (the actions are on the service's table)")
        if fields["table_indexes"] and not fields["table"]:
            raise ConfigError(f"{item_key}.table_indexes", entry["table_indexes"],
                              "needs table: true (the indexes are on the service's table)")
        # Unset: every item action; set it to what the service's code calls (tests/test_service_aws_calls.py checks).
        table_actions = (fields["table_actions"] or TABLE_ITEM_ACTIONS) if fields["table"] else ()
        services.append(ServiceConfig(name=name, **{**fields, "calls": tuple(calls), "module": module, "table_actions": table_actions,
                                                    "priority": priority}))
    return tuple(services)


SERVICES_DIR = EVENT_CONTRACTS_DIR.parent.parent  # services/<name>/Dockerfile: an image built as a CDK asset


# Each region's services stack holds every service, and CloudFormation takes at most 500 resources and 1,000,000
# bytes per template. Measured (prod, two regions, each service with path, table, grpc_port and a call, chaos on):
# Service Connect 10 services 916 KB / 385 resources (about 92 KB each; 13 go over 1 MB), App Mesh 5 services 736 KB /
# 276 resources (a canary service and a traffic-shift state machine each; 7 are 903 KB). The caps stop a config
# early, before CDK's own 500-resource error (a traceback); nine services that each have every feature (a legacy
# function too) still come to about 1.02 MB, which app.py's check of the synthesized templates reports.
MAX_SERVICES = {"service-connect": 9, "appmesh": 5}


def _check_service_count(values: dict[str, Any]) -> None:
    limit = MAX_SERVICES[values["mesh"]]
    if len(values["services"]) > limit:
        raise ConfigError("services", [service.name for service in values["services"]],
                          f"with mesh={values['mesh']} at most {limit} services fit one services stack "
                          f"(CloudFormation: 500 resources, 1 MB per template)")


def _check_images(values: dict[str, Any]) -> None:
    """A service without image or image_tag is built from services/<name>/Dockerfile: it must exist (checked last,
    so that the config's own mistakes are reported first)."""
    for service in values["services"]:
        if not service.image and not service.image_tag and not (SERVICES_DIR / service.name / "Dockerfile").exists():
            raise ConfigError(f"services.{service.name}.image", None, f"no image: add services/{service.name}/Dockerfile, "
                                                                        "or set image_tag (the region's ECR repository) or image")


def _check_events_and_ports(item_key: str, name: str, fields: dict[str, Any], services: dict[str, Any]) -> None:
    if fields["port"] in SIDECAR_PORTS:
        # In every profile: 15443 is taken only behind a load balancer with mesh TLS (prod by default), and dev should fail alike.
        raise ConfigError(f"{item_key}.port", fields["port"], f"must differ from the sidecars' ports {', '.join(map(str, SIDECAR_PORTS))}")
    grpc_port = fields["grpc_port"]
    if grpc_port is not None and (grpc_port == fields["port"] or grpc_port in SIDECAR_PORTS):
        raise ConfigError(f"{item_key}.grpc_port", grpc_port, f"must differ from port={fields['port']} and from the "
                          f"sidecars' ports {', '.join(map(str, SIDECAR_PORTS))}")
    for producer, _ in fields["consumes"]:
        if producer == name or producer not in services:
            raise ConfigError(f"{item_key}.consumes.{producer}", dict(fields["consumes"])[producer],
                              f"{producer} is not another configured service: expected one of "
                              f"{', '.join(n for n in services if n != name)}")
    if fields["consumes"] and not fields["worker"]:
        raise ConfigError(f"{item_key}.worker", fields["worker"],
                          "must be true when consumes is set: the worker is what reads the service's event queue")
    if fields["consumes"] and not fields["table"]:
        raise ConfigError(f"{item_key}.table", fields["table"],
                          "must be true when consumes is set: the worker records processed event IDs in the service's table")
    if fields["worker"] and not fields["consumes"]:
        raise ConfigError(f"{item_key}.worker", True,
                          "needs consumes: the worker reads the service's event queue, which exists only for a consumer")
    for producer, detail_types in fields["consumes"]:
        for detail_type in detail_types:
            contract = EVENT_CONTRACTS_DIR / f"{detail_type}.schema.json"
            if not contract.exists():
                raise ConfigError(f"{item_key}.consumes.{producer}", detail_type,
                                  f"an event with a contract in services/contracts/events/ (add {contract.name})")


def _parse_mesh_options(key: str, value: Any) -> MeshOptionsConfig:
    return MeshOptionsConfig(**_object(key, value, {
        "per_request_timeout_seconds": (15, _integer(1, 3600)),
        "idle_timeout_seconds": (300, _integer(1, 3600)),
        "tls": ("auto", _one_of(("auto", "on", "off"))),
        "private_ca_arns": ({}, _parse_ca_arns),
    }))


_CA_ARN = re.compile(r"^arn:aws[a-z-]*:acm-pca:([a-z0-9-]+):[0-9]{12}:certificate-authority/[0-9a-f-]{36}$")


def _parse_ca_arns(key: str, value: Any) -> tuple[tuple[str, str], ...]:
    """region -> CA ARN; a CA serves only its own region."""
    if not isinstance(value, dict):
        raise ConfigError(key, value, "expected an object of region -> AWS Private CA ARN")
    for region, arn in value.items():
        match = _CA_ARN.match(arn) if isinstance(arn, str) else None
        if not match:
            raise ConfigError(f"{key}.{region}", arn, "expected an AWS Private CA ARN (arn:aws:acm-pca:<region>:<account>:certificate-authority/<id>)")
        if match.group(1) != region:
            raise ConfigError(f"{key}.{region}", arn, f"the CA must be in {region}: a CA serves only its own region")
    return tuple(sorted(value.items()))


# CloudFormation rejects a CANARY or LINEAR deployment whose calculated time exceeds 33 hours (AWS::ECS::Service
# CanaryConfiguration / LinearConfiguration): bake + step bake x steps, a canary's steps being 1.
MAX_DEPLOYMENT_MINUTES = 33 * 60


def deployment_steps(deployment: DeploymentConfig) -> int:
    """The step bakes of a deployment as CloudFormation counts them: LINEAR 100/p - 1 if p divides 100, else floor(100/p)."""
    if deployment.strategy == "CANARY":
        return 1
    if deployment.strategy == "LINEAR":
        steps = 100 / deployment.linear_step_percent
        return int(steps) - 1 if steps.is_integer() else int(steps)
    return 0


def _parse_deployment(key: str, value: Any) -> DeploymentConfig:
    deployment = DeploymentConfig(**_object(key, value, {
        "strategy": ("CANARY", _one_of(("CANARY", "LINEAR", "ROLLING"))),
        "canary_percent": (5, _number(0.1, 50)),
        "linear_step_percent": (20, _number(3, 50)),
        "step_bake_minutes": (10, _integer(0, 1440)),
        "bake_time_minutes": (10, _integer(0, 1440)),
        "alarm_5xx_percent": (1, _number(0.1, 100)),
        "alarm_p95_latency_ms": (1000, _integer(10, 60000)),
    }))
    return deployment


def _check_deployment_length(deployment: DeploymentConfig) -> None:
    """Service Connect's ECS deployments only (App Mesh's services roll out with ROLLING and the traffic shift)."""
    steps = deployment_steps(deployment)
    minutes = deployment.bake_time_minutes + deployment.step_bake_minutes * steps if steps else 0
    if minutes > MAX_DEPLOYMENT_MINUTES:
        raise ConfigError("deployment.step_bake_minutes", deployment.step_bake_minutes,
                          f"a {deployment.strategy} deployment lasts at most {MAX_DEPLOYMENT_MINUTES} minutes (CloudFormation's 33 hours): "
                          f"bake_time_minutes + step_bake_minutes x {steps} steps = {minutes}")


# The traffic shift's bake over all steps (traffic_shift.MAX_TOTAL_BAKE_MINUTES): a minute's check costs about 13
# execution history events, and a Step Functions standard execution keeps at most 25,000.
APPMESH_MAX_TOTAL_BAKE_MINUTES = 24 * 60


def _parse_appmesh(key: str, value: Any) -> AppMeshConfig:
    config = AppMeshConfig(**_object(key, value, {
        "canary_weight_percent": (5, _integer(1, 5)),
        "max_retries": (2, _integer(0, 10)),
        "per_retry_timeout_ms": (2000, _integer(100, 60000)),
        "shift_steps_percent": ([5, 25, 50, 100], _parse_shift_steps),
        # The alarms read between steps trip on 2 of 3 one-minute datapoints: a shorter bake could pass first.
        "shift_bake_minutes": (10, _integer(3, 1440)),
        # The alarms pass a canary without metrics (missing data is OK): a bake at 100 % must count this many requests
        # (or gRPC calls), a step at p % its p % share (traffic_shift.required_canary_requests).
        "shift_min_canary_requests": (60, _integer(1, 1_000_000)),
    }))
    return config


def _check_shift_length(config: AppMeshConfig) -> None:
    """App Mesh only: the settings are parsed, and unused, with Service Connect."""
    steps = len(config.shift_steps_percent)
    if config.shift_bake_minutes * steps > APPMESH_MAX_TOTAL_BAKE_MINUTES:
        raise ConfigError("appmesh.shift_bake_minutes", config.shift_bake_minutes,
                          f"with {steps} shift steps at most {APPMESH_MAX_TOTAL_BAKE_MINUTES // steps}: "
                          f"a traffic shift bakes at most {APPMESH_MAX_TOTAL_BAKE_MINUTES} minutes in all")


MAX_SHIFT_STEPS = 10


def _parse_shift_steps(key: str, value: Any) -> tuple[int, ...]:
    if (not isinstance(value, list) or not 1 <= len(value) <= MAX_SHIFT_STEPS
            or any(isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= 100 for step in value)
            or value != sorted(set(value)) or value[-1] != 100):
        raise ConfigError(key, value, f"expected 1 to {MAX_SHIFT_STEPS} strictly increasing integer percentages from 1 to 100, ending at 100")
    return tuple(value)


# CloudFront fails over to the secondary origin only on these answers (and on connection errors).
FAILOVER_STATUS_CODES = (400, 403, 404, 416, 500, 502, 503, 504)
PRICE_CLASSES = ("PriceClass_100", "PriceClass_200", "PriceClass_All")


def _parse_status_codes(key: str, value: Any) -> tuple[int, ...]:
    allowed = f"expected a non-empty list of distinct codes from {', '.join(map(str, FAILOVER_STATUS_CODES))}"
    if (not isinstance(value, list) or not value or len(set(map(str, value))) != len(value)
            or any(isinstance(code, bool) or code not in FAILOVER_STATUS_CODES for code in value)):
        raise ConfigError(key, value, allowed)
    return tuple(sorted(value))


def _parse_ingress(key: str, value: Any) -> IngressConfig:
    return IngressConfig(**_object(key, value, {
        "waf": ("auto", _one_of(("auto", "on", "off"))),
        # WAF's rate-based rules count per 5-minute window and accept limits from 10.
        "waf_rate_limit_per_5_minutes": (1000, _integer(10, 2_000_000_000)),
        "access_log_days": (90, _integer(1, 3650)),
        "failover_status_codes": ([500, 502, 503, 504], _parse_status_codes),
        "price_class": ("PriceClass_100", _one_of(PRICE_CLASSES)),
        "origin_generation": (1, _integer(1, 1_000_000)),
    }))


_ZONE_NAME_PATTERN = re.compile(r"^(?=.{1,200}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_HOSTED_ZONE_ID_PATTERN = re.compile(r"^Z[A-Z0-9]{1,31}$")
_LABEL_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _parse_domain(key: str, value: Any) -> DomainConfig | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not {"zone_name", "hosted_zone_id"} <= set(value):
        raise ConfigError(key, value, 'expected null or an object {"zone_name": "example.com", "hosted_zone_id": "Z0123456789ABC"}')
    return DomainConfig(**_object(key, value, {
        "zone_name": (None, _pattern(_ZONE_NAME_PATTERN, "expected a lower-case DNS zone name such as example.com")),
        "hosted_zone_id": (None, _pattern(_HOSTED_ZONE_ID_PATTERN, "expected a Route 53 hosted zone ID such as Z0123456789ABC")),
        "subdomain": ("api", _pattern(_LABEL_PATTERN, "expected one lower-case DNS label such as api")),
    }))


# ACM: a certificate's domain name (its Common Name) is at most 64 characters, periods included.
ACM_MAX_DOMAIN_NAME = 64


def _check_domain(values: dict[str, Any]) -> None:
    """The longest certificate name the app requests is a region's <region>.<subdomain>.<zone_name> (the edge's is shorter)."""
    domain = values["domain"]
    if domain is None:
        return
    longest = max((domain.regional_name(region.name) for region in values["regions"]), key=len)
    if len(longest) > ACM_MAX_DOMAIN_NAME:
        raise ConfigError("domain.zone_name", domain.zone_name, f"the certificate name {longest} is {len(longest)} characters; "
                                                                f"ACM allows {ACM_MAX_DOMAIN_NAME}: use a shorter zone_name or subdomain")


_DEFAULT_SERVICES = {
    "auth": {"calls": [], "path": "/api/auth", "priority": 10, "module": "auth_service", "table": True, "table_actions": ["GetItem", "PutItem", "UpdateItem"],
             "signing_key": True},
    "persona": {"calls": ["auth"], "path": "/api/persona", "priority": 20, "module": "persona_service", "table": True, "grpc_port": 50051,
                "table_actions": ["BatchGetItem", "DeleteItem", "GetItem", "PutItem", "Query", "UpdateItem"],
                "table_indexes": {"holds": {"partition_key": "persona_id", "sort_key": "hold_expires_at", "sort_key_type": "number"}},
                "worker": True, "consumes": {"vc-start": ["SessionStarted", "SessionCancelled"]}},
    "vc-start": {"calls": ["auth", "persona"], "path": "/api/vc", "priority": 30, "module": "vc_start", "table": True,
                 "table_actions": ["DeleteItem", "GetItem", "PutItem", "UpdateItem"], "worker": True,
                 "table_indexes": {"sweep": {"partition_key": "sweep_shard", "sort_key": "sweep_at"}},
                 "consumes": {"persona": ["SlotConfirmed", "SlotReleased"]}},
}


def _parse_events(key: str, value: Any) -> EventsConfig:
    return EventsConfig(**_object(key, value, {
        # SQS allows 1 to 1000 receives before a message moves to the dead-letter queue.
        # servicekit's consumer brings a failed message back after 10 s x its receive count (at most 60 s): 8
        # receives retry an event for some 4.5 minutes, so a compensation outlasts a short outage, and the first
        # retries of a SessionStarted land within persona's 120 s hold.
        "max_receive_count": (8, _integer(1, 1000)),
        # 0 would mean "forever" to EventBridge: an unbounded archive is a cost nobody chose.
        "archive_retention_days": (30, _integer(1, 3650)),
    }))

# Budgets allows 10 notifications per budget, each with one SNS and up to 10 e-mail subscribers;
# every threshold takes two (ACTUAL and FORECASTED). The alarm topics' list is kept at the same 10 (SNS has no such limit).
MAX_BUDGET_THRESHOLDS, MAX_NOTIFY_EMAILS = 5, 10
_EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _parse_monthly_limit(key: str, value: Any) -> tuple[tuple[str, float], ...]:
    """One limit for every profile, or one per profile."""
    limit = _number(1, 10_000_000)
    if isinstance(value, dict):
        if set(value) != set(PROFILES):
            raise ConfigError(key, value, f"expected a number of USD, or an object with exactly the keys {', '.join(PROFILES)}")
        return tuple((profile, limit(f"{key}.{profile}", value[profile])) for profile in PROFILES)
    amount = limit(key, value)
    return tuple((profile, amount) for profile in PROFILES)


def _parse_thresholds(key: str, value: Any) -> tuple[float, ...]:
    allowed = (f"expected a list of 1 to {MAX_BUDGET_THRESHOLDS} distinct percentages of the limit from 1 to 1000 "
               f"(each becomes an ACTUAL and a FORECASTED alert; a budget has at most 10)")
    if (not isinstance(value, list) or not 1 <= len(value) <= MAX_BUDGET_THRESHOLDS
            or any(isinstance(t, bool) or not isinstance(t, (int, float)) or not 1 <= t <= 1000 for t in value)
            or len(set(value)) != len(value)):
        raise ConfigError(key, value, allowed)
    return tuple(sorted(float(t) for t in value))


def _parse_emails(key: str, value: Any) -> tuple[str, ...]:
    if (not isinstance(value, list) or len(value) > MAX_NOTIFY_EMAILS or len(set(map(str, value))) != len(value)
            or not all(isinstance(e, str) and _EMAIL_PATTERN.match(e) for e in value)):
        raise ConfigError(key, value, f"expected a list of up to {MAX_NOTIFY_EMAILS} distinct e-mail addresses")
    return tuple(value)


def _parse_budget(key: str, value: Any) -> BudgetConfig:
    return BudgetConfig(**_object(key, value, {
        # Above each profile's at-rest estimate (`make cost`: dev about $515, prod about $1,680 a month) with
        # room to scale out, so that the alerts mean an unexpected cost rather than firing every month.
        "monthly_limit_usd": ({"dev": 600, "prod": 2500}, _parse_monthly_limit),
        "alert_thresholds_percent": ([50, 80, 100], _parse_thresholds),
        "notify_emails": ([], _parse_emails),
        "filter_by_project_tag": (True, _boolean),
    }))


# The edge's 5xx alarm looks at this many one-minute periods (CloudFront's metrics have one-minute resolution).
EDGE_5XX_ALARM_WINDOW_MINUTES = 5


def _parse_observability(key: str, value: Any) -> ObservabilityConfig:
    return ObservabilityConfig(**_object(key, value, {
        # 5 %: the services' own default (servicekit.tracing.DEFAULT_TRACES_SAMPLER_RATIO).
        "xray_sampling_rate": (0.05, _number(0, 1)),
        "xray_reservoir_per_second": (1, _integer(0, 1000)),
        "quota_alarm_percent": (80, _integer(1, 100)),
        # With the default max_receive_count, above the ~4.5 minutes a failing message is retried before it is
        # dead-lettered (8 receives, servicekit's backoff of 10 s per receive, at most 60 s, between them).
        "queue_age_alarm_minutes": (15, _integer(1, 1440)),
        # CloudFront's 5xxErrorRate (every viewer answer, /api/* included): 5 % in 3 of the last 5 minutes rides
        # out a single bad minute and still pages within minutes when a region's API is down.
        "edge_5xx_alarm_percent": (5, _number(0.1, 100)),
        "edge_5xx_alarm_minutes": (3, _integer(1, EDGE_5XX_ALARM_WINDOW_MINUTES)),
        # Any, in 3 of 5 minutes: an on-demand table throttles only at a hot key, the per-table quota or a jump past
        # twice its previous peak, and DynamoDB's 500s are its own trouble; the SDK's retries absorb one bad minute.
        # Raise them for a table whose traffic makes a few a minute normal.
        "table_throttle_alarm_requests": (0, _integer(0, 1_000_000)),
        "table_system_error_alarm_requests": (0, _integer(0, 1_000_000)),
        # None by default: who is on call is the deployer's to say (or subscribe paging tooling to the topics).
        "notify_emails": ([], _parse_emails),
    }))


def _parse_data(key: str, value: Any) -> DataConfig:
    return DataConfig(**_object(key, value, {
        # Secrets Manager rotates at most every 4 hours and at least every 1000 days; a signing key
        # older than a year is past what key-management guidance (NIST SP 800-57) allows.
        "signing_key_rotation_days": (30, _integer(1, 365)),
    }))


# GitHub: an owner of 1-39 letters, digits or inner hyphens; a repository name of letters, digits, ., _ or -.
_GITHUB_REPOSITORY_PATTERN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,37}[A-Za-z0-9])?/(?!\.\.?$)[A-Za-z0-9._-]{1,100}$")
# A branch name git accepts, without the characters an IAM condition or a shell would read specially
# (no wildcards *, ?, no spaces, no colons), no "..", "//", leading "-" or "/", or trailing "/", "." or ".lock".
_BRANCH_PATTERN = re.compile(r"^(?!.*\.\.)(?!.*//)(?!.*\.lock$)(?!.*[/.]$)[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}$")
_GITHUB_OIDC_PROVIDER_ARN = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/token\.actions\.githubusercontent\.com$")


def _parse_github(key: str, value: Any) -> GitHubConfig | None:
    if value is None:
        return None
    if not isinstance(value, dict) or "repository" not in value:
        raise ConfigError(key, value, 'expected null or an object {"repository": "owner/name", "branch": "main"}')
    return GitHubConfig(**_object(key, value, {
        "repository": (None, _pattern(_GITHUB_REPOSITORY_PATTERN, "expected a GitHub repository as owner/name, e.g. octo-org/foundation")),
        "branch": ("main", _pattern(_BRANCH_PATTERN, "expected a branch name such as main or release/2026 "
                                                     "(letters, digits, ., _, -, /; no wildcards, spaces or ..)")),
        "oidc_provider_arn": (None, _optional(_pattern(_GITHUB_OIDC_PROVIDER_ARN, "expected null or the ARN of the account's "
                                                       "GitHub OIDC provider (arn:aws:iam::<account>:oidc-provider/token.actions.githubusercontent.com)"))),
    }))


# codeconnections is the service's current name; connections made under its old name keep codestar-connections ARNs.
_CONNECTION_ARN = re.compile(
    r"^arn:aws[a-z-]*:(codeconnections|codestar-connections):([a-z0-9-]+):([0-9]{12}):connection/[0-9a-f-]{36}$")
_REPOSITORY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9_.-]+)+$")


def _parse_pipeline(key: str, value: Any) -> PipelineConfig | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not {"connection_arn", "repository"} <= set(value):
        raise ConfigError(key, value, 'expected null or an object {"connection_arn": "arn:aws:codeconnections:...", '
                                      '"repository": "owner/name", "branch": "main"}')
    return PipelineConfig(**_object(key, value, {
        "connection_arn": (None, _pattern(_CONNECTION_ARN, "expected a CodeConnections connection ARN "
                                          "(arn:aws:codeconnections:<region>:<account>:connection/<id>)")),
        "repository": (None, _pattern(_REPOSITORY_PATTERN, "expected the repository as owner/name, e.g. my-org/foundation")),
        "branch": ("main", _pattern(_BRANCH_PATTERN, "expected a branch name such as main or release/2026 "
                                                     "(letters, digits, ., _, -, /; no wildcards, spaces or ..)")),
        "approval_emails": ([], _parse_emails),
    }))


def _check_pipeline(values: dict[str, Any]) -> None:
    """The pipeline deploys to several regions of one account, from a connection in that account."""
    pipeline = values["pipeline"]
    if pipeline is None:
        return
    if values["account"] is None:
        raise ConfigError("account", None, "the pipeline needs a 12-digit account: CDK Pipelines' cross-region "
                                           "deployments cannot target the CLI's current account")
    _, connection_region, connection_account = _CONNECTION_ARN.match(pipeline.connection_arn).groups()
    if connection_account != values["account"]:
        raise ConfigError("pipeline.connection_arn", pipeline.connection_arn,
                          f"the connection must be in account {values['account']}, the pipeline's")
    if connection_region != values["primary_region"]:
        raise ConfigError("pipeline.connection_arn", pipeline.connection_arn,
                          f"the connection must be in {values['primary_region']}, the pipeline's region (primary_region)")
    if values["profile"] == "prod" and not pipeline.approval_emails:
        # prod waits for a manual approval before its first deploy: without a subscriber, nobody hears of it.
        raise ConfigError("pipeline.approval_emails", [], "the prod pipeline waits for a manual approval before it deploys: "
                                                          "name at least one e-mail address to notify")
    built = next((service for service in values["services"] if not service.image_tag and not service.image), None)
    if values["profile"] == "prod" and built:
        # Its Assets stage would build services/<name>/Dockerfile and deploy it on every push, unattended, without
        # containers.yml's gate (both platforms, Trivy on HIGH/CRITICAL, smoke test). The canary (App Mesh) needs no
        # rule of its own: canary_image_tag is always a tag of the same ECR repository, else it runs this image.
        raise ConfigError(f"services.{built.name}.image_tag", None,
                          f"the prod pipeline would build services/{built.name}/Dockerfile itself, past containers.yml's Trivy gate "
                          "(only a dev pipeline does): set image_tag to an image containers.yml scanned and pushed "
                          f"({values['prefix']}/{built.name}:<commit SHA>), or image (another registry's, scanned where it is built)")


_AZ_LETTERS = ("a", "b", "c")  # KNOWN_REGIONS: the first three zones of each are <region>a/b/c


def _parse_chaos(key: str, value: Any) -> ChaosConfig | None:
    if value is None:
        return None
    if not isinstance(value, dict) or "service" not in value:
        raise ConfigError(key, value, 'expected null or an object {"service": "<a configured service>", ...}')
    return ChaosConfig(**_object(key, value, {
        "service": (None, _pattern(_SERVICE_NAME_PATTERN, "expected the name of a configured service")),
        # Of the service's minimum task count (FoundationConfig.stop_task_count). 100 % would be an outage, not an
        # experiment: below it, at least one task keeps serving once the minimum is 2 or more.
        "stop_percent": (30, _integer(1, 99)),
        "task_network_faults": (True, _boolean),
        # FIS takes 0-10000 ms for aws:ecs:task-network-latency.
        "latency_ms": (200, _integer(1, 10_000)),
        "packet_loss_percent": (10, _integer(1, 100)),
        # FIS actions last at most 12 hours; an hour is already a long game day.
        "duration_minutes": (10, _integer(1, 60)),
        # The last zone: in either profile it holds no NAT gateway or endpoint that another zone uses (_check_chaos).
        "availability_zone": ("c", _one_of(_AZ_LETTERS)),
    }))


def fault_injection_role_names(prefix: str, region: str, service: str) -> tuple[str, str]:
    """Config.fault_injection_role_names for a chaos service (IAM role names: at most 64 characters)."""
    base = f"{prefix}-{region}-{service}"
    return f"{base}-fis-instance", f"{base}-fis-network-faults"


def _check_chaos(values: dict[str, Any]) -> None:
    """The experiments target a configured service, and one whose SLO alarms can stop them."""
    chaos = values["chaos"]
    if chaos is None:
        return
    by_name = {service.name: service for service in values["services"]}
    if chaos.service not in by_name:
        raise ConfigError("chaos.service", chaos.service, f"expected one of the configured services: {', '.join(by_name)}")
    if values["mesh"] == "appmesh" and not by_name[chaos.service].path:
        # With App Mesh the only SLO alarms are the load balancer's: a service without a path has none to stop on.
        raise ConfigError("chaos.service", chaos.service, "with mesh=appmesh, pick a service with a path: its load "
                                                          "balancer alarms are the experiments' stop conditions")
    # The stop-tasks experiment stops at least one task: with a single one at the minimum, that is an outage of the
    # service. Dev accepts it (its default minimum is 1 for cost; the run still checks the template, the replacement
    # and the stop condition); prod's users would see it.
    minimum = min_task_count(by_name[chaos.service], values["profile"])
    if values["profile"] == "prod" and minimum < 2:
        raise ConfigError(f"services.{chaos.service}.min_tasks", minimum,
                          f"with profile prod and chaos.service={chaos.service}, expected at least 2: the stop-tasks "
                          "experiment stops at least one task, and the others must keep serving")
    # Cutting off a zone whose NAT gateway or endpoints the others use (dev keeps one of each, in zone a) cuts every
    # zone off AWS's APIs (ECR, Logs, SQS, STS...): a regional outage, not the AZ outage the experiment is for.
    shared = profile_defaults(values["profile"]).shared_zone_count(AZ_COUNT)
    if _AZ_LETTERS.index(chaos.availability_zone) < shared:
        raise ConfigError("chaos.availability_zone", chaos.availability_zone,
                          f"with profile {values['profile']} the zone holds the NAT gateway and interface endpoints that "
                          f"every zone uses, so cutting it off is a regional outage; expected {', '.join(_AZ_LETTERS[shared:])}")
    if chaos.task_network_faults:
        longest = max((name for region in values["regions"]
                       for name in fault_injection_role_names(values["prefix"], region.name, chaos.service)), key=len)
        if len(longest) > 64:
            raise ConfigError("chaos.service", chaos.service, f"the network-fault experiment's role {longest} exceeds IAM's "
                                                              "64 characters; shorten the prefix or the service name")


# key -> (default, parser). The defaults here are the documented defaults; cdk.json repeats them so
# a reader sees the whole config in one file.
_KEYS: dict[str, tuple[Any, Callable[[str, Any], Any]]] = {
    "prefix": ("mf", _parse_prefix),
    "regions": (
        [{"name": "eu-central-1", "cidr": "10.10.0.0/16"}, {"name": "eu-west-1", "cidr": "10.20.0.0/16"}],
        _parse_regions,
    ),
    "primary_region": ("eu-central-1", _string),
    "profile": ("dev", _one_of(PROFILES)),
    "mesh": ("service-connect", _one_of(MESH_BACKENDS)),
    "account": (None, _parse_account),
    "namespace": ("svc.local", _parse_namespace),
    "services": (_DEFAULT_SERVICES, _parse_services),
    "mesh_options": ({}, _parse_mesh_options),
    "deployment": ({}, _parse_deployment),
    "appmesh": ({}, _parse_appmesh),
    "ingress": ({}, _parse_ingress),
    "domain": (None, _parse_domain),
    "events": ({}, _parse_events),
    "budget": ({}, _parse_budget),
    "observability": ({}, _parse_observability),
    "data": ({}, _parse_data),
    "github": (None, _parse_github),
    "pipeline": (None, _parse_pipeline),
    # Templates cost nothing until run; config "chaos": null removes them (and the sidecar). With these
    # default settings and no persona service, there are none (load_config).
    "chaos": ({"service": "persona"}, _parse_chaos),
}
CONFIG_KEYS = tuple(_KEYS)

# Context keys that belong to the CDK itself rather than to this app.
_CDK_KEYS = frozenset({"acknowledged-issue-numbers", "cli-telemetry"})


def _is_cdk_key(key: str) -> bool:
    return key.startswith("@") or ":" in key or key in _CDK_KEYS


def _decode_cli_value(value: Any, default: Any) -> Any:
    """`cdk synth -c key=value` always passes strings; lists and objects arrive as JSON text."""
    # Keys whose default is None (domain, github) may be an object too: `-c domain='{...}'` or `-c domain=null`.
    structured = isinstance(default, (list, dict)) or (
        default is None and isinstance(value, str) and (value == "null" or value.lstrip().startswith("{")))
    if isinstance(value, str) and structured:
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value  # left as a string: the parser then reports the wrong type
    return value


def load_config(context: Mapping[str, Any]) -> FoundationConfig:
    """Parse and validate the app's context. Raises ConfigError on the first bad value."""
    unknown = sorted(k for k in context if not _is_cdk_key(k) and k not in _KEYS)
    if unknown:
        raise ConfigError(unknown[0], context[unknown[0]], f"unknown key; known keys are {', '.join(CONFIG_KEYS)}")

    values = {}
    for key, (default, parse) in _KEYS.items():
        raw = _decode_cli_value(context.get(key, default), default)
        values[key] = parse(key, raw)

    _check_service_count(values)
    if values["mesh"] != "appmesh":
        with_canary = [svc.name for svc in values["services"] if svc.canary_image_tag]
        if with_canary:
            raise ConfigError(f"services.{with_canary[0]}.canary_image_tag", dict((s.name, s.canary_image_tag) for s in values["services"])[with_canary[0]],
                              "applies to mesh=appmesh only; with service-connect, deploy the new image_tag and ECS runs the canary")
        _check_deployment_length(values["deployment"])
    else:
        _check_shift_length(values["appmesh"])
        # Every App Mesh task also runs Envoy (256 CPU units) and the ADOT collector (64): ECS refuses a task
        # whose containers reserve more than the task has.
        # Each service's mesh certificate is for <name>.<namespace>: ACM's 64 characters (CDK checks no private certificate).
        too_long = [svc for svc in values["services"] if len(f"{svc.name}.{values['namespace']}") > ACM_MAX_DOMAIN_NAME]
        if too_long:
            raise ConfigError("namespace", values["namespace"], f"with mesh=appmesh the certificate name {too_long[0].name}.{values['namespace']} "
                                                                f"exceeds ACM's {ACM_MAX_DOMAIN_NAME} characters; shorten the namespace or the service name")
        too_small = [svc for svc in values["services"] if svc.cpu < APPMESH_MIN_TASK_CPU]
        if too_small:
            raise ConfigError(f"services.{too_small[0].name}.cpu", too_small[0].cpu,
                              f"with mesh=appmesh expected at least {APPMESH_MIN_TASK_CPU}: Envoy (256) and the ADOT collector (64) share the task")
    deployment = values["deployment"]
    if deployment.strategy == "CANARY" and deployment.alarm_5xx_percent >= deployment.canary_percent:
        # The alarm sees the whole service: a canary failing every request adds only canary_percent.
        raise ConfigError(
            "deployment.alarm_5xx_percent", deployment.alarm_5xx_percent,
            f"must be below deployment.canary_percent={deployment.canary_percent}, or a failing canary cannot trip it",
        )
    unknown_ca_regions = set(dict(values["mesh_options"].private_ca_arns)) - {r.name for r in values["regions"]}
    if unknown_ca_regions:
        region = sorted(unknown_ca_regions)[0]
        raise ConfigError(f"mesh_options.private_ca_arns.{region}", dict(values["mesh_options"].private_ca_arns)[region],
                          f"{region} is not a configured region")
    if len(values["regions"]) > 2 and any(service.path for service in values["services"]):
        # CloudFront origin groups hold two origins: the edge fails over between two regions.
        raise ConfigError("regions", [r.name for r in values["regions"]],
                          "the edge fails over between exactly two regions; with more, remove every service's path "
                          "(no edge) or configure two regions")
    if values["primary_region"] not in (r.name for r in values["regions"]):
        raise ConfigError(
            "primary_region", values["primary_region"],
            f"must be one of the configured regions: {', '.join(r.name for r in values['regions'])}",
        )
    _check_pipeline(values)
    _check_domain(values)
    _check_legacy(values)
    default_chaos = _parse_chaos("chaos", _KEYS["chaos"][0])
    if values["chaos"] == default_chaos and default_chaos.service not in {service.name for service in values["services"]}:
        # The default experiments (cdk.json repeats them) target persona; an app without persona has none
        # until its chaos config names a service.
        values["chaos"] = None
    _check_chaos(values)
    _check_images(values)
    return FoundationConfig(**values)


def _check_legacy(values: dict[str, Any]) -> None:
    """What a legacy function needs from the rest of the config: every region, the app's account, a short name."""
    regions = sorted(r.name for r in values["regions"])
    for service in values["services"]:
        legacy, key = service.legacy, f"services.{service.name}.legacy"
        if legacy is None:
            continue
        if len(legacy_target_group_name(values["prefix"], service.name)) > 32:
            raise ConfigError(key, service.name, f"the legacy target group {legacy_target_group_name(values['prefix'], service.name)} "
                                                 "exceeds 32 characters; shorten the prefix or the service name")
        arns = dict(legacy.function_arns)
        if arns and sorted(arns) != regions:
            raise ConfigError(f"{key}.function_arns", sorted(arns), f"expected exactly one ARN per configured region: {', '.join(regions)}")
        for region, arn in arns.items():
            if values["account"] and arn.split(":")[4] != values["account"]:
                raise ConfigError(f"{key}.function_arns.{region}", arn,
                                  f"the function must be in the app's account {values['account']}: a load balancer invokes only its own account's functions")
