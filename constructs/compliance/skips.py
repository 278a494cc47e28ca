"""checkov skips that travel with the resource they are about, each with its reason.

checkov reads skips from a resource's CloudFormation metadata; ``skip_checkov`` writes them there,
so a skip sits on exactly one resource and names why. (cdk-nag findings are acknowledged where the
construct is made: see acknowledgments.py.)
"""

from __future__ import annotations

import re
from typing import Mapping

import aws_cdk as cdk

_CHECKOV_ID = re.compile(r"^CKV2?_AWS_[0-9]+$")


def skip_checkov(resource: cdk.CfnResource, reasons_by_check_id: Mapping[str, str]) -> None:
    """Skip checkov checks on one CloudFormation resource: check ID -> why it does not apply."""
    skips = []
    for check_id, reason in reasons_by_check_id.items():
        if not _CHECKOV_ID.match(check_id):
            raise ValueError(f"check_id={check_id!r} is invalid: expected a checkov AWS check ID such as CKV_AWS_111")
        if len(reason) < 20:
            raise ValueError(f"reason={reason!r} for {check_id} is invalid: say specifically why the check does not apply")
        skips.append({"id": check_id, "comment": reason})
    existing = resource.get_metadata("checkov") or {"skip": []}
    resource.add_metadata("checkov", {"skip": existing["skip"] + skips})


def skip_cfn_lint(resource: cdk.CfnResource, reasons_by_rule: Mapping[str, str]) -> None:
    """Ignore cfn-lint rules on one resource. cfn-lint reads ``ignore_checks``; the reasons sit beside
    it in the template so a reviewer sees why."""
    for rule, reason in reasons_by_rule.items():
        if not re.match(r"^[EWI][0-9]{4}$", rule):
            raise ValueError(f"rule={rule!r} is invalid: expected a cfn-lint rule ID such as W3005")
        if len(reason) < 20:
            raise ValueError(f"reason={reason!r} for {rule} is invalid: say specifically why the rule does not apply")
    existing = resource.get_metadata("cfn-lint") or {"config": {"ignore_checks": []}}
    resource.add_metadata("cfn-lint", {"config": {"ignore_checks": existing["config"]["ignore_checks"] + list(reasons_by_rule)}})
    resource.add_metadata("cfn-lint-reasons", {**(resource.get_metadata("cfn-lint-reasons") or {}), **reasons_by_rule})


def skip_role_dependency_lint(resource: cdk.CfnResource, holder: str = "function") -> None:
    """cfn-lint W3005 on a Lambda function or state machine whose role CDK gives an inline policy: CDK writes a
    DependsOn on the role beside the one on the policy, which ``holder`` needs first (both are CDK's)."""
    skip_cfn_lint(resource, {"W3005": f"CDK writes a DependsOn on the {holder}'s role beside the one on the role's policy, "
                                      f"which the {holder} needs first"})
