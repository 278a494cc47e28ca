"""The listener rule's weights for a migration percentage (or, without a legacy function, for the service's
groups alone): pure, so it is tested without AWS."""

from __future__ import annotations

from typing import Mapping

# The share of requests, in percent, that goes to the new service; the rest goes to the legacy function.
MIN_PERCENT, MAX_PERCENT = 0, 100


class InvalidPercent(ValueError):
    """The flag's value is not a whole number from 0 to 100."""


def parse_percent(raw: str) -> int:
    """'37' -> 37. Anything but a plain integer from 0 to 100 raises InvalidPercent."""
    text = raw.strip()
    if not text.isdigit() or not MIN_PERCENT <= int(text) <= MAX_PERCENT:
        raise InvalidPercent(f"percent-to-service={raw!r} is invalid: expected a whole number from 0 to 100")
    return int(text)


def rule_weights(percent: int, legacy_group: str | None, service_weights: Mapping[str, int],
                 serving_groups: frozenset[str] = frozenset()) -> dict[str, int]:
    """Target group ARN -> weight for the rule's forward action, out of 100.

    The legacy group gets ``100 - percent``. The service's groups (one, or two while ECS shifts a
    deployment between them) share ``percent`` in the proportion ECS gave them (``service_weights``,
    their current weights), so a canary keeps its share of the service's traffic. Only weighted groups
    in ``serving_groups`` (the groups with healthy targets) count when any group serves: a weight that
    CloudFormation wrote back onto the group ECS emptied in its last deployment is not ECS's
    proportion. When no weighted group serves (the service had 0 %, or the template's weights), the
    share is split equally among ``serving_groups``. When no group serves at all, the weights stay as
    they are; with none of them above 0 that would send the share nowhere and raises ValueError.

    ``legacy_group`` None (a rule without a legacy function, ListenerRuleGuard): the service takes 100 %,
    on the serving groups as above. Without a serving group nothing tells which group is live, so that
    raises ValueError too.
    """
    if not MIN_PERCENT <= percent <= MAX_PERCENT:
        raise InvalidPercent(f"percent={percent} is invalid: expected 0 to 100")
    if not service_weights or legacy_group in service_weights:
        raise ValueError("service_weights must name the service's target groups, not the legacy one")
    if legacy_group is None:
        if percent != MAX_PERCENT:
            raise ValueError(f"percent={percent} is invalid without a legacy group: the service takes 100 %")
        if not serving_groups:
            raise ValueError("no service target group has healthy targets to take 100 % of the traffic")
    basis = {group: weight for group, weight in service_weights.items() if weight > 0}
    if serving_groups and percent > 0:
        basis = ({group: weight for group, weight in basis.items() if group in serving_groups}
                 or {group: 1 for group in service_weights if group in serving_groups})
    if not basis and percent > 0:
        raise ValueError(f"no service target group has healthy targets to take {percent} % of the traffic")
    shares = _split(percent, basis)
    legacy = {legacy_group: MAX_PERCENT - percent} if legacy_group is not None else {}
    return {**legacy, **{group: shares.get(group, 0) for group in service_weights}}


def _split(total: int, basis: Mapping[str, int]) -> dict[str, int]:
    """``total`` split in proportion to ``basis`` (largest remainder), every group of the basis at least 1
    while total allows: a canary that ECS gave traffic keeps some."""
    if not basis or total == 0:
        return {}
    whole = sum(basis.values())
    exact = {group: total * weight / whole for group, weight in basis.items()}
    shares = {group: int(value) for group, value in exact.items()}
    for group in sorted(exact, key=lambda g: exact[g] - shares[g], reverse=True)[: total - sum(shares.values())]:
        shares[group] += 1
    for group in sorted(shares):
        if shares[group] == 0 and total >= len(basis):
            richest = max(shares, key=shares.get)
            shares[richest] -= 1
            shares[group] = 1
    return shares
