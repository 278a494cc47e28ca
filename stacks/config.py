"""The app's typed configuration: cdk.json context -> one frozen dataclass tree, validated once.

Every public config key is declared in ``_KEYS`` below with its default; ``load_config`` is the only
place that reads context. A bad value raises ``ConfigError`` whose message is one line naming the
key, the bad value and what is allowed. This module does not import aws_cdk, so it stays fast and
testable on its own; app.py turns ``ConfigError`` into a one-line message and a non-zero exit.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

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
class FoundationConfig:
    """The whole app's configuration. Built only by ``load_config``."""

    prefix: str
    regions: tuple[RegionConfig, ...]
    primary_region: str
    profile: str
    mesh: str
    account: str | None
    namespace: str

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
        if _string(key, value) not in choices:
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
}
CONFIG_KEYS = tuple(_KEYS)

# Context keys that belong to the CDK itself rather than to this app.
_CDK_KEYS = frozenset({"acknowledged-issue-numbers", "cli-telemetry"})


def _is_cdk_key(key: str) -> bool:
    return key.startswith("@") or ":" in key or key in _CDK_KEYS


def _decode_cli_value(value: Any, default: Any) -> Any:
    """`cdk synth -c key=value` always passes strings; lists and objects arrive as JSON text."""
    if isinstance(value, str) and isinstance(default, (list, dict)):
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

    if values["primary_region"] not in (r.name for r in values["regions"]):
        raise ConfigError(
            "primary_region", values["primary_region"],
            f"must be one of the configured regions: {', '.join(r.name for r in values['regions'])}",
        )
    return FoundationConfig(**values)
