"""cdk-nag acknowledgments: named findings, on one construct, with one specific reason."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import IConstruct

# cdk-nag rule IDs start with their pack's name; CDK's validation API wants "<pack>::<rule ID>".
_NAG_PACKS = ("AwsSolutions", "NIST.800.53.R5")
MIN_REASON_LENGTH = 40


def acknowledge_nag(scope: IConstruct, reason: str, *rule_ids: str) -> None:
    """Acknowledge cdk-nag findings on ``scope`` (and only its subtree), saying why they are right here.

    Each rule ID is the one cdk-nag reports, including any granular part, for example
    ``AwsSolutions-IAM5[Action::ecr:*]``; a bare ``AwsSolutions-IAM5`` does not cover those.
    """
    if len(reason) < MIN_REASON_LENGTH:
        raise ValueError(f"reason={reason!r} is invalid: give a specific reason of {MIN_REASON_LENGTH}+ characters")
    if not rule_ids:
        raise ValueError("rule_ids is empty: name each cdk-nag finding to acknowledge")
    acknowledgments = []
    for rule_id in rule_ids:
        pack = next((p for p in _NAG_PACKS if rule_id.startswith(p + "-")), None)
        if pack is None:
            raise ValueError(f"rule_id={rule_id!r} is invalid: expected a rule of {', '.join(_NAG_PACKS)}")
        acknowledgments.append(cdk.Acknowledgment(id=f"{pack}::{rule_id}", reason=reason))
    cdk.Validations.of(scope).acknowledge(*acknowledgments)


def arn_as_nag_shows(scope: IConstruct, service: str, resource: str) -> str:
    """An ARN of ``scope``'s stack account and region as cdk-nag prints it in a granular finding ID
    (unresolved pseudo parameters as ``<AWS::...>``), e.g. for ``AwsSolutions-IAM5[Resource::<arn>]``."""
    stack = cdk.Stack.of(scope)

    def shown(value: str, pseudo: str) -> str:
        return f"<AWS::{pseudo}>" if cdk.Token.is_unresolved(value) else value

    return f"arn:{shown(stack.partition, 'Partition')}:{service}:{shown(stack.region, 'Region')}:{shown(stack.account, 'AccountId')}:{resource}"
