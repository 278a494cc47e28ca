"""Security and lint gates over the synthesized templates of both profiles.

cdk-nag (AwsSolutions, NIST 800-53 rev 5) must report nothing unacknowledged; cfn-lint must report
nothing (its ignored rules are listed in .cfnlintrc.yaml); checkov must fail nothing (its skips sit
on single resources, each with its reason).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3

from app import add_compliance_checks
from tests.assembly import REPO_ROOT, cdk_json_context, read_assembly

NAG_PACKS = ("AwsSolutions", "NIST.800.53.R5")


def _violations(assembly, plugins=NAG_PACKS):
    """Findings of the given validation plugins (CDK's own "Construct Annotations" plugin also reports warnings)."""
    return [
        f"{violation['ruleName']} at {construct['constructPath']}"
        for report in assembly.validation_report()["pluginReports"]
        if report["pluginName"] in plugins
        for violation in report["violations"]
        for construct in violation["violatingConstructs"]
    ]


@pytest.mark.parametrize("variant", ["dev", "prod", "appmesh", "domain"])
def test_cdk_nag_reports_no_unacknowledged_findings(dev, prod, appmesh, domain, variant):
    assembly = {"dev": dev, "prod": prod, "appmesh": appmesh, "domain": domain}[variant]
    assert _violations(assembly) == []
    # The one expected non-nag entry: App Mesh's end-of-support warning, once per region.
    expected = ["Annotation::foundation:appmesh-end-of-support"] * 2 if variant == "appmesh" else []
    assert [v.split(" at ")[0] for v in _violations(assembly, plugins=("Construct Annotations",))] == expected


def test_cdk_nag_packs_do_report_findings(tmp_path):
    """Control: the same checks, on an app with a bare S3 bucket, write findings of both packs."""
    app = cdk.App(outdir=str(tmp_path), context={"@aws-cdk/core:failSynthOnValidationErrors": False})
    add_compliance_checks(app)
    s3.Bucket(cdk.Stack(app, "Bare"), "Bucket")
    app.synth()
    rules = {violation.split(" at ")[0] for violation in _violations(read_assembly(Path(tmp_path)))}
    assert "AwsSolutions-S1" in rules  # server access logs
    assert "NIST.800.53.R5-S3BucketLoggingEnabled" in rules


_APP_WITH_A_FINDING = """
import aws_cdk as cdk
from aws_cdk import aws_s3 as s3
from app import add_compliance_checks
app = cdk.App()
add_compliance_checks(app)
s3.Bucket(cdk.Stack(app, "Bare"), "Bucket")
app.synth()
"""


def test_cdk_synth_through_the_cli_fails_on_a_finding(tmp_path):
    """`make synth` relies on this: the pinned CLI exits non-zero when the checks report a finding."""
    assert "@aws-cdk/core:failSynthOnValidationErrors" not in cdk_json_context()
    result = subprocess.run(
        [str(REPO_ROOT / "node_modules" / ".bin" / "cdk"), "synth", "--quiet", "--no-notices",
         "--app", f"{sys.executable} -c '{_APP_WITH_A_FINDING}'", "--output", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "CDK_DISABLE_CLI_TELEMETRY": "true", "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode != 0
    assert "AwsSolutions-S1" in result.stdout + result.stderr


@pytest.mark.parametrize("variant", ["dev", "prod", "appmesh", "domain"])
def test_every_acknowledgment_names_a_nag_rule_and_a_specific_reason(dev, prod, appmesh, domain, variant):
    acknowledged = {}
    for _stack_path, metadata in {"dev": dev, "prod": prod, "appmesh": appmesh, "domain": domain}[variant].stack_metadata():
        for construct_path, entries in metadata.items():
            for entry in entries:
                if entry["type"] == "aws:cdk:acknowledged-rules":
                    acknowledged.update({(construct_path, rule): reason for rule, reason in entry["data"].items()})
    ours = {key: reason for key, reason in acknowledged.items() if not key[1].startswith("CloudFormation-Validate::")}
    assert len(ours) >= 20
    for (construct_path, rule), reason in ours.items():
        pack, _, rule_id = rule.partition("::")
        assert pack in NAG_PACKS and rule_id.startswith(pack + "-"), rule
        assert len(reason) >= 40, f"{rule} at {construct_path}: {reason!r}"


def _template_files(*assemblies):
    return [str(path) for assembly in assemblies for path in assembly.template_files.values()]


def test_cfn_lint_reports_nothing(dev, prod, appmesh, domain):
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run(
        [str(cfn_lint), "--format", "parseable", "--", *_template_files(dev, prod, appmesh, domain)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.fixture(scope="module")
def checkov_report(dev, prod, appmesh, domain):
    checkov = Path(os.environ.get("CHECKOV", REPO_ROOT / ".venv-checkov" / "bin" / "checkov"))
    assert checkov.exists(), f"{checkov} is missing: run `make test`, which installs checkov in its own virtualenv"
    result = subprocess.run(
        [str(checkov), "--framework", "cloudformation", "--skip-download", "--output", "json",
         *(arg for assembly in (dev, prod, appmesh, domain) for arg in ("--directory", str(assembly.outdir)))],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode in (0, 1), result.stderr
    # checkov prints one JSON report per --directory, one after the other.
    reports, decoder, position = [], json.JSONDecoder(), 0
    while position < len(result.stdout.rstrip()):
        report, position = decoder.raw_decode(result.stdout, position)
        reports.append(report)
        position += len(result.stdout[position:]) - len(result.stdout[position:].lstrip())
    assert len(reports) == 4
    return reports


def test_checkov_fails_no_check(checkov_report):
    failed = [
        f"{check['check_id']} {check['resource']} in {check['file_path']}"
        for report in checkov_report
        for check in report["results"]["failed_checks"]
    ]
    assert failed == []
    assert all(report["summary"]["passed"] > 100 for report in checkov_report)


def test_checkov_skips_each_give_a_reason(checkov_report):
    skipped = [check for report in checkov_report for check in report["results"]["skipped_checks"]]
    assert skipped, "expected the permissions boundary and CDK provider skips"
    for check in skipped:
        assert len(check["check_result"].get("suppress_comment", "")) >= 20, check["check_id"]
