"""target_dead_letter_queue: where an EventBridge target's (or an asynchronous Lambda's) failed events land."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from constructs.compliance import acknowledge_nag, skip_checkov


def target_dead_letter_queue(scope: Construct, construct_id: str, *, dead_letter_of: str, senders: str,
                             queue_name: str | None = None) -> sqs.Queue:
    """A queue kept 14 days, encrypted with SQS-managed keys, that no other queue may name as its dead-letter
    queue, with the reasons two scanner findings do not apply. ``dead_letter_of`` names whose failures land in
    it (for the acknowledgment), ``senders`` the services that send to it (why not a customer managed key)."""
    queue = sqs.Queue(
        scope, construct_id, queue_name=queue_name, encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
        retention_period=cdk.Duration.days(14), removal_policy=cdk.RemovalPolicy.DESTROY,
        # A target's and a function's only: no queue may name it as its dead-letter queue.
        redrive_allow_policy=sqs.RedriveAllowPolicy(redrive_permission=sqs.RedrivePermission.DENY_ALL),
    )
    acknowledge_nag(queue, f"This queue is the dead-letter queue of {dead_letter_of}, which cdk-nag does not read; a "
                           "dead-letter queue needs no dead-letter queue of its own", "AwsSolutions-SQS3")
    skip_checkov(queue.node.default_child, {"CKV_AWS_27": (
        "Encrypted at rest with SQS-managed keys (SqsManagedSseEnabled), which checkov's check does not read; a "
        f"customer managed key would need a key policy letting {senders} use it")})
    return queue
