"""The versioned price table (prices.json): list prices per region, traffic assumptions per profile.

Loading validates the schema, so a missing price or an unknown source fails before any estimate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_PRICE_FILE = Path(__file__).with_name("prices.json")

# Every region section must price all of these; "global" holds the edge services' prices.
REGIONAL_KEYS = (
    "nat_gateway_hour", "nat_gateway_gb", "public_ipv4_hour",
    "interface_endpoint_az_hour", "interface_endpoint_gb",
    "alb_hour", "alb_lcu_hour",
    "fargate_vcpu_hour", "fargate_gb_hour", "fargate_spot_vcpu_hour", "fargate_spot_gb_hour",
    "private_ca_general_purpose_month", "private_ca_short_lived_month",
    "private_cert_general_purpose", "private_cert_short_lived",
    "logs_ingest_gb", "logs_storage_gb_month", "cloudwatch_alarm_metric_month",
    "kms_key_month", "secret_month",
    "dynamodb_write_million", "dynamodb_read_million", "dynamodb_storage_gb_month", "dynamodb_pitr_gb_month",
    "route53_hosted_zone_month",
)
GLOBAL_KEYS = (
    "cloudfront_gb", "cloudfront_https_10k", "cloudfront_function_million", "cloudfront_kvs_read_million",
    "waf_web_acl_month", "waf_rule_month", "waf_million_requests",
)
# Traffic-dependent inputs: "common" holds profile-independent ones, each profile the rest.
COMMON_ASSUMPTION_KEYS = (
    "fargate_task_count", "log_storage_months_if_never_expire", "service_connect_cert_rotation_days",
    "acm_private_cert_issues_per_year", "cloudfront_share_through_function",
)
PROFILE_ASSUMPTION_KEYS = (
    "nat_gb_per_region", "endpoint_gb_per_region", "alb_average_lcu",
    "cloudfront_million_requests", "cloudfront_gb", "log_gb_per_group", "flow_log_gb",
    "dynamodb_gb_per_table", "dynamodb_million_writes_per_table", "dynamodb_million_reads_per_table",
)
BASES = ("aws-page", "third-party", "assumption")


class PriceTableError(ValueError):
    """prices.json does not match the schema this module reads."""


@dataclass(frozen=True)
class Price:
    usd: float
    unit: str
    source: str  # a key of PriceTable.sources
    basis: str  # one of BASES: where the figure was read, or that it is an assumption
    note: str = ""


@dataclass(frozen=True)
class Assumption:
    value: Any
    unit: str
    why: str


@dataclass(frozen=True)
class PriceTable:
    version: int
    as_of: str
    currency: str
    hours_per_month: float
    sources: dict[str, dict[str, str]]
    bases: dict[str, str]  # basis name -> what it means
    regions: dict[str, dict[str, Price]]
    global_prices: dict[str, Price]
    assumptions: dict[str, dict[str, Assumption]]  # "common" and one entry per profile

    def price(self, region: str | None, key: str) -> float:
        """A regional price; ``region=None`` reads the global section (CloudFront, WAF)."""
        if region is None:
            return self.global_prices[key].usd
        if region not in self.regions:
            raise PriceTableError(f"prices.json has no prices for region {region!r} (it has {sorted(self.regions)})")
        return self.regions[region][key].usd

    def profiles(self) -> list[str]:
        return sorted(name for name in self.assumptions if name != "common")

    def assumptions_for(self, profile: str) -> dict[str, Assumption]:
        if profile not in self.assumptions or profile == "common":
            raise PriceTableError(f"prices.json has no assumptions for profile {profile!r} (it has {self.profiles()})")
        return {**self.assumptions["common"], **self.assumptions[profile]}


def load_price_table(path: Path = DEFAULT_PRICE_FILE) -> PriceTable:
    return parse_price_table(json.loads(Path(path).read_text()))


def parse_price_table(data: dict[str, Any]) -> PriceTable:
    for key in ("version", "as_of", "currency", "hours_per_month", "bases", "sources", "regions", "global", "assumptions"):
        if key not in data:
            raise PriceTableError(f"prices.json lacks {key!r}")
    sources = data["sources"]
    if set(data["bases"]) != set(BASES):
        raise PriceTableError(f"bases must define exactly {BASES}")
    for name, source in sources.items():
        if not str(source.get("url", "")).startswith(("https://", "http://")):
            raise PriceTableError(f"sources.{name} has no http(s) url")
    regions = {region: _prices(f"regions.{region}", section, REGIONAL_KEYS, sources) for region, section in data["regions"].items()}
    global_prices = _prices("global", data["global"], GLOBAL_KEYS, sources)
    assumptions = {"common": _assumptions("assumptions.common", data["assumptions"].get("common", {}), COMMON_ASSUMPTION_KEYS)}
    for profile, section in data["assumptions"].items():
        if profile != "common":
            assumptions[profile] = _assumptions(f"assumptions.{profile}", section, PROFILE_ASSUMPTION_KEYS)
    if data["assumptions"]["common"]["fargate_task_count"]["value"] not in ("desired", "max"):
        raise PriceTableError("assumptions.common.fargate_task_count must be 'desired' or 'max'")
    return PriceTable(
        version=data["version"], as_of=data["as_of"], currency=data["currency"],
        hours_per_month=float(data["hours_per_month"]), sources=sources, bases=data["bases"], regions=regions,
        global_prices=global_prices, assumptions=assumptions,
    )


def _prices(where: str, section: dict[str, Any], required: tuple[str, ...], sources: dict[str, Any]) -> dict[str, Price]:
    missing = [key for key in required if key not in section]
    if missing:
        raise PriceTableError(f"{where} lacks {missing}")
    prices = {}
    for key, entry in section.items():
        price = Price(**entry)
        if not isinstance(price.usd, (int, float)) or price.usd < 0:
            raise PriceTableError(f"{where}.{key}.usd={price.usd!r} must be a number >= 0")
        if price.source not in sources:
            raise PriceTableError(f"{where}.{key}.source={price.source!r} is not one of the sources")
        if price.basis not in BASES:
            raise PriceTableError(f"{where}.{key}.basis={price.basis!r} must be one of {BASES}")
        prices[key] = price
    return prices


def _assumptions(where: str, section: dict[str, Any], required: tuple[str, ...]) -> dict[str, Assumption]:
    missing = [key for key in required if key not in section]
    if missing:
        raise PriceTableError(f"{where} lacks {missing}")
    return {key: Assumption(**entry) for key, entry in section.items()}
