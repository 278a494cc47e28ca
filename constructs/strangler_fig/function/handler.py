"""Sets a listener rule's weights: the strangler fig's from its migration flag in SSM Parameter Store, and
ListenerRuleGuard's (rules without a legacy function) back onto the service's serving target group.

Two entry points over one reconcile step. ``handler`` (StranglerFig) is invoked by EventBridge when the
flag changes, when an ECS deployment of the service ends, when CloudFormation has updated its listener rule and
when its stack's update ends. ``guard`` (ListenerRuleGuard) is invoked on the same events but the flag's; its
environment names only the cluster and the guarded services (``CLUSTER``, ``SERVICES`` comma-separated), and
ECS's DescribeServices tells each service's production listener rule and its two target groups (the load
balancer's ``advancedConfiguration``). The event only names the trigger in the log: every invocation
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
# DescribeServices describes at most 10 services a call.
DESCRIBE_SERVICES_PAGE = 10


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    import boto3

    return reconcile(boto3.client("ssm"), boto3.client("elbv2"), settings_from_environment(), trigger=event.get("detail-type"))


def guard(event: dict[str, Any], context: Any) -> dict[str, Any]:
    import boto3

    return guard_services(boto3.client("elbv2"), boto3.client("ecs"), os.environ["CLUSTER"], os.environ["SERVICES"].split(","),
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


def guard_services(elbv2: Any, ecs: Any, cluster: str, services: list[str], trigger: str | None = None) -> dict[str, Any]:
    """Put each service's production listener rule's whole share back on its groups with healthy targets.

    ``services`` (names or ARNs in ``cluster``) are described 10 at a time; each load balancer's
    ``advancedConfiguration`` names the rule ECS shifts (``productionListenerRule``) between ``targetGroupArn``
    and ``alternateTargetGroupArn``. Skipped, with a warning: a service without one (not yet deployed with
    it: ECS shifts nothing) and a service being deployed (ECS moves its weights then, and its end leaves them
    on the live group). Raises after the others when a rule has no group with healthy targets or a service
    is not found: Lambda retries, then the dead-letter queue alarms."""
    results, failures = [], []
    for start in range(0, len(services), DESCRIBE_SERVICES_PAGE):
        described = ecs.describe_services(cluster=cluster, services=services[start:start + DESCRIBE_SERVICES_PAGE])
        for failure in described.get("failures", []):
            failures.append(_log(logging.ERROR, "failed", trigger=trigger, service=failure.get("arn"),
                                 reason=f"DescribeServices: {failure.get('reason')} {failure.get('detail', '')}".strip()))
        for service in described["services"]:
            try:
                outcomes = _guard_service(elbv2, ecs, cluster, service, trigger)
            except Exception as error:  # an AWS error for this service: the others are still guarded
                outcomes = [_log(logging.ERROR, "failed", trigger=trigger, service=service.get("serviceName"),
                                 reason=f"{type(error).__name__}: {error}")]
            results += [o for o in outcomes if o["outcome"] != "failed"]
            failures += [o for o in outcomes if o["outcome"] == "failed"]
    if failures:
        raise RuntimeError(f"{len(failures)} listener rules or services were left as they were: {json.dumps(failures)}")
    return {"outcome": "guarded", "rules": results}


def _guard_service(elbv2: Any, ecs: Any, cluster: str, service: dict[str, Any], trigger: str | None) -> list[dict[str, Any]]:
    name = service["serviceName"]
    shifted = [(balancer["advancedConfiguration"]["productionListenerRule"],
                [balancer["targetGroupArn"], balancer["advancedConfiguration"]["alternateTargetGroupArn"]])
               for balancer in service.get("loadBalancers", [])
               if balancer.get("advancedConfiguration", {}).get("productionListenerRule")]
    if not shifted:
        return [_log(logging.WARNING, "skipped", trigger=trigger, service=name,
                     reason="no load balancer of the service has an advancedConfiguration with a production listener rule")]
    under_way = ecs.list_service_deployments(
        cluster=cluster, service=service["serviceArn"], status=DEPLOYMENT_UNDER_WAY)["serviceDeployments"]
    if under_way:
        return [_log(logging.WARNING, "skipped", trigger=trigger, service=name, rule_arn=rule_arn,
                     reason="an ECS deployment of the service is under way",
                     service_deployments=[d["serviceDeploymentArn"] for d in under_way]) for rule_arn, _ in shifted]
    outcomes = []
    for rule_arn, target_group_arns in shifted:
        try:
            outcomes.append(_weigh_rule(elbv2, rule_arn, target_group_arns, MAX_PERCENT, None,
                                        trigger=trigger, service=name, rule_arn=rule_arn))
        except Exception as error:  # no healthy group (ValueError) or an AWS error: the service's other rules still count
            outcomes.append(_log(logging.ERROR, "failed", trigger=trigger, service=name, rule_arn=rule_arn,
                                 reason=f"{type(error).__name__}: {error}"))
    return outcomes


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
