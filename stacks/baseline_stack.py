"""Baseline stack: what every other stack of the stage relies on, deployed first."""

from __future__ import annotations

from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_accessanalyzer as accessanalyzer
from constructs import Construct

from constructs.permissions_boundary import PermissionsBoundary



class BaselineStack(cdk.Stack):
    """The permissions boundary that every role of the stage carries, and the region's IAM Access
    Analyzer (``access_analyzer_name``; None leaves the region without one).

    It lives in its own stack so that it exists before any role that names it: CloudFormation
    creates resources of one stack in parallel, so a role beside its boundary could come first.
    The analyzer sits here because it is per account and region like the stage, depends on nothing
    and should watch the stage's resources from the first deploy on.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, boundary_name: str, allowed_regions: Sequence[str],
        access_analyzer_name: str | None = None, assumable_role_arns: Sequence[str] = (),
        ssm_managed_instance_role_arns: Sequence[str] = (), tag_reader_role_arns: Sequence[str] = (),
        key_value_store_writer_role_arns: Sequence[str] = (), invokable_function_name_prefix: str | None = None, **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.permissions_boundary = PermissionsBoundary(
            self,
            "PermissionsBoundary",
            policy_name=f"{boundary_name}-permissions-boundary",
            allowed_regions=allowed_regions,
            assumable_role_arns=assumable_role_arns,
            ssm_managed_instance_role_arns=ssm_managed_instance_role_arns,
            tag_reader_role_arns=tag_reader_role_arns,
            key_value_store_writer_role_arns=key_value_store_writer_role_arns,
            invokable_function_name_prefix=invokable_function_name_prefix,
        )
        # External access findings for this region's resources (and the account's roles): a bucket,
        # key, queue, secret or role that a principal outside the account can use shows up in the
        # IAM console. AWS allows one account-level analyzer per region.
        self.access_analyzer = accessanalyzer.CfnAnalyzer(
            self, "AccessAnalyzer", type="ACCOUNT", analyzer_name=access_analyzer_name,
        ) if access_analyzer_name else None
