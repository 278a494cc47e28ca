"""The region's event bus (issue 6): an archive for replay, the contracts registered as schemas, and a bus
policy that lets only the producers' task roles put events."""

from __future__ import annotations

import json
import uuid

import jsonschema
import pytest

from constructs.event_bus.schemas import to_draft_4
from tests.assembly import cdk_json_context

REGIONS = ("eu-central-1", "eu-west-1")
# detail-type -> producer, as cdk.json's consumes says.
REGISTERED = {"SessionStarted": "vc-start", "SessionCancelled": "vc-start", "SlotConfirmed": "persona", "SlotReleased": "persona"}


def _platform(assembly, region):
    return assembly.template(f"mf-{region}/platform")["Resources"]


def _of_type(resources, resource_type):
    return {logical_id: r for logical_id, r in resources.items() if r["Type"] == resource_type}


@pytest.mark.parametrize("region", REGIONS)
def test_the_bus_keeps_an_archive_of_this_accounts_events_for_the_configured_days(dev, region):
    resources = _platform(dev, region)
    (bus_id,) = _of_type(resources, "AWS::Events::EventBus")
    (archive,) = _of_type(resources, "AWS::Events::Archive").values()
    properties = archive["Properties"]
    assert properties["SourceArn"] == {"Fn::GetAtt": [bus_id, "Arn"]}
    assert properties["ArchiveName"] == "mf-events-archive"
    assert properties["RetentionDays"] == cdk_json_context()["events"]["archive_retention_days"] == 30
    assert properties["EventPattern"] == {"account": [{"Ref": "AWS::AccountId"}]}
    # EventBridge's AWS owned key: no KmsKeyIdentifier at all (CDK's "" fails some regions' deploys).
    assert "KmsKeyIdentifier" not in properties


def _registered_schemas(assembly, region):
    resources = _platform(assembly, region)
    (registry_id, registry), = _of_type(resources, "AWS::EventSchemas::Registry").items()
    assert registry["Properties"]["RegistryName"] == "mf-events"
    schemas = {}
    for schema in _of_type(resources, "AWS::EventSchemas::Schema").values():
        properties = schema["Properties"]
        assert properties["RegistryName"] == {"Fn::GetAtt": [registry_id, "RegistryName"]}
        assert properties["Type"] == "JSONSchemaDraft4"
        schemas[properties["SchemaName"]] = json.loads(properties["Content"])
    return schemas


@pytest.mark.parametrize("region", REGIONS)
def test_every_consumed_event_is_registered_under_its_producers_source(dev, region):
    schemas = _registered_schemas(dev, region)
    assert set(schemas) == {f"mf.{producer}@{detail_type}" for detail_type, producer in REGISTERED.items()}


def _session_started(**data_changes):
    """A SessionStarted event as EventBridge delivers it to a target."""
    data = {"session_id": str(uuid.uuid4()), "persona_id": "p-1", "user_id": "alice", **data_changes}
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "SessionStarted", "source": "mf.vc-start",
        "account": "111122223333", "time": "2026-11-22T09:00:00Z", "region": "eu-central-1", "resources": [],
        "detail": {"event_id": str(uuid.uuid4()), "occurred_at": "2026-11-22T09:00:00+00:00", "correlation_id": "c-1",
                   "traceparent": None, "data": data},
    }


def test_the_registered_session_started_schema_accepts_a_real_event_and_rejects_broken_ones(dev):
    schema = _registered_schemas(dev, "eu-central-1")["mf.vc-start@SessionStarted"]
    validator = jsonschema.Draft4Validator(schema)
    jsonschema.Draft4Validator.check_schema(schema)
    assert not list(validator.iter_errors(_session_started()))

    wrong_source = {**_session_started(), "source": "mf.persona"}
    missing_field = _session_started()
    del missing_field["detail"]["data"]["session_id"]
    unknown_field = _session_started(seats=3)
    bad_session_id = _session_started(session_id="not-a-uuid")
    no_envelope = {**_session_started(), "detail": {"data": _session_started()["detail"]["data"]}}
    for broken in (wrong_source, missing_field, unknown_field, bad_session_id, no_envelope):
        assert list(validator.iter_errors(broken)), broken


def test_contracts_translate_to_draft_4_or_fail_naming_the_keyword():
    assert to_draft_4({"$schema": "x", "$id": "y", "const": "a", "properties": {"b": {"const": 1}}}, where="T") == {
        "enum": ["a"], "properties": {"b": {"enum": [1]}}}
    with pytest.raises(ValueError, match=r"^T\.properties\.b: keyword '\$ref' has no JSON Schema draft 4 equivalent"):
        to_draft_4({"properties": {"b": {"$ref": "#/$defs/b"}}}, where="T")


def _bus_policy(assembly, region):
    resources = assembly.template(f"mf-{region}/services")["Resources"]
    (policy,) = _of_type(resources, "AWS::Events::EventBusPolicy").values()
    return resources, policy["Properties"]


