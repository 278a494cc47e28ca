"""Monthly cost estimate of synthesized cloud assemblies, offline, from the price table in prices.json.

    python -m tools.cost.estimate --assembly cdk.out.cost-dev --assembly cdk.out.cost-prod

prints, per profile and region, every stack's line items in USD per month, the totals, then the
assumptions and sources behind them. No AWS call: the templates and prices.json are all it reads.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from tools.cost.assembly import AssemblyError, Stack, profile_of, read_stacks
from tools.cost.pricing import DEFAULT_PRICE_FILE, PriceTable, PriceTableError, load_price_table
from tools.cost.rules import Context, LineItem, TemplateError, estimate_stack, parse_strategy


@dataclass(frozen=True)
class Estimate:
    """One assembly priced: its profile, its line items and the resource types left unpriced."""

    assembly: str
    profile: str
    task_count: str
    lines: list[LineItem]
    unpriced: Counter[str]
    prices_used: frozenset[tuple[str, str]]  # (region or "global", price key)

    def total(self, region: str | None = None) -> float:
        return sum(line.usd for line in self.lines if region is None or line.region == region)

    def regions(self) -> list[str]:
        # Billing regions in order of first appearance, the global edge services last.
        seen = list(dict.fromkeys(line.region for line in self.lines))
        return [r for r in seen if r != "global"] + (["global"] if "global" in seen else [])


def estimate_assembly(directory: Path, prices: PriceTable, profile: str | None = None, task_count: str | None = None) -> Estimate:
    stacks = read_stacks(directory)
    profile = profile or profile_of(stacks)
    if profile is None:
        raise AssemblyError(f"{directory}: the stacks carry no single 'environment' tag; pass --profile")
    assumptions = prices.assumptions_for(profile)
    ctx = Context(
        prices=prices, assumptions=assumptions,
        task_count=task_count or assumptions["fargate_task_count"].value,
        default_strategies=_default_strategies(stacks), ca_modes=_ca_modes(stacks),
    )
    lines: list[LineItem] = []
    unpriced: Counter[str] = Counter()
    for stack in stacks:
        stack_lines, stack_unpriced = estimate_stack(stack, ctx)
        lines.extend(stack_lines)
        unpriced.update(stack_unpriced)
    return Estimate(assembly=str(directory), profile=profile, task_count=ctx.task_count, lines=lines, unpriced=unpriced,
                    prices_used=frozenset(ctx.prices_used))


def _default_strategies(stacks: list[Stack]) -> dict[str, list]:
    """Each region's cluster default capacity provider strategy (services without their own use it)."""
    strategies = {}
    for stack in stacks:
        for _, association in stack.resources("AWS::ECS::ClusterCapacityProviderAssociations"):
            strategies[stack.region] = parse_strategy(association["Properties"]["DefaultCapacityProviderStrategy"])
    return strategies


def _ca_modes(stacks: list[Stack]) -> dict[str, set[str]]:
    modes: dict[str, set[str]] = defaultdict(set)
    for stack in stacks:
        for _, ca in stack.resources("AWS::ACMPCA::CertificateAuthority"):
            modes[stack.region].add(ca["Properties"].get("UsageMode", "GENERAL_PURPOSE"))
    return dict(modes)


# --- report ------------------------------------------------------------------------------------


