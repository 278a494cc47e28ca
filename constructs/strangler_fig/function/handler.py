"""Sets a listener rule's weights: the strangler fig's from its migration flag in SSM Parameter Store, and
ListenerRuleGuard's (rules without a legacy function) back onto the service's serving target group.

Two entry points over one reconcile step. ``handler`` (StranglerFig) is invoked by EventBridge when the
flag changes, when an ECS deployment of the service ends and when its stack's update ends. ``guard``
(ListenerRuleGuard) is invoked when its stack's update ends, for every rule it guards. Every invocation
reconciles: it reads the rule and writes the weights only if they differ, so a repeated or late event
does no harm. boto3 only (the Lambda runtime's own).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from weights import MAX_PERCENT, InvalidPercent, parse_percent, rule_weights

LOG = logging.getLogger()
LOG.setLevel(logging.INFO)
# The service deployment statuses ECS documents as pending or ongoing ("View service history using Amazon ECS
# service deployments"): during these ECS owns the rule's weights.
DEPLOYMENT_UNDER_WAY = ["PENDING", "IN_PROGRESS", "STOP_REQUESTED", "ROLLBACK_REQUESTED", "ROLLBACK_IN_PROGRESS"]


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    import boto3

    return reconcile(boto3.client("ssm"), boto3.client("elbv2"), settings_from_environment(), trigger=event.get("detail-type"))


def guard(event: dict[str, Any], context: Any) -> dict[str, Any]:
    import boto3

    return guard_rules(boto3.client("elbv2"), boto3.client("ecs"), json.loads(os.environ["GUARDED_RULES"]),
                       trigger=event.get("detail-type"))


def settings_from_environment() -> dict[str, Any]:
    return {
        "parameter_name": os.environ["PARAMETER_NAME"],
        "rule_arn": os.environ["RULE_ARN"],
        "legacy_target_group_arn": os.environ["LEGACY_TARGET_GROUP_ARN"],
        "service_target_group_arns": os.environ["SERVICE_TARGET_GROUP_ARNS"].split(","),
    }


def reconcile(ssm: Any, elbv2: Any, settings: dict[str, Any], trigger: str | None = None) -> dict[str, Any]:
    """Apply the flag to the rule. Returns what happened; an invalid flag leaves the rule as it is."""
    raw = ssm.get_parameter(Name=settings["parameter_name"])["Parameter"]["Value"]
    try:
        percent = parse_percent(raw)
    except InvalidPercent as error:
        return _log(logging.ERROR, "rejected", trigger=trigger, value=raw, reason=str(error))
    return _weigh_rule(elbv2, settings["rule_arn"], settings["service_target_group_arns"], percent,
                       settings["legacy_target_group_arn"], trigger=trigger, percent_to_service=percent)


def guard_rules(elbv2: Any, ecs: Any, rules: list[dict[str, Any]], trigger: str | None = None) -> dict[str, Any]:
    """Put each rule's whole share back on its service's groups with healthy targets, skipping a rule whose
    service is being deployed (ECS moves its weights then, and its end leaves them on the live group).
    ``rules``: rule_arn, target_group_arns, cluster, service_arn each. Raises after the others when a rule
    has no group with healthy targets: Lambda retries, then the dead-letter queue alarms."""
    results, failures = [], []
    for rule in rules:
        under_way = ecs.list_service_deployments(
            cluster=rule["cluster"], service=rule["service_arn"], status=DEPLOYMENT_UNDER_WAY)["serviceDeployments"]
        if under_way:
            results.append(_log(logging.WARNING, "skipped", trigger=trigger, rule_arn=rule["rule_arn"],
                                reason="an ECS deployment of the service is under way",
                                service_deployments=[d["serviceDeploymentArn"] for d in under_way]))
            continue
        try:
            results.append(_weigh_rule(elbv2, rule["rule_arn"], rule["target_group_arns"], MAX_PERCENT, None,
                                       trigger=trigger, rule_arn=rule["rule_arn"]))
        except ValueError as error:
            failures.append(_log(logging.ERROR, "failed", trigger=trigger, rule_arn=rule["rule_arn"], reason=str(error)))
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(rules)} listener rules kept their weights: {json.dumps(failures)}")
    return {"outcome": "guarded", "rules": results}


def _weigh_rule(elbv2: Any, rule_arn: str, service_target_group_arns: list[str], percent: int, legacy: str | None, /,
                **log_fields: Any) -> dict[str, Any]:
    """Give the service ``percent`` of the rule, on its groups with healthy targets, and ``legacy`` (if any) the rest."""
    (rule,) = elbv2.describe_rules(RuleArns=[rule_arn])["Rules"]
    forward = next(action for action in rule["Actions"] if action["Type"] == "forward")
    config = forward.get("ForwardConfig") or {"TargetGroups": [{"TargetGroupArn": forward["TargetGroupArn"], "Weight": 1}]}
    current = {group["TargetGroupArn"]: group.get("Weight", 1) for group in config["TargetGroups"]}
    service = {arn: current.get(arn, 0) for arn in service_target_group_arns}
    # Which groups have healthy targets: after a stack update the template's weights may sit on the
    # group ECS emptied (ECS alternates the live group; CloudFormation writes back the first).
    serving = frozenset(arn for arn in service if _has_healthy_targets(elbv2, arn)) if percent > 0 else frozenset()
    # Raises when no service group can take the traffic: Lambda retries, then the dead-letter queue alarms.
    weights = rule_weights(percent, legacy, service, serving)
    if weights == {arn: current.get(arn, 0) for arn in weights}:
        return _log(logging.INFO, "unchanged", weights=weights, **log_fields)

    new_config = {"TargetGroups": [{"TargetGroupArn": arn, "Weight": weight} for arn, weight in weights.items()]}
    if "TargetGroupStickinessConfig" in config:
        new_config["TargetGroupStickinessConfig"] = config["TargetGroupStickinessConfig"]
    elbv2.modify_rule(RuleArn=rule_arn, Actions=[{"Type": "forward", "ForwardConfig": new_config}])
    return _log(logging.INFO, "applied", weights=weights, previous=current, **log_fields)


def _has_healthy_targets(elbv2: Any, target_group_arn: str) -> bool:
    descriptions = elbv2.describe_target_health(TargetGroupArn=target_group_arn)["TargetHealthDescriptions"]
    return any(d["TargetHealth"]["State"] == "healthy" for d in descriptions)


def _log(level: int, outcome: str, **fields: Any) -> dict[str, Any]:
    record = {"outcome": outcome, **fields}
    LOG.log(level, json.dumps(record, sort_keys=True))
    return record
