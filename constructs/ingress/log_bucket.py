"""The S3 bucket an AWS service writes its logs to: private, TLS only, versioned, expiring."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_s3 as s3
from constructs import Construct

from constructs.compliance import acknowledge_nag, skip_checkov


def log_destination_bucket(scope: Construct, construct_id: str, *, days: int, writer: str,
                           object_ownership: s3.ObjectOwnership, kms_reason: str) -> s3.Bucket:
    """A bucket ``writer`` (e.g. "Elastic Load Balancing") delivers logs to, kept ``days`` days.

    Encrypted with S3-managed keys; ``kms_reason`` says why not with a customer KMS key (the
    acknowledgment of NIST.800.53.R5-S3DefaultEncryptionKMS). Retained when the stack is deleted.
    """
    if not 1 <= days <= 3650:
        raise ValueError(f"days={days} is invalid: expected 1 to 3650")
    bucket = s3.Bucket(
        scope, construct_id,
        encryption=s3.BucketEncryption.S3_MANAGED,
        enforce_ssl=True,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        object_ownership=object_ownership,
        versioned=True,
        lifecycle_rules=[s3.LifecycleRule(
            expiration=cdk.Duration.days(days),
            noncurrent_version_expiration=cdk.Duration.days(1),
            abort_incomplete_multipart_upload_after=cdk.Duration.days(1),
        )],
        removal_policy=cdk.RemovalPolicy.RETAIN,
    )
    acknowledge_nag(
        bucket,
        f"This bucket receives {writer}'s logs; logging its own access to another bucket would only move the "
        "question one bucket further.",
        "AwsSolutions-S1", "NIST.800.53.R5-S3BucketLoggingEnabled",
    )
    acknowledge_nag(bucket, kms_reason, "NIST.800.53.R5-S3DefaultEncryptionKMS")
    acknowledge_nag(
        bucket,
        "The logs expire after the configured days and describe only resources of this stack; a copy in another "
        "region would outlive nothing they are needed for.",
        "NIST.800.53.R5-S3BucketReplicationEnabled",
    )
    skip_checkov(bucket.node.default_child, {
        "CKV_AWS_18": "this bucket is the log destination; logging it into another bucket only moves the question",
        "CKV_AWS_145": kms_reason,
    })
    return bucket
