"""ReplicaKey's Ready handler (constructs/service_data/replica_key_function) against botocore's Stubber for KMS: it
completes only once DescribeKey in the replica's region says Enabled, within a bound, fails at once on a state that
will not become Enabled, and on delete calls nothing. Each request and answer is checked against KMS's API model.
Sleeping and the clock are injected, so the polling takes no time.
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
    "ReplicaKeyArn": REPLICA_ARN, "ReplicaRegion": REPLICA,
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
    return {"RequestType": request, "ResourceProperties": {**PROPERTIES, **properties}, "LogicalResourceId": "authdataKeyeuwest1Ready"}


def _run(kms, event, clock=None):
    clients, _ = kms
    clock = clock or Clock()
    return handler.on_event(event, lambda region: clients[region], sleep=clock.sleep, clock=clock)


def _described(stubs, *states):
    for state in states:
        stubs[REPLICA].add_response("describe_key", {"KeyMetadata": {"KeyId": KEY_ID, "Arn": REPLICA_ARN, "KeyState": state}},
                                    {"KeyId": REPLICA_ARN})


@pytest.mark.parametrize("request_type", ["Create", "Update"])
def test_completes_only_once_the_replica_is_enabled(kms, request_type):
    _, stubs = kms
    _described(stubs, "Creating", "Creating", "Enabled")
    clock = Clock()
    assert _run(kms, _event(request_type), clock) == {"PhysicalResourceId": REPLICA_ARN, "Data": {"Arn": REPLICA_ARN}}
    # Asked three times, backing off between them.
    assert clock.slept == [5, 10]


def test_a_replica_already_enabled_completes_at_once(kms):
    """An upgraded stack: the Ready resource is new, the replica long Enabled."""
    _, stubs = kms
    _described(stubs, "Enabled")
    clock = Clock()
    assert _run(kms, _event("Create"), clock)["PhysicalResourceId"] == REPLICA_ARN
    assert clock.slept == []


def test_a_replica_still_creating_after_14_minutes_fails_with_a_clear_message(kms):
    _, stubs = kms
    # 5 + 10 + 20 + 30 s ..., until 840 s have passed: 31 answers, all Creating.
    _described(stubs, *["Creating"] * 31)
    clock = Clock()
    with pytest.raises(handler.ReplicaNotEnabled, match=rf"replica key {REPLICA_ARN} is still Creating after 840 s"):
        _run(kms, _event("Create"), clock)
    assert clock.now == handler.MAX_WAIT_SECONDS == 14 * 60 and max(clock.slept) == 30


@pytest.mark.parametrize("state", ["PendingDeletion", "Disabled", "PendingImport", "Unavailable"])
def test_a_replica_that_cannot_become_enabled_fails_at_once(kms, state):
    _, stubs = kms
    _described(stubs, state)
    clock = Clock()
    with pytest.raises(handler.ReplicaNotEnabled, match=rf"is {state}, not Enabled"):
        _run(kms, _event("Create"), clock)
    assert clock.slept == []


def test_delete_calls_nothing(kms):
    # No stubbed answer: any KMS call would fail the test; and no client is even asked for.
    clients, _ = kms
    asked = []
    clock = Clock()
    result = handler.on_event(_event("Delete"), lambda region: asked.append(region) or clients[region], sleep=clock.sleep, clock=clock)
    assert result["PhysicalResourceId"] == REPLICA_ARN and asked == []
