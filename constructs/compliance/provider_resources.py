"""CDK's own custom-resource provider resources: tagged like ours, their scanner skips explained."""

from __future__ import annotations

from typing import Mapping

import aws_cdk as cdk

from .acknowledgments import acknowledge_nag
from .skips import skip_cfn_lint, skip_checkov

# CDK's CustomResourceProvider framework (used, for example, to empty the VPC's default security
# group) adds a stack-level singleton holding a Lambda function and its role as raw CfnResources.
# The handler runs only when CloudFormation invokes it during a deployment; its shape is fixed by CDK.
_HANDLER_SKIPS = {
    "CKV_AWS_115": "CDK custom resource handler: CloudFormation invokes it a few times per deployment, so a reserved concurrency limit protects nothing",
    "CKV_AWS_116": "CDK custom resource handler: CloudFormation invokes it synchronously and receives its failure, so a dead-letter queue would never be read",
    "CKV_AWS_117": "CDK custom resource handler: it only calls AWS control-plane APIs, which it reaches without a VPC attachment",
}
_TAGGABLE_PROVIDER_TYPES = ("AWS::IAM::Role", "AWS::Lambda::Function")


# The stack-level singleton Lambda function behind every custom_resources.AwsCustomResource.
AWS_CUSTOM_RESOURCE_HANDLER_ID = "AWS679f53fac002430cb0da5b7982bd2287"
_HANDLER_NAG_REASONS = {
    "NIST.800.53.R5-LambdaConcurrency": "CDK's AwsCustomResource handler: CloudFormation invokes it a few times per deployment, so reserved concurrency would protect nothing",
    "NIST.800.53.R5-LambdaDLQ": "CDK's AwsCustomResource handler: CloudFormation invokes it synchronously and sees every failure, so a dead-letter queue would never be read",
    "NIST.800.53.R5-LambdaInsideVPC": "CDK's AwsCustomResource handler: it only calls AWS APIs named in its role's policy and needs no network path into the VPC",
}


def _adopt_aws_custom_resource_handler(stack: cdk.Stack) -> None:
    handler = stack.node.try_find_child(AWS_CUSTOM_RESOURCE_HANDLER_ID)
    if handler is None:
        return
    for rule_id, reason in _HANDLER_NAG_REASONS.items():
        acknowledge_nag(handler, reason, rule_id)
    acknowledge_nag(
        handler,
        "CDK's AwsCustomResource handler role: AWSLambdaBasicExecutionRole grants only writing the handler's own logs; "
        "what the handler does is granted separately, per call",
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
    )
    skip_checkov(handler.node.default_child, {
        "CKV_AWS_115": _HANDLER_SKIPS["CKV_AWS_115"], "CKV_AWS_116": _HANDLER_SKIPS["CKV_AWS_116"],
        "CKV_AWS_117": _HANDLER_SKIPS["CKV_AWS_117"],
    })
    skip_cfn_lint(handler.node.default_child, {"W3005": "CDK writes a DependsOn on the handler's role that its GetAtt already implies"})


def adopt_cdk_providers(stack: cdk.Stack, tags: Mapping[str, str]) -> None:
    """Tag the role and handler of every CDK custom-resource provider in ``stack`` and give each
    handler its checkov skips and cfn-lint exception. ``cdk.Tags`` cannot reach these raw
    CfnResources. The AwsCustomResource handler (an L2 function, tagged like the rest) gets its
    nag acknowledgments and checkov skips.

    Call it once the stack's constructs exist. (A plain function rather than an aspect: an aspect
    written in Python is called back from jsii for every construct, which slows synth.)
    """
    tag_list = [{"Key": key, "Value": value} for key, value in sorted(tags.items())]
    for provider in stack.node.children:
        if not provider.node.id.endswith("CustomResourceProvider"):
            continue
        for resource in provider.node.children:
            if isinstance(resource, cdk.CfnResource) and resource.cfn_resource_type in _TAGGABLE_PROVIDER_TYPES:
                resource.add_property_override("Tags", tag_list)
                if resource.cfn_resource_type == "AWS::Lambda::Function":
                    skip_checkov(resource, _HANDLER_SKIPS)
                    skip_cfn_lint(resource, {"W3005": "CDK writes a DependsOn on the handler's role that its GetAtt already implies"})
    _adopt_aws_custom_resource_handler(stack)
