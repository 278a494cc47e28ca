"""Sets the edge's API region switch: ``active_region`` in the CloudFront KeyValueStore.

Started by the Automation document ``<prefix>-region-failover`` (constructs/operations/region_failover.py) with
``{"target_region": "<region>"}``. The KeyValueStore API accepts SigV4A signatures only, which boto3 makes only
with the AWS CRT: the function's layer brings boto3 with ``botocore[crt]`` (failover_layer/requirements.txt).

Reads the store's ETag, puts the key with that ETag as If-Match (a change made meanwhile fails the put), reads
the key back and raises unless it holds the target. Returns ``{"previous": <value or None>, "active_region":
<target>}``; the document checks that payload, so a raised error fails the execution.
"""

from __future__ import annotations

import logging
import os

import boto3

KEY = "active_region"  # what the edge's CloudFront Function reads (constructs/ingress/functions)
# The botocore service models this function loads. The layer ships no others: region_failover.py leaves the
# rest of botocore's data folder out (2,200 files, 26 MB that every synth would hash and copy).
SERVICE_MODELS = ("cloudfront-keyvaluestore",)

logger = logging.getLogger()
logger.setLevel(logging.INFO)


def handler(event, context):
    regions = os.environ["REGIONS"].split(",")
    target = event.get("target_region") if isinstance(event, dict) else None
    # An unknown value would silently send /api/* to the primary: refuse it before touching the store.
    if target not in regions:
        raise ValueError(f"target_region={target!r} is not one of the configured regions {regions}")
    store = os.environ["KEY_VALUE_STORE_ARN"]
    # The store's API is global; the region only picks the partition (the endpoint comes from the ARN).
    client = boto3.client(SERVICE_MODELS[0], region_name="us-east-1")

    etag = client.describe_key_value_store(KvsARN=store)["ETag"]
    try:
        previous = client.get_key(KvsARN=store, Key=KEY)["Value"]
    except client.exceptions.ResourceNotFoundException:
        previous = None  # no key: the edge sends /api/* to the primary
    client.put_key(KvsARN=store, Key=KEY, Value=target, IfMatch=etag)
    now = client.get_key(KvsARN=store, Key=KEY)["Value"]
    if now != target:
        raise RuntimeError(f"{KEY} reads {now!r} after putting {target!r}: someone changed it meanwhile")
    logger.info("%s: %s -> %s", KEY, previous, target)
    return {"previous": previous, "active_region": target}
