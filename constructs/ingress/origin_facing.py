"""The ID of CloudFront's origin-facing managed prefix list, looked up in the region at deploy time."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from aws_cdk import custom_resources as cr
from constructs import Construct

from constructs.compliance import acknowledge_nag

PREFIX_LIST_NAME = "com.amazonaws.global.cloudfront.origin-facing"


class CloudFrontOriginFacing(Construct):
    """``peer``: the addresses CloudFront reaches origins from, VPC origins included.

    The prefix list's ID differs by region and synth has no AWS credentials to look it up, so a
    custom resource reads it (ec2:DescribeManagedPrefixLists) when CloudFormation deploys the
    stack. The list has some 55 entries and each counts as a rule against the security group's
    quota of 60 inbound rules: admit it on one port only.
    """

    def __init__(self, scope: Construct, construct_id: str, *, log_group: logs.ILogGroup) -> None:
        super().__init__(scope, construct_id)
        lookup = cr.AwsCustomResource(
            self, "Lookup",
            on_update=cr.AwsSdkCall(
                service="EC2", action="describeManagedPrefixLists",
                parameters={"Filters": [{"Name": "prefix-list-name", "Values": [PREFIX_LIST_NAME]}]},
                physical_resource_id=cr.PhysicalResourceId.of(PREFIX_LIST_NAME),
                output_paths=["PrefixLists.0.PrefixListId"],
            ),
            policy=cr.AwsCustomResourcePolicy.from_sdk_calls(resources=cr.AwsCustomResourcePolicy.ANY_RESOURCE),
            install_latest_aws_sdk=False,
            log_group=log_group,  # the handler's logs, with the stack's retention and encryption
        )
        acknowledge_nag(
            lookup,
            "ec2:DescribeManagedPrefixLists supports no resource-level permissions, so its statement must name "
            "Resource *; it is the only action this custom resource's role is given.",
            "AwsSolutions-IAM5[Resource::*]",
        )
        acknowledge_nag(
            lookup,
            "CDK writes the custom resource's single ec2:DescribeManagedPrefixLists grant as an inline policy "
            "that lives and dies with the custom resource.",
            "NIST.800.53.R5-IAMNoInlinePolicy",
        )
        self.prefix_list_id = lookup.get_response_field("PrefixLists.0.PrefixListId")
        self.peer = ec2.Peer.prefix_list(self.prefix_list_id)
