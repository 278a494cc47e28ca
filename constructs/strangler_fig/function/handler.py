"""Sets the strangler fig's listener rule weights from the migration flag in SSM Parameter Store.

Invoked by EventBridge when the flag changes and when an ECS deployment of the service ends. Every
invocation reconciles: it reads the flag, reads the rule, and writes the weights if they differ, so a
repeated or late event does no harm. boto3 only (the Lambda runtime's own).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from weights import InvalidPercent, parse_percent, rule_weights

LOG = logging.getLogger()
LOG.setLevel(logging.INFO)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    import boto3

    return reconcile(boto3.client("ssm"), boto3.client("elbv2"), settings_from_environment(), trigger=event.get("detail-type"))


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

    rule_arn, legacy = settings["rule_arn"], settings["legacy_target_group_arn"]
    (rule,) = elbv2.describe_rules(RuleArns=[rule_arn])["Rules"]
    forward = next(action for action in rule["Actions"] if action["Type"] == "forward")
    config = forward.get("ForwardConfig") or {"TargetGroups": [{"TargetGroupArn": forward["TargetGroupArn"], "Weight": 1}]}
    current = {group["TargetGroupArn"]: group.get("Weight", 1) for group in config["TargetGroups"]}
    service = {arn: current.get(arn, 0) for arn in settings["service_target_group_arns"]}
    # Which groups have healthy targets: after a stack update the template's weights may sit on the
    # group ECS emptied (ECS alternates the live group; CloudFormation writes back the first).
    serving = frozenset(arn for arn in service if _has_healthy_targets(elbv2, arn)) if percent > 0 else frozenset()
    # Raises when no service group can take the traffic: Lambda retries, then the dead-letter queue alarms.
    weights = rule_weights(percent, legacy, service, serving)
    if weights == {arn: current.get(arn, 0) for arn in weights}:
        return _log(logging.INFO, "unchanged", trigger=trigger, percent_to_service=percent, weights=weights)

    new_config = {"TargetGroups": [{"TargetGroupArn": arn, "Weight": weight} for arn, weight in weights.items()]}
    if "TargetGroupStickinessConfig" in config:
        new_config["TargetGroupStickinessConfig"] = config["TargetGroupStickinessConfig"]
    elbv2.modify_rule(RuleArn=rule_arn, Actions=[{"Type": "forward", "ForwardConfig": new_config}])
    return _log(logging.INFO, "applied", trigger=trigger, percent_to_service=percent, weights=weights, previous=current)


def _has_healthy_targets(elbv2: Any, target_group_arn: str) -> bool:
    descriptions = elbv2.describe_target_health(TargetGroupArn=target_group_arn)["TargetHealthDescriptions"]
    return any(d["TargetHealth"]["State"] == "healthy" for d in descriptions)


def _log(level: int, outcome: str, **fields: Any) -> dict[str, Any]:
    record = {"outcome": outcome, **fields}
    LOG.log(level, json.dumps(record, sort_keys=True))
    return record
