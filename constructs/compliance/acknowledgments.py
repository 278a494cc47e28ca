"""cdk-nag acknowledgments: one finding, one construct, one specific reason."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import IConstruct

# cdk-nag rule IDs start with their pack's name; CDK's validation API wants "<pack>::<rule ID>".
_NAG_PACKS = ("AwsSolutions", "NIST.800.53.R5")
MIN_REASON_LENGTH = 40


def acknowledge_nag(scope: IConstruct, rule_id: str, reason: str) -> None:
    """Acknowledge one cdk-nag finding on ``scope`` (and only its subtree), saying why it is right here.

    ``rule_id`` is the ID cdk-nag reports, including any granular part, for example
    ``AwsSolutions-IAM5[Action::ecr:*]``.
    """
    pack = next((p for p in _NAG_PACKS if rule_id.startswith(p + "-")), None)
    if pack is None:
        raise ValueError(f"rule_id={rule_id!r} is invalid: expected a rule of {', '.join(_NAG_PACKS)}")
    if len(reason) < MIN_REASON_LENGTH:
        raise ValueError(f"reason={reason!r} is invalid: give a specific reason of {MIN_REASON_LENGTH}+ characters")
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=f"{pack}::{rule_id}", reason=reason))
