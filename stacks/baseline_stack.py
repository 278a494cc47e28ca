"""Baseline stack: what every other stack of the stage relies on, deployed first."""

from __future__ import annotations

from typing import Sequence

import aws_cdk as cdk
from constructs import Construct

from constructs.permissions_boundary import PermissionsBoundary



class BaselineStack(cdk.Stack):
    """The permissions boundary that every role of the stage carries.

    It lives in its own stack so that it exists before any role that names it: CloudFormation
    creates resources of one stack in parallel, so a role beside its boundary could come first.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, boundary_name: str, allowed_regions: Sequence[str],
        assumable_role_arns: Sequence[str] = (), **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.permissions_boundary = PermissionsBoundary(
            self,
            "PermissionsBoundary",
            policy_name=f"{boundary_name}-permissions-boundary",
            allowed_regions=allowed_regions,
            assumable_role_arns=assumable_role_arns,
        )
