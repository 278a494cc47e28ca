"""An example `pipeline` config, so that `make synth` and the tests synthesize the pipeline stack
while cdk.json names none (its `pipeline` is null until someone sets up a real connection).

`python -m pipelines.example_config` prints the example as JSON for `-c pipeline=...`, or nothing when
cdk.json already configures a pipeline (then `make synth`'s first synth includes the real one);
`python -m pipelines.example_config services` prints the services for `-c services=...` (example_services).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any, Mapping

# An account ID from the AWS documentation's examples and a connection ID of zeros: no real account.
EXAMPLE_ACCOUNT = "111122223333"
# A commit SHA of zeros, as containers.yml tags what it pushes: the image tag of the prod example's services.
EXAMPLE_IMAGE_TAG = "0" * 40
_CONTEXT = json.loads((Path(__file__).resolve().parent.parent / "cdk.json").read_text())["context"]


def example_pipeline(primary_region: str | None = None, account: str = EXAMPLE_ACCOUNT) -> dict[str, Any]:
    """A connection in the pipeline's own account and region (the config requires both), and an approver to
    notify (prod requires one; example.com is reserved for examples, RFC 2606)."""
    region = primary_region or _CONTEXT.get("primary_region", "eu-central-1")
    return {
        "connection_arn": f"arn:aws:codeconnections:{region}:{account}:connection/00000000-0000-0000-0000-000000000000",
        "repository": "example-org/microservices-foundation",
        "branch": "main",
        "approval_emails": ["release-approvers@example.com"],
    }


def example_services(context: Mapping[str, Any] = _CONTEXT) -> dict[str, Any]:
    """cdk.json's services for the example pipeline. In prod, each one without image_tag or image runs
    EXAMPLE_IMAGE_TAG: the config refuses a prod pipeline that would build an image itself (stacks/config.py), and
    prod deployed by hand (cdk.json's profile prod, no pipeline) builds from the Dockerfiles. Dev: as they are."""
    services = copy.deepcopy(context["services"])
    if context.get("profile") == "prod":
        for settings in services.values():
            if not settings.get("image_tag") and not settings.get("image"):
                settings["image_tag"] = EXAMPLE_IMAGE_TAG
    return services


def main(args: list[str]) -> None:
    if _CONTEXT.get("pipeline") is None:
        print(json.dumps(example_services() if args == ["services"] else example_pipeline()))


if __name__ == "__main__":
    main(sys.argv[1:])
