"""ReplicaKey's custom-resource handler (constructs/service_data/replica_key_function) against botocore's Stubber
for KMS: it replicates, then completes only once DescribeKey in the replica's region says Enabled, within a bound;
on delete it schedules the replica's deletion unless retained. Each request and answer is checked against KMS's
API model. Sleeping and the clock are injected, so the polling takes no time.
"""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from harness import load_module

FUNCTION_DIR = Path(__file__).resolve().parents[2] / "constructs" / "service_data" / "replica_key_function"
handler = load_module("replica_key_handler", FUNCTION_DIR / "handler.py")

PRIMARY, REPLICA = "eu-central-1", "eu-west-1"
KEY_ID = "mrk-1234abcd12ab34cd56ef1234567890ab"
PRIMARY_ARN = f"arn:aws:kms:{PRIMARY}:123456789012:key/{KEY_ID}"
REPLICA_ARN = f"arn:aws:kms:{REPLICA}:123456789012:key/{KEY_ID}"
PROPERTIES = {
    "ServiceToken": "arn:aws:lambda:eu-central-1:123456789012:function:framework-onEvent",
    "PrimaryKeyArn": PRIMARY_ARN, "ReplicaRegion": REPLICA, "ReplicaKeyArn": REPLICA_ARN,
    "Description": "Replica of the auth service's key", "Tags": {"region": REPLICA, "project": "mf"}, "Retain": "false",
}


class Clock:
    """time.monotonic and time.sleep for the handler: sleeping moves the clock on."""

    def __init__(self):
        self.now, self.slept = 0.0, []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def kms():
    clients = {region: boto3.client("kms", region_name=region, aws_access_key_id="testing", aws_secret_access_key="testing")
               for region in (PRIMARY, REPLICA)}
    stubs = {region: Stubber(client) for region, client in clients.items()}
    for stub in stubs.values():
        stub.activate()
    yield clients, stubs
    for stub in stubs.values():
        stub.assert_no_pending_responses()
        stub.deactivate()


def _event(request, **properties):
    return {"RequestType": request, "ResourceProperties": {**PROPERTIES, **properties}, "LogicalResourceId": "authdataKeyeuwest1"}


def _run(kms, event, clock=None):
    clients, _ = kms
    clock = clock or Clock()
    return handler.on_event(event, lambda region: clients[region], sleep=clock.sleep, clock=clock)


def _replicated(stubs):
    stubs[PRIMARY].add_response("replicate_key", {"ReplicaKeyMetadata": {"KeyId": KEY_ID, "Arn": REPLICA_ARN}}, {
        "KeyId": PRIMARY_ARN, "ReplicaRegion": REPLICA, "Description": PROPERTIES["Description"],
        "Tags": [{"TagKey": "project", "TagValue": "mf"}, {"TagKey": "region", "TagValue": REPLICA}]})


def _described(stubs, *states):
    for state in states:
        stubs[REPLICA].add_response("describe_key", {"KeyMetadata": {"KeyId": KEY_ID, "Arn": REPLICA_ARN, "KeyState": state}},
                                    {"KeyId": REPLICA_ARN})


def test_create_replicates_then_completes_only_once_the_replica_is_enabled(kms):
    _, stubs = kms
    _replicated(stubs)
    _described(stubs, "Creating", "Creating", "Enabled")
    clock = Clock()
    assert _run(kms, _event("Create"), clock) == {"PhysicalResourceId": REPLICA_ARN, "Data": {"Arn": REPLICA_ARN}}
    # Asked three times, backing off between them.
    assert clock.slept == [5, 10]


def test_a_replica_that_already_exists_is_waited_for_like_a_new_one(kms):
    _, stubs = kms
    stubs[PRIMARY].add_client_error("replicate_key", "AlreadyExistsException", "already a replica in eu-west-1")
    _described(stubs, "Creating", "Enabled")
    assert _run(kms, _event("Create"))["PhysicalResourceId"] == REPLICA_ARN


def test_a_replica_still_creating_after_14_minutes_fails_the_create_with_a_clear_message(kms):
    _, stubs = kms
    _replicated(stubs)
    # 5 + 10 + 20 + 30 s ..., until 840 s have passed: 31 answers, all Creating.
    _described(stubs, *["Creating"] * 31)
    clock = Clock()
    with pytest.raises(handler.ReplicaNotEnabled, match=rf"replica key {REPLICA_ARN} is still Creating after 840 s"):
        _run(kms, _event("Create"), clock)
    assert clock.now == handler.MAX_WAIT_SECONDS == 14 * 60 and max(clock.slept) == 30


def test_an_existing_replica_that_cannot_become_enabled_fails_at_once(kms):
    _, stubs = kms
    stubs[PRIMARY].add_client_error("replicate_key", "AlreadyExistsException", "already a replica in eu-west-1")
    _described(stubs, "PendingDeletion")
    with pytest.raises(handler.ReplicaNotEnabled, match=r"is PendingDeletion, not Enabled"):
        _run(kms, _event("Create"))


def test_delete_schedules_the_replicas_deletion_in_its_region(kms):
    _, stubs = kms
    stubs[REPLICA].add_response("schedule_key_deletion", {"KeyId": REPLICA_ARN},
                                {"KeyId": REPLICA_ARN, "PendingWindowInDays": 7})
    assert _run(kms, _event("Delete"))["PhysicalResourceId"] == REPLICA_ARN


@pytest.mark.parametrize("error", ["NotFoundException", "KMSInvalidStateException"])
def test_delete_of_a_replica_gone_or_already_pending_deletion_succeeds(kms, error):
    _, stubs = kms
    stubs[REPLICA].add_client_error("schedule_key_deletion", error, "no")
    assert _run(kms, _event("Delete"))["PhysicalResourceId"] == REPLICA_ARN


def test_a_retained_replica_outlives_the_resource_and_an_update_changes_nothing(kms):
    # No stubbed answer: any KMS call would fail the test.
    assert _run(kms, _event("Delete", Retain="true"))["PhysicalResourceId"] == REPLICA_ARN
    assert _run(kms, _event("Update"))["PhysicalResourceId"] == REPLICA_ARN
