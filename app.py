#!/usr/bin/env python3
"""The CDK app: one cdk.Stage per configured region (and the edge), built from the typed config in cdk.json;
with config `pipeline`, also the CDK Pipelines pipeline that deploys them (pipelines/)."""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stacks.config import ConfigError, load_config

if TYPE_CHECKING:
    import aws_cdk as cdk


def add_compliance_checks(app: cdk.App) -> None:
    """cdk-nag's AwsSolutions and NIST 800-53 rev 5 packs check every stack of every stage at synth.

    A finding fails `cdk synth` unless the construct it is about acknowledges it with a reason
    (constructs/compliance/acknowledgments.py).
    """
    import aws_cdk as cdk
    from cdk_nag import AwsSolutionsChecks, NIST80053R5Checks

    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app), NIST80053R5Checks(app))


def build_app(app: cdk.App) -> cdk.App:
    config = load_config(app.node.get_all_context())
    # Imported only once the config is valid: a config error is reported without loading
    # cdk-nag and the CDK modules the stacks use, which is most of the app's start-up time.
    from stacks.edge_stage import EdgeStage
    from stacks.region_stage import RegionStage

    add_compliance_checks(app)
    region_stages = [RegionStage(app, config=config, region=region) for region in config.regions]
    edge_stage = EdgeStage(app, config=config) if config.has_edge else None
    if config.pipeline:
        # The pipeline deploys these same stages (pipelines/README.md): no second copy of any stack.
        from pipelines.delivery import add_delivery_pipeline

        add_delivery_pipeline(app, config=config, region_stages=region_stages, edge_stage=edge_stage)
    return app


def context_from_cli() -> dict[str, Any]:
    """The context the CDK CLI hands the app, read the way cdk.App reads it: CDK_CONTEXT_JSON, then
    the file CONTEXT_OVERFLOW_LOCATION_ENV names when the CLI found the context too large for the
    environment."""
    context = json.loads(os.environ.get("CDK_CONTEXT_JSON") or "{}")
    overflow = os.environ.get("CONTEXT_OVERFLOW_LOCATION_ENV")
    if overflow:
        context.update(json.loads(Path(overflow).read_text()))
    return context


# CloudFormation's quotas per template: what the config check's service caps (stacks/config.py MAX_SERVICES) aim
# under, checked here on what was actually synthesized, since features per service add up differently.
MAX_TEMPLATE_BYTES, MAX_TEMPLATE_RESOURCES = 1_000_000, 500


def template_limit_problems(templates: list[tuple[str, Path]]) -> list[str]:
    """One line per (stack name, template file) that CloudFormation would refuse for its size or resource count."""
    problems = []
    for stack_name, path in templates:
        size, resources = path.stat().st_size, len(json.loads(path.read_text()).get("Resources", {}))
        if size > MAX_TEMPLATE_BYTES or resources > MAX_TEMPLATE_RESOURCES:
            problems.append(f"config error: services is invalid: stack {stack_name}'s template has {size:,} bytes and {resources} "
                            f"resources; CloudFormation takes {MAX_TEMPLATE_BYTES:,} and {MAX_TEMPLATE_RESOURCES}: configure fewer "
                            "services, or fewer features per service")
    return problems


def main() -> None:
    try:
        # Checked before aws-cdk-lib and its Node process start (about 0.5 s), so a config error
        # costs no more than the Python start. build_app checks the context the App sees again.
        load_config(context_from_cli())
        import aws_cdk as cdk

        app = cdk.App()
        build_app(app)
    except ConfigError as error:
        print(error, file=sys.stderr)
        sys.exit(2)
    except FileNotFoundError as error:
        # A build step's output is missing; the message names the command that builds it.
        print(f"build error: {error}", file=sys.stderr)
        sys.exit(2)
    assembly = app.synth()
    problems = template_limit_problems([(stack.stack_name, Path(stack.template_full_path)) for stack in assembly.stacks_recursively])
    if problems:
        print(problems[0], file=sys.stderr)
        sys.exit(2)
    # The process ends here. Freezing the heap spares the interpreter's final garbage collection
    # over the tens of thousands of objects aws-cdk-lib's modules hold: about 0.25 s of every synth.
    gc.freeze()


if __name__ == "__main__":
    main()
