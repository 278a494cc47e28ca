"""The quota counter of each region's observability stack (constructs/observability/quota_counter.py): a function on a
15-minute schedule that publishes Cloud Map and ECR usage against its quotas, retries into a watched dead-letter
queue, alarms per quota, and holds only the permissions its counting needs. Its handler is tested against moto in
services/tests/test_quota_count.py."""

from __future__ import annotations

import ast
import json
import re
from typing import Any

import pytest

from constructs.observability.quota_counter import COUNTED, HANDLER_DIR, UNSCOPED_ACTIONS
from tests.assembly import Assembly

REGIONS = ("eu-central-1", "eu-west-1")
REPOSITORIES = ("mf/auth", "mf/persona", "mf/vc-start")
RUNBOOK = "Runbook: runbooks/quota-exhaustion.md"


def _stack(region: str) -> str:
    return f"mf-{region}/observability"


def _one(assembly: Assembly, stack: str, resource_type: str, name_part: str) -> tuple[str, dict[str, Any]]:
    (found,) = [(i, r["Properties"]) for i, r in assembly.resources(stack, resource_type).items() if name_part in i]
    return found


def _alarms(assembly: Assembly, stack: str) -> dict[str, dict[str, Any]]:
    return {a["Properties"]["AlarmName"]: a["Properties"] for a in assembly.resources(stack, "AWS::CloudWatch::Alarm").values()}


def _arn(value: Any) -> str:
    """An ARN from its Fn::Join, with the account as <account>."""
    if isinstance(value, str):
        return value
    return "".join(part if isinstance(part, str) else "<account>" for part in value["Fn::Join"][1])


@pytest.mark.parametrize("region", REGIONS)
def test_a_schedule_runs_the_function_every_15_minutes_and_retries_into_a_watched_dead_letter_queue(dev, region):
    stack = _stack(region)
    function_id, function = _one(dev, stack, "AWS::Lambda::Function", "QuotaCounterFunction")
    queue_id, queue = _one(dev, stack, "AWS::SQS::Queue", "QuotaCounterDeadLetterQueue")
    _, rule = _one(dev, stack, "AWS::Events::Rule", "QuotaCounterSchedule")
    assert (function["Runtime"], function["Architectures"]) == ("python3.14", ["arm64"])
    # Named (runbooks/quota-exhaustion.md's commands), and logging to its own KMS-encrypted group.
    assert function["FunctionName"] == "mf-quota-counter" and queue["QueueName"] == "mf-quota-counter-dlq"
    assert rule["ScheduleExpression"] == "rate(15 minutes)" and rule["State"] == "ENABLED"
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [function_id, "Arn"]}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0 and target["RetryPolicy"]["MaximumEventAgeInSeconds"] == 900
    # Undeliverable runs and runs that failed after Lambda's retries land in the same queue.
    assert target["DeadLetterConfig"]["Arn"] == function["DeadLetterConfig"]["TargetArn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    assert queue["RedriveAllowPolicy"] == {"redrivePermission": "denyAll"}
    alarm = _alarms(dev, stack)["mf-counted-quotas-dlq-not-empty"]
    assert queue_id in json.dumps(alarm["Metrics"]) and alarm["Threshold"] == 0
    assert alarm["AlarmActions"] and alarm["AlarmActions"] == alarm["OKActions"]
    assert alarm["AlarmDescription"].endswith(RUNBOOK)
    assert function["Environment"]["Variables"] == {
        "METRIC_NAMESPACE": "mf/quotas", "CLOUD_MAP_NAMESPACES": "svc.local", "ECR_REPOSITORIES": ",".join(REPOSITORIES)}


@pytest.mark.parametrize("region", REGIONS)
def test_an_alarm_per_counted_quota_at_the_configured_percentage(dev, region):
    alarms = _alarms(dev, _stack(region))
    for name, _ in COUNTED:
        alarm = alarms[f"mf-quota-{name}"]
        (query,) = alarm["Metrics"]
        metric = query["MetricStat"]["Metric"]
        assert (metric["Namespace"], metric["MetricName"]) == ("mf/quotas", "PercentOfQuota")
        assert metric["Dimensions"] == [{"Name": "Quota", "Value": name}]
        # One datapoint per 15-minute run: a 15-minute period, so no period is empty while the function works; one of
        # two periods, so a late or failed run does not turn an alarm OK and back again.
        assert (query["MetricStat"]["Period"], query["MetricStat"]["Stat"]) == (900, "Maximum")
        assert (alarm["DatapointsToAlarm"], alarm["EvaluationPeriods"], alarm["TreatMissingData"]) == (1, 2, "notBreaching")
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (80, "GreaterThanThreshold")  # observability.quota_alarm_percent
        assert alarm["AlarmActions"] and alarm["AlarmActions"] == alarm["OKActions"]
        assert alarm["AlarmDescription"].endswith(RUNBOOK)


def test_the_handler_publishes_exactly_the_quotas_the_alarms_watch():
    tree = ast.parse((HANDLER_DIR / "handler.py").read_text())
    (quotas,) = [node.value for node in ast.walk(tree) if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "QUOTAS"]
    assert {key.value for key in quotas.keys} == {name for name, _ in COUNTED}
    # Quota codes as Service Quotas knows them: L- and eight hex digits, Cloud Map under AWSCloudMap.
    for value in quotas.values:
        service_code, quota_code = (element.value for element in value.elts)
        assert service_code in {"AWSCloudMap", "ecr"} and re.fullmatch(r"L-[0-9A-F]{8}", quota_code)


@pytest.mark.parametrize("region", REGIONS)
def test_the_function_may_only_count_and_publish_into_its_own_namespace(dev, region):
    stack = _stack(region)
    _, policy = _one(dev, stack, "AWS::IAM::Policy", "QuotaCounterRoleDefaultPolicy")
    grants = {}
    for statement in policy["PolicyDocument"]["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in actions:
            grants[action] = (sorted(_arn(r) if not (isinstance(r, dict) and "Fn::GetAtt" in r) else r["Fn::GetAtt"][0]
                                     for r in resources), statement.get("Condition"))
    prefix = f"arn:aws:{{}}:{region}:<account>:"
    expected = {
        # No resource-level permissions: the acknowledgment on the role says so.
        **{action: (["*"], None) for action in UNSCOPED_ACTIONS},
        "cloudwatch:PutMetricData": (["*"], {"StringEquals": {"cloudwatch:namespace": "mf/quotas"}}),
        "servicediscovery:GetService": ([prefix.format("servicediscovery") + "service/*"], None),
        "servicediscovery:ListInstances": ([prefix.format("servicediscovery") + "service/*"], None),
        "ecr:DescribeRepositories": ([prefix.format("ecr") + "repository/*"], None),
        "ecr:DescribeImages": ([prefix.format("ecr") + f"repository/{name}" for name in REPOSITORIES], None),
    }
    assert {action: grant for action, grant in grants.items() if action in expected} == expected
    # The rest: its own log group and dead-letter queue.
    assert {action for action in grants if action not in expected} == {"logs:CreateLogStream", "logs:PutLogEvents", "sqs:SendMessage"}
    assert all(len(grants[action][0]) == 1 and "QuotaCounter" in grants[action][0][0]
               for action in ("logs:CreateLogStream", "logs:PutLogEvents", "sqs:SendMessage"))