@pytest.mark.parametrize("variant, publishers", [
    ("dev", {"persona", "vc-start"}),
    # With App Mesh the canary runs the release being tried, which publishes as its service does.
    ("appmesh", {"persona", "persona-canary", "vc-start", "vc-start-canary"}),
])
@pytest.mark.parametrize("region", REGIONS)
def test_only_the_producers_task_roles_may_put_events_on_the_bus(dev, appmesh, variant, publishers, region):
    resources, properties = _bus_policy({"dev": dev, "appmesh": appmesh}[variant], region)
    statement = properties["Statement"]
    assert statement["Effect"] == "Deny" and statement["Principal"] == "*" and statement["Action"] == "events:PutEvents"
    output = properties["EventBusName"]["Fn::GetStackOutput"]
    assert output["StackName"] == f"mf-{region}-platform" and "EventBus" in output["OutputName"]
    allowed = statement["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
    roles = {role for role, attribute in (ref["Fn::GetAtt"] for ref in allowed) if attribute == "Arn"}
    assert len(roles) == len(allowed) and all(resources[role]["Type"] == "AWS::IAM::Role" for role in roles)
    expected = {name.replace("-", "") + "TaskRole" for name in publishers}
    assert {role[: role.index("TaskRole") + len("TaskRole")] for role in roles} == expected  # auth is not a producer
    # EventBridge replaying the archive is not a principal of this account: the deny leaves it alone.
    assert statement["Condition"]["Bool"] == {"aws:PrincipalIsAWSService": "false"}


@pytest.mark.parametrize("variant", ["dev", "appmesh"])
def test_every_event_target_retries_into_a_dead_letter_queue_that_an_alarm_watches(dev, appmesh, variant):
    """The issue's bar: every queue and event target has a dead-letter queue with an alarm (and the alarm notifies)."""
    assert_every_event_target_retries_into_a_watched_dead_letter_queue({"dev": dev, "appmesh": appmesh}[variant])


def assert_every_event_target_retries_into_a_watched_dead_letter_queue(assembly) -> None:
    """Also run on variants with more event targets (tests/test_strangler_fig.py)."""
    for region in REGIONS:
        stacks = [s for s in assembly.templates if s.startswith(f"mf-{region}/")]
        dead_letter_queues = set()
        for stack in stacks:
            for queue in assembly.resources(stack, "AWS::SQS::Queue").values():
                redrive = queue["Properties"].get("RedrivePolicy")
                if redrive:
                    dead_letter_queues.add(redrive["deadLetterTargetArn"]["Fn::GetAtt"][0])
            for rule in assembly.resources(stack, "AWS::Events::Rule").values():
                for target in rule["Properties"]["Targets"]:
                    assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0, target
                    dead_letter_queues.add(target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0])
        # Every queue is a dead-letter queue or has one.
        for stack in stacks:
            for logical_id, queue in assembly.resources(stack, "AWS::SQS::Queue").items():
                assert logical_id in dead_letter_queues or "RedrivePolicy" in queue["Properties"], (stack, logical_id)
        watched = set()
        for alarm in assembly.resources(f"mf-{region}/observability", "AWS::CloudWatch::Alarm").values():
            properties = alarm["Properties"]
            for query in properties.get("Metrics", []):
                metric = query.get("MetricStat", {}).get("Metric", {})
                if metric.get("MetricName") == "ApproximateNumberOfMessagesVisible" and properties["Threshold"] == 0:
                    (dimension,) = metric["Dimensions"]
                    # The queue's name: a GetAtt in the same stack, or another stack's output named after the queue.
                    reference = json.dumps(dimension["Value"])
                    watched |= {queue for queue in dead_letter_queues if queue in reference}
                    assert properties["AlarmActions"] and properties["AlarmActions"] == properties["OKActions"]
        assert watched == dead_letter_queues and len(watched) >= 3


@pytest.mark.parametrize("variant", ["dev", "appmesh", "strangler"])
def test_only_its_own_source_queues_may_name_a_queue_as_their_dead_letter_queue(dev, appmesh, strangler, variant):
    """A dead-letter queue of SQS redrive allows exactly its source queues (byQueue); every other queue (event queues,
    and dead-letter queues only of rules and Lambda functions) allows none (denyAll): no other queue of the account
    can make one of them its dead-letter queue and pour messages in."""
    assembly = {"dev": dev, "appmesh": appmesh, "strangler": strangler}[variant]
    by_queue = 0
    for region in REGIONS:
        stacks = [s for s in assembly.templates if s.startswith(f"mf-{region}/")]
        queues = {logical_id: queue["Properties"] for stack in stacks
                  for logical_id, queue in assembly.resources(stack, "AWS::SQS::Queue").items()}
        assert len(queues) >= 4, region
        sources: dict[str, list[str]] = {}  # dead-letter queue -> names of the queues that redrive to it
        for properties in queues.values():
            if "RedrivePolicy" in properties:
                sources.setdefault(properties["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0], []).append(properties["QueueName"])
        for logical_id, properties in queues.items():
            policy = properties.get("RedriveAllowPolicy")
            assert policy, f"{region} {logical_id} allows any queue of the account to redrive into it"
            if logical_id not in sources:
                assert policy == {"redrivePermission": "denyAll"}, (region, logical_id)
                continue
            assert policy["redrivePermission"] == "byQueue", (region, logical_id)
            # Built from the source queue's name (a GetAtt would be a cycle with the source's redrive policy).
            allowed = [json.dumps(arn) for arn in policy["sourceQueueArns"]]
            for name, arn in zip(sorted(sources[logical_id]), sorted(allowed), strict=True):
                assert f":sqs:{region}:" in arn and arn.endswith(f':{name}"]]}}'), (region, logical_id, arn)
            by_queue += 1
    assert by_queue >= 4  # each region: every consumer's dead-letter queue
