"""Scanner skips that travel with the resource they are about, each with its reason.

cdk-nag findings are acknowledged where the construct is made (see acknowledgments.py). checkov
reads skips from a resource's CloudFormation metadata; ``skip_checkov`` writes them there, so a
skip sits on exactly one resource and names why.
"""

from __future__ import annotations

import re

import aws_cdk as cdk

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
