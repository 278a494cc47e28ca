"""CDK's own custom-resource provider resources: tagged like ours, and their checkov skips explained."""

from __future__ import annotations

from typing import Mapping

import aws_cdk as cdk
import jsii
from constructs import IConstruct

from .skips import skip_checkov

# CDK's CustomResourceProvider framework (used, for example, to empty the VPC's default security
# group) makes a Lambda function and its role as raw CfnResources. They run only when
# CloudFormation invokes them during a deployment, and their shape is fixed by CDK.
_HANDLER_SKIPS = {
    "CKV_AWS_115": "CDK custom resource handler: CloudFormation invokes it a few times per deployment, so a reserved concurrency limit protects nothing",
    "CKV_AWS_116": "CDK custom resource handler: CloudFormation invokes it synchronously and receives its failure, so a dead-letter queue would never be read",
    "CKV_AWS_117": "CDK custom resource handler: it only calls AWS control-plane APIs, which it reaches without a VPC attachment",
}
_TAGGABLE_PROVIDER_TYPES = ("AWS::IAM::Role", "AWS::Lambda::Function")


@jsii.implements(cdk.IAspect)
class CdkProviderResources:
    """Aspect: tag CDK's provider roles and handlers (``cdk.Tags`` cannot reach raw CfnResources)
    and give each handler its checkov skips."""

    def __init__(self, tags: Mapping[str, str]) -> None:
        self._tags = [{"Key": key, "Value": value} for key, value in sorted(tags.items())]

    def visit(self, node: IConstruct) -> None:
        if not (
            isinstance(node, cdk.CfnResource)
            and node.cfn_resource_type in _TAGGABLE_PROVIDER_TYPES
            and node.node.scope is not None
            and node.node.scope.node.id.endswith("CustomResourceProvider")
        ):
            return
        node.add_property_override("Tags", self._tags)
        if node.cfn_resource_type == "AWS::Lambda::Function":
            for check_id, reason in _HANDLER_SKIPS.items():
                skip_checkov(node, check_id, reason)
