"""Security and lint gates over the synthesized templates of every variant the tests synthesize
(tests/conftest.py VARIANTS: both profiles, App Mesh, domain mode, GitHub OIDC, the strangler fig and
the delivery pipeline).

cdk-nag (AwsSolutions, NIST 800-53 rev 5) must report nothing unacknowledged; cfn-lint must report
nothing (its ignored rules are listed in .cfnlintrc.yaml); checkov must fail nothing (its skips sit
on single resources, each with its reason).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3

from app import add_compliance_checks
from tests.assembly import REPO_ROOT, cdk_json_context, read_assembly
from tests.conftest import VARIANTS

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


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cdk_nag_reports_no_unacknowledged_findings(request, variant):
    assembly = request.getfixturevalue(variant)
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


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_acknowledgment_names_a_nag_rule_and_a_specific_reason(request, variant):
    acknowledged = {}
    for _stack_path, metadata in request.getfixturevalue(variant).stack_metadata():
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


def _content(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _region(assembly, stack_path: str) -> str:
    """The region a stack deploys to, from its manifest environment (aws://<account>/<region>)."""
    region = assembly.stack_artifacts[stack_path]["environment"].rsplit("/", 1)[1]
    assert region != "unknown-region", f"{stack_path} names no region"
    return region


def _pipeline_only(assembly) -> list[str]:
    """The templates only a pipeline config adds: the pipeline, its baseline and support stacks, the smoke tests."""
    return [str(path) for stack, path in assembly.template_files.items()
            if "pipeline" in stack or "cross-region-stack" in stack or stack.endswith("/smoke-test")]


def _image_tag_stacks(assembly) -> dict[str, str]:
    """The services stacks of a variant whose services run image tags (prod_pipeline)."""
    return {stack: str(path) for stack, path in assembly.template_files.items() if stack.endswith("/services")}


@pytest.fixture(scope="module")
def scanned_templates(dev, prod, appmesh, domain, github, strangler, dev_pipeline, prod_pipeline) -> dict[str, str]:
    """Every distinct template of every variant, with the region its stack deploys to (a template that two
    regions share counts once per region), except that of the pipeline variants only what the pipeline
    adds, and prod_pipeline's services stacks (images from ECR by tag): their other regional stacks are
    dev's and prod's with a literal account (about a third of the scanners' time for nothing the other
    variants do not already show)."""
    variants = {"dev": dev, "prod": prod, "appmesh": appmesh, "domain": domain, "github": github,
                "strangler": strangler, "dev_pipeline": dev_pipeline, "prod_pipeline": prod_pipeline}
    assert set(variants) == set(VARIANTS)  # a new variant must be scanned too
    whole = [(path, _region(assembly, stack)) for assembly in (dev, prod, appmesh, domain, github, strangler)
             for stack, path in assembly.template_files.items()]
    pipeline = [(path, _region(assembly, stack)) for assembly in (dev_pipeline, prod_pipeline)
                for stack, path in assembly.template_files.items() if str(path) in _pipeline_only(assembly)]
    pipeline += [(path, _region(prod_pipeline, stack)) for stack, path in _image_tag_stacks(prod_pipeline).items()]
    unique: dict[tuple[str, str], str] = {}
    for path, region in [*whole, *pipeline]:
        unique.setdefault((_content(path), region), str(path))
    return {path: region for (_content_hash, region), path in sorted(unique.items(), key=lambda item: item[1])}


@pytest.fixture(scope="module")
def scanners(scanned_templates, tmp_path_factory):
    """cfn-lint (one run per region) and checkov over every distinct template, started together: each is
    single-threaded."""
    checkov = Path(os.environ.get("CHECKOV", REPO_ROOT / ".venv-checkov" / "bin" / "checkov"))
    assert checkov.exists(), f"{checkov} is missing: run `make test`, which installs checkov in its own virtualenv"
    # checkov takes a folder: each distinct template once, named after its assembly and stack.
    folder = tmp_path_factory.mktemp("checkov")
    for path in map(Path, scanned_templates):
        shutil.copy(path, folder / f"{path.parent.parent.name}-{path.parent.name}-{path.name}")
    # cfn-lint checks each template for the region its stack deploys to (allowed values, resource types and
    # endpoints differ by region): the edge's us-east-1 stacks are not the regional stacks' eu regions.
    by_region: dict[str, list[str]] = {}
    for path, region in scanned_templates.items():
        by_region.setdefault(region, []).append(path)
    started = {
        **{f"cfn-lint {region}": subprocess.Popen(
            [str(Path(sys.executable).parent / "cfn-lint"), "--format", "parseable", "--regions", region, "--", *paths],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for region, paths in sorted(by_region.items())},
        # One process: checkov's own worker processes add CPU (about 15 % here) and no speed, since the cfn-lint
        # runs and the other test worker already keep both cores busy.
        "checkov": subprocess.Popen([str(checkov), "--framework", "cloudformation", "--skip-download", "--output", "json",
                                     "--directory", str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env={**os.environ, "CHECKOV_PARALLELIZATION_TYPE": "none"}),
    }
    results = {}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=600)
        results[name] = (process.returncode, stdout, stderr)
    return results


def test_the_scan_covers_what_only_the_strangler_fig_the_pipeline_and_image_tags_add(scanned_templates, strangler, dev_pipeline, prod_pipeline):
    scanned = set(map(_content, scanned_templates))
    for region in ("eu-central-1", "eu-west-1"):  # the legacy function's target group and permission
        assert _content(strangler.template_files[f"mf-{region}/services"]) in scanned
    pipeline_only = [*_pipeline_only(dev_pipeline), *_pipeline_only(prod_pipeline)]
    assert len(pipeline_only) == 2 * 6  # baseline, pipeline, two support stacks, two smoke-test stacks
    assert set(map(_content, pipeline_only)) <= scanned
    image_tag_stacks = _image_tag_stacks(prod_pipeline)
    assert len(image_tag_stacks) == 2 and set(map(_content, image_tag_stacks.values())) <= scanned


def test_cfn_lint_reports_nothing_checking_each_template_for_its_own_region(scanners, scanned_templates):
    assert set(scanned_templates.values()) == {"eu-central-1", "eu-west-1", "us-east-1"}  # the regions and the edge
    for region in set(scanned_templates.values()):
        assert scanners[f"cfn-lint {region}"] == (0, "", ""), region


@pytest.fixture(scope="module")
def checkov_report(scanners):
    returncode, stdout, stderr = scanners["checkov"]
    assert returncode in (0, 1), stderr
    return [json.loads(stdout)]


def test_checkov_fails_no_check(checkov_report):
    failed = [
        f"{check['check_id']} {check['resource']} in {check['file_path']}"
        for report in checkov_report
        for check in report["results"]["failed_checks"]
    ]
    assert failed == []
    assert all(report["summary"]["passed"] > 100 for report in checkov_report)
    passed = {check["resource"] for report in checkov_report for check in report["results"]["passed_checks"]}
    assert any(resource.startswith("AWS::Lambda::Function.authstranglerfig") for resource in passed)  # the strangler fig's function


def test_checkov_skips_each_give_a_reason(checkov_report):
    skipped = [check for report in checkov_report for check in report["results"]["skipped_checks"]]
    assert skipped, "expected the permissions boundary and CDK provider skips"
    for check in skipped:
        assert len(check["check_result"].get("suppress_comment", "")) >= 20, check["check_id"]