def format_report(estimates: list[Estimate], prices: PriceTable) -> str:
    out = [f"Monthly cost estimate, {prices.currency} list prices (tools/cost/prices.json version {prices.version}, "
           f"as of {prices.as_of}), {prices.hours_per_month:g} hours a month, no free tier, no discounts"]
    for estimate in estimates:
        out += ["", f"=== profile {estimate.profile} ({estimate.assembly}; Fargate tasks: {estimate.task_count} count) ==="]
        for region in estimate.regions():
            out += _region_table(estimate, region)
        out.append(f"TOTAL profile {estimate.profile}: {_money(estimate.total())} per month")
    out += ["", "=== summary (USD per month) ===", *_summary(estimates)]
    out += ["", "=== assumptions (prices.json 'assumptions') ==="]
    for section in ["common", *dict.fromkeys(e.profile for e in estimates)]:
        out.append(f"{section}:")
        for key, assumption in prices.assumptions[section].items():
            out.append(f"  {key} = {assumption.value} ({assumption.unit}): {assumption.why}")
    out += ["", "=== prices used, and where each figure comes from ==="]
    out += [f"  basis {name}: {meaning}" for name, meaning in prices.bases.items()]
    out += _price_lines(estimates, prices)
    unpriced = sum((e.unpriced for e in estimates), Counter())
    if unpriced:
        out += ["", "=== not priced (usage-based, not modelled; see tools/cost/README.md) ==="]
        out += [f"  {resource_type}: {count}" for resource_type, count in sorted(unpriced.items())]
    return "\n".join(out) + "\n"


def _region_table(estimate: Estimate, region: str) -> list[str]:
    title = "global (CloudFront, WAF; stage in us-east-1)" if region == "global" else region
    out = ["", f"--- {estimate.profile} / {title} ---"]
    by_stack: dict[str, list[LineItem]] = defaultdict(list)
    for line in estimate.lines:
        if line.region == region:
            by_stack[line.stack].append(line)
    for stack, lines in by_stack.items():
        out.append(f"  {stack}")
        for line in lines:
            name = f"{line.item} [{line.resource}]" if line.resource else line.item
            out.append(f"    {name:<84} {line.usd:>10.2f}   {line.detail}")
        out.append(f"    {'subtotal ' + stack:<84} {sum(li.usd for li in lines):>10.2f}")
    out.append(f"  {'TOTAL ' + estimate.profile + ' / ' + region:<86} {estimate.total(region):>10.2f}")
    return out


def _summary(estimates: list[Estimate]) -> list[str]:
    regions = list(dict.fromkeys(r for e in estimates for r in e.regions()))
    out = [f"  {'profile':<10}" + "".join(f"{r:>16}" for r in regions) + f"{'total':>16}"]
    for estimate in estimates:
        out.append(f"  {estimate.profile:<10}" + "".join(f"{estimate.total(r):>16.2f}" for r in regions)
                   + f"{estimate.total():>16.2f}")
    return out


def _price_lines(estimates: list[Estimate], prices: PriceTable) -> list[str]:
    used = set().union(*(e.prices_used for e in estimates))
    out = []
    for region in sorted({region for region, _ in used}):
        section = prices.global_prices if region == "global" else prices.regions[region]
        out.append(f"{region}:")
        for key, price in section.items():
            if (region, key) not in used:
                continue
            note = f"; {price.note}" if price.note else ""
            out.append(f"  {key} = ${price.usd:g} per {price.unit} [{price.basis}: {prices.sources[price.source]['url']}{note}]")
    return out


def _money(value: float) -> str:
    return f"${value:,.2f}"


# --- command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.cost.estimate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--assembly", action="append", required=True, type=Path,
                        help="a synthesized cloud assembly folder (cdk.out); repeat for several profiles")
    parser.add_argument("--profile", help="price the assembly with this profile's assumptions (default: its 'environment' tag)")
    parser.add_argument("--tasks", choices=("desired", "max"), help="Fargate task count: DesiredCount or the scaling maximum")
    parser.add_argument("--prices", type=Path, default=DEFAULT_PRICE_FILE, help="the price table (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        prices = load_price_table(args.prices)
        estimates = [estimate_assembly(path, prices, args.profile, args.tasks) for path in args.assembly]
    except (AssemblyError, PriceTableError, TemplateError) as error:
        print(f"cost estimate error: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(format_report(estimates, prices))
    return 0


if __name__ == "__main__":
    sys.exit(main())
