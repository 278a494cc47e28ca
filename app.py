#!/usr/bin/env python3
"""The CDK app: one cdk.Stage per configured region, built from the typed config in cdk.json."""

import sys

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks, NIST80053R5Checks

from stacks.config import ConfigError, load_config
from stacks.region_stage import RegionStage


def build_app(app: cdk.App) -> cdk.App:
    config = load_config(app.node.get_all_context())
    # cdk-nag runs as a policy validation plugin over every stack of every stage at synth time.
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app), NIST80053R5Checks(app))
    for region in config.regions:
        RegionStage(app, config=config, region=region)
    return app


def main() -> None:
    app = cdk.App()
    try:
        build_app(app)
    except ConfigError as error:
        print(error, file=sys.stderr)
        sys.exit(2)
    app.synth()


if __name__ == "__main__":
    main()
