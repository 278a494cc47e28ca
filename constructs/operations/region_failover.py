"""RegionFailoverAutomation: an SSM Automation document that points the edge's /api/* at one region."""

from __future__ import annotations

from typing import Sequence

from aws_cdk import aws_ssm as ssm
from constructs import Construct

# The key the edge's CloudFront Function reads (constructs/ingress/functions/select_api_origin.js).
ACTIVE_REGION_KEY = "active_region"


class RegionFailoverAutomation(Construct):
    """An Automation document ``document_name`` that sets ``active_region`` in the KeyValueStore
    ``key_value_store_arn`` to one of ``regions`` (the primary: back to normal) and checks that the store
    holds it: runbooks/region-failover.md, Action step 2 and Rollback.

    It runs with the permissions of whoever starts it (no AutomationAssumeRole): the regional stages'
    permissions boundaries do not extend to CloudFront, and moving all API traffic is a decision an
    operator signs with their own identity. Exposes ``document`` (``ssm.CfnDocument``).
    """

    def __init__(self, scope: Construct, construct_id: str, *, document_name: str, key_value_store_arn: str,
                 regions: Sequence[str]) -> None:
        super().__init__(scope, construct_id)
        if not regions:
            raise ValueError("regions=[] is invalid: name the regions /api/* may be sent to")
        store = {"Service": "cloudfront-keyvaluestore", "KvsARN": key_value_store_arn}
        self.document = ssm.CfnDocument(
            self, "Document", name=document_name, document_type="Automation", document_format="JSON",
            update_method="NewVersion",
            content={
                "schemaVersion": "0.3",
                "description": f"Sends /api/* to TargetRegion: sets {ACTIVE_REGION_KEY} in the edge's KeyValueStore "
                               f"(the primary, {regions[0]}, is the normal state). runbooks/region-failover.md",
                "parameters": {
                    "TargetRegion": {"type": "String", "allowedValues": list(regions),
                                     "description": "The region /api/* goes to from now on"},
                },
                # Unverified: the KeyValueStore API is SigV4A-only, which boto3 signs only with the AWS CRT;
                # AWS does not document that Automation's boto3 has it (README, "What it does not do").
                "mainSteps": [
                    # PutKey needs the store's current ETag: a change made meanwhile fails the step.
                    {"name": "ReadStore", "action": "aws:executeAwsApi", "onFailure": "Abort",
                     "inputs": {**store, "Api": "DescribeKeyValueStore"},
                     "outputs": [{"Name": "ETag", "Selector": "$.ETag", "Type": "String"}]},
                    {"name": "SetActiveRegion", "action": "aws:executeAwsApi", "onFailure": "Abort",
                     "inputs": {**store, "Api": "PutKey", "Key": ACTIVE_REGION_KEY, "Value": "{{ TargetRegion }}",
                                "IfMatch": "{{ ReadStore.ETag }}"}},
                    {"name": "CheckActiveRegion", "action": "aws:assertAwsResourceProperty", "onFailure": "Abort",
                     "inputs": {**store, "Api": "GetKey", "Key": ACTIVE_REGION_KEY,
                                "PropertySelector": "$.Value", "DesiredValues": ["{{ TargetRegion }}"]}},
                ],
            },
        )
