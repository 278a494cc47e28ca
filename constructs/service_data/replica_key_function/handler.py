"""The on-event handler of ReplicaKey's custom resource (``Custom::KmsReplicaKey``), behind CDK's ``cr.Provider``.

Create: ``KMS.ReplicateKey`` in the primary's region, then wait in the replica's region until DescribeKey says
``Enabled``: KMS creates a replica in the ``Creating`` state, which takes no cryptographic operation (the global
table's replica and the secret's replica would fail or go missing) and can last minutes right after the primary
was created. A replica that already exists (``AlreadyExistsException``: a retried create, or this resource
replacing an older one for the same key) is waited for the same way. Not ``Enabled`` within ``MAX_WAIT_SECONDS``:
the create fails with a message naming the key and its state (the provider reports it to CloudFormation).
Update: nothing (the replica's region and key make its ARN, the physical ID; tags and description are the
creation's). Delete: schedule the replica's deletion unless ``Retain`` is ``"true"``; a replica gone or already
pending deletion is left as it is. boto3 only (the Lambda runtime's own).
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
# KMS needs at least 7 days before it deletes a key; the shortest wait for a replica nobody uses.
DELETION_WINDOW_DAYS = 7
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
    """``kms_client(region)``: a KMS client in that region (the primary's is in its key's ARN)."""
    props = event["ResourceProperties"]
    key_arn, region = props["ReplicaKeyArn"], props["ReplicaRegion"]
    request = event["RequestType"]
    if request == "Create":
        replicate(kms_client(props["PrimaryKeyArn"].split(":")[3]), props)
        wait_until_enabled(kms_client(region), key_arn, sleep=sleep, clock=clock)
    elif request == "Delete" and props.get("Retain") != "true":
        schedule_deletion(kms_client(region), key_arn)
    else:
        LOG.info("%s %s: nothing to do", request, key_arn)
    return {"PhysicalResourceId": key_arn, "Data": {"Arn": key_arn}}


def replicate(kms: Any, props: dict[str, Any]) -> None:
    tags = [{"TagKey": key, "TagValue": value} for key, value in sorted(props.get("Tags", {}).items())]
    try:
        kms.replicate_key(KeyId=props["PrimaryKeyArn"], ReplicaRegion=props["ReplicaRegion"],
                          Description=props["Description"], **({"Tags": tags} if tags else {}))
        LOG.info("Replicated %s into %s", props["PrimaryKeyArn"], props["ReplicaRegion"])
    except kms.exceptions.AlreadyExistsException:
        LOG.info("%s already has a replica in %s: waiting for it", props["PrimaryKeyArn"], props["ReplicaRegion"])


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


def schedule_deletion(kms: Any, key_arn: str) -> None:
    try:
        kms.schedule_key_deletion(KeyId=key_arn, PendingWindowInDays=DELETION_WINDOW_DAYS)
        LOG.info("Scheduled %s for deletion in %s days", key_arn, DELETION_WINDOW_DAYS)
    except (kms.exceptions.NotFoundException, kms.exceptions.KMSInvalidStateException) as error:
        # Gone already, or already pending deletion: nothing left to do.
        LOG.info("%s: %s; nothing to delete", key_arn, error)
