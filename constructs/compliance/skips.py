"""Scanner skips that travel with the resource they are about, each with its reason.

cdk-nag findings are acknowledged with ``cdk.Validations.of(construct).acknowledge`` where the
construct is made. checkov reads skips from a resource's CloudFormation metadata; these helpers
write them there, so a skip sits on exactly one resource and names why.
"""

from __future__ import annotations

import re

import aws_cdk as cdk
import jsii
from constructs import IConstruct

_CHECKOV_ID = re.compile(r"^CKV2?_AWS_[0-9]+$")


def skip_checkov(resource: cdk.CfnResource, check_id: str, reason: str) -> None:
    """Skip one checkov check on one CloudFormation resource, with its reason."""
    if not _CHECKOV_ID.match(check_id):
        raise ValueError(f"check_id={check_id!r} is invalid: expected a checkov AWS check ID such as CKV_AWS_111")
    if len(reason) < 20:
        raise ValueError(f"reason={reason!r} is invalid: say specifically why the check does not apply")
    metadata = resource.get_metadata("checkov") or {"skip": []}
    metadata["skip"].append({"id": check_id, "comment": reason})
    resource.add_metadata("checkov", metadata)


# The Lambda functions that CDK's CustomResourceProvider framework creates (for example the one
# that empties the VPC's default security group) run only when CloudFormation invokes them during
# a deployment. Their shape is fixed by CDK, so the reasons apply to every such handler.
_PROVIDER_HANDLER_SKIPS = {
    "CKV_AWS_115": "CDK custom resource handler: CloudFormation invokes it a few times per deployment, so a reserved concurrency limit protects nothing",
    "CKV_AWS_116": "CDK custom resource handler: CloudFormation invokes it synchronously and receives its failure, so a dead-letter queue would never be read",
    "CKV_AWS_117": "CDK custom resource handler: it only calls AWS control-plane APIs, which it reaches without a VPC attachment",
}


@jsii.implements(cdk.IAspect)
class CdkProviderHandlerSkips:
    """Aspect: give every CDK custom-resource provider handler its checkov skips."""

    def visit(self, node: IConstruct) -> None:
        if (
            isinstance(node, cdk.CfnResource)
            and node.cfn_resource_type == "AWS::Lambda::Function"
            and node.node.id == "Handler"
            and node.node.scope is not None
            and node.node.scope.node.id.endswith("CustomResourceProvider")
        ):
            for check_id, reason in _PROVIDER_HANDLER_SKIPS.items():
                skip_checkov(node, check_id, reason)
