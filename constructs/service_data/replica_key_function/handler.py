"""The on-event handler of ReplicaKey's ``Ready`` custom resource (``Custom::KmsReplicaKeyReady``), behind CDK's
``cr.Provider``.

The replica itself is made by ReplicaKey's ``AwsCustomResource`` (``KMS.ReplicateKey``), which returns while KMS
still has the replica ``Creating``: a state that takes no cryptographic operation (the global table's replica and
the secret's replica would fail or go missing) and can last minutes right after the primary was created.
Create and Update: ask DescribeKey in the replica's region until it says ``Enabled`` (after 5, 10, 20, then every
30 s); still ``Creating`` after ``MAX_WAIT_SECONDS``, or in a state waiting will not change (``Disabled``,
``PendingDeletion``, ...): fail with a message naming the key and its state (the provider reports it to
CloudFormation). Delete: nothing, no call at all (the replicate resource decides the replica's fate).
boto3 only (the Lambda runtime's own).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

LOG = logging.getLogger()
LOG.setLevel(logging.INFO)
# Lambda's limit is 15 minutes (the function's timeout); the last minute is left to fail with a message.
MAX_WAIT_SECONDS = 14 * 60
FIRST_DELAY_SECONDS = 5
MAX_DELAY_SECONDS = 30
# States a new replica passes through on its way to Enabled; any other (Disabled, PendingDeletion, ...) will not
# become Enabled by waiting.
WAIT_STATES = ("Creating", "Updating")


class ReplicaNotEnabled(Exception):
    pass


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    import boto3

    return on_event(event, lambda region: boto3.client("kms", region_name=region))


def on_event(event: dict[str, Any], kms_client: Callable[[str], Any], *, sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """``kms_client(region)``: a KMS client in that region."""
    props = event["ResourceProperties"]
    key_arn, region = props["ReplicaKeyArn"], props["ReplicaRegion"]
    request = event["RequestType"]
    if request in ("Create", "Update"):
        wait_until_enabled(kms_client(region), key_arn, sleep=sleep, clock=clock)
    else:
        LOG.info("%s %s: nothing to do", request, key_arn)
    return {"PhysicalResourceId": key_arn, "Data": {"Arn": key_arn}}


def wait_until_enabled(kms: Any, key_arn: str, *, sleep: Callable[[float], None], clock: Callable[[], float],
                       max_wait: float = MAX_WAIT_SECONDS) -> None:
    deadline, delay = clock() + max_wait, FIRST_DELAY_SECONDS
    while True:
        state = kms.describe_key(KeyId=key_arn)["KeyMetadata"]["KeyState"]
        if state == "Enabled":
            LOG.info("%s is Enabled", key_arn)
            return
        if state not in WAIT_STATES:
            raise ReplicaNotEnabled(f"replica key {key_arn} is {state}, not Enabled: it cannot encrypt the table's or "
                                    "the secret's replica; enable it (or cancel its deletion) and deploy again")
        remaining = deadline - clock()
        if remaining <= 0:
            raise ReplicaNotEnabled(f"replica key {key_arn} is still {state} after {max_wait:.0f} s: KMS has not finished "
                                    "the replica; deploy again once DescribeKey in its region says Enabled")
        LOG.info("%s is %s; asking again in %s s", key_arn, state, min(delay, remaining))
        sleep(min(delay, remaining))
        delay = min(delay * 2, MAX_DELAY_SECONDS)
