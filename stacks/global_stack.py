"""Global stack: account-wide settings that exist once, deployed with the primary region."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import Construct

from constructs.container_registry import RegistryReplication

from .config import FoundationConfig


class GlobalStack(cdk.Stack):
    """Holds settings that must be configured once per account rather than per region.

    Today: ECR replication from the primary region's registry to every other region, so the
    stage creates this stack only when the app has more than one region.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: FoundationConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.registry_replication = RegistryReplication(
            self,
            "RegistryReplication",
            destination_regions=config.other_regions(self.region),
            repository_prefix=config.prefix,
        )
