"""Synthesize the real app in-process and read the cloud assembly back, the way the CLI would."""

from __future__ import annotations

import ast
import copy
import fnmatch
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

REPO_ROOT = Path(__file__).resolve().parent.parent


def source_value(relative_path: str, pattern: str) -> Any:
    """The Python literal that ``pattern``'s one group captures in a repo file, matched exactly once (lines as
    ``^``/``$``): a services' constant or default, which the infra venv cannot import (it installs no service)."""
    matches = re.findall(pattern, (REPO_ROOT / relative_path).read_text(), re.MULTILINE)
    assert len(matches) == 1, f"{relative_path}: {pattern!r} matched {len(matches)} times"
    return ast.literal_eval(matches[0])


CDK_JSON = REPO_ROOT / "cdk.json"

# The keys that describe one deployment, by dotted path, with their defaults. The set-up steps (README "CI",
# pipelines/README.md) have operators set them in cdk.json, and the pipeline's `make test` runs on that cdk.json:
# the tests reset them, so they check the same reference settings whatever one deployment put there.
DEPLOYMENT_KEYS: dict[str, Any] = {
    "profile": "dev",  # a prod deployment's cdk.json says prod; the tests' reference settings stay dev (variant prod)
    "account": None, "pipeline": None, "github": None, "domain": None,
    "budget.notify_emails": [], "observability.notify_emails": [],
}
# What a release changes in each service's settings (README "Progressive rollout"): which image runs. The reference
# settings build each image from its Dockerfile; a service without one keeps its image settings.
RELEASE_KEYS = ("image_tag", "canary_image_tag", "image")


def committed_context(cdk_json: Path = CDK_JSON) -> dict[str, Any]:
    """cdk.json's context as it is, deployment keys and all: what `cdk synth` and `make synth` read."""
    return json.loads(cdk_json.read_text())["context"]


def cdk_json_context(cdk_json: Path = CDK_JSON) -> dict[str, Any]:
    """The reference settings every test synthesizes: cdk.json's context with DEPLOYMENT_KEYS at their defaults
    and no service's RELEASE_KEYS."""
    context = with_settings(committed_context(cdk_json), DEPLOYMENT_KEYS)
    for name, settings in context.get("services", {}).items():
        if (REPO_ROOT / "services" / name / "Dockerfile").exists():
            for key in RELEASE_KEYS:
                settings.pop(key, None)
    return context


def with_settings(context: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """``context`` with each of ``settings`` (by dotted path, e.g. ``budget.notify_emails``) set, in place."""
    for key, value in settings.items():
        *parents, name = key.split(".")
        scope = context
        for parent in parents:
            scope = scope.setdefault(parent, {})
        scope[name] = copy.deepcopy(value)
    return context


@dataclass
class Assembly:
    """A synthesized cloud assembly: templates by stack path, e.g. ``mf-eu-central-1/network``."""

    outdir: Path
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    template_files: dict[str, Path] = field(default_factory=dict)
    # The manifest entry of each stack (plus its "id"): environment, dependencies, tags, protection.
    stack_artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def template(self, stack_path: str) -> dict[str, Any]:
        return self.templates[stack_path]

    def resources(self, stack_path: str, resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource
            for logical_id, resource in self.template(stack_path)["Resources"].items()
            if resource["Type"] == resource_type
        }

    def all_resources(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for stack_path, template in self.templates.items():
            for logical_id, resource in template["Resources"].items():
                yield stack_path, logical_id, resource

    def validation_report(self) -> dict[str, Any]:
        return json.loads((self.outdir / "validation-report.json").read_text())

    def stack_metadata(self) -> Iterator[tuple[str, dict[str, list[dict[str, Any]]]]]:
        """(stack path, construct path -> metadata entries) for every stack."""
        for stack_path, template_file in self.template_files.items():
            metadata_file = template_file.with_name(template_file.name.replace(".template.json", ".metadata.json"))
            yield stack_path, json.loads(metadata_file.read_text())

    def construct_paths(self) -> dict[tuple[str, str], str]:
        """(stack path, logical ID) -> the resource's construct path, from each stack's metadata file (the tests' synth
        writes no ``aws:cdk:path`` into the templates)."""
        return {(stack, entry["data"]): construct_path.lstrip("/")
                for stack, metadata in self.stack_metadata() for construct_path, entries in metadata.items()
                for entry in entries if entry["type"] == "aws:cdk:logicalId"}


def read_assembly(outdir: Path) -> Assembly:
    assembly = Assembly(outdir=outdir)
    _read_manifest(outdir, assembly)
    return assembly


def _read_manifest(directory: Path, assembly: Assembly) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    for artifact_id, artifact in manifest.get("artifacts", {}).items():
        properties = artifact.get("properties", {})
        if artifact["type"] == "cdk:cloud-assembly":
            _read_manifest(directory / properties["directoryName"], assembly)
        elif artifact["type"] == "aws:cloudformation:stack":
            template_file = directory / properties["templateFile"]
            assembly.template_files[artifact["displayName"]] = template_file
            assembly.templates[artifact["displayName"]] = json.loads(template_file.read_text())
            assembly.stack_artifacts[artifact["displayName"]] = {**artifact, "id": artifact_id}


def synth(outdir: Path, **overrides: Any) -> Assembly:
    """Build app.py's app with the reference settings (cdk_json_context) plus ``overrides`` and synthesize it into ``outdir``.

    cdk-nag findings are written to validation-report.json instead of failing synth, so tests can
    assert on them.
    """
    import aws_cdk as cdk

    import app as app_module

    shutil.rmtree(outdir, ignore_errors=True)
    context = {**cdk_json_context(), **overrides, "@aws-cdk/core:failSynthOnValidationErrors": False}
    app = cdk.App(context=context, outdir=str(outdir))
    app_module.build_app(app)
    app.synth()
    return read_assembly(outdir)


def container_settings(resources: dict[str, dict[str, Any]], container: dict[str, Any]) -> dict[str, Any]:
    """A container's settings by name: its environment plus what ECS injects from the stack's own SSM
    parameters (``secrets`` whose ARN names a parameter of ``resources``), as the parameter's value."""
    settings = {e["Name"]: e["Value"] for e in container.get("Environment", [])}
    for secret in container.get("Secrets", []):
        parts = secret["ValueFrom"].get("Fn::Join", ["", []])[1] if isinstance(secret["ValueFrom"], dict) else []
        refs = [p["Ref"] for p in parts if isinstance(p, dict) and p.get("Ref") in resources]
        if refs and resources[refs[0]]["Type"] == "AWS::SSM::Parameter":
            settings[secret["Name"]] = resources[refs[0]]["Properties"]["Value"]
    return settings


def template_text(value: Any) -> str:
    """A template value as text: the strings of an Fn::Join, other tokens as <token>."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        return value["Fn::Join"][0].join(template_text(part) for part in value["Fn::Join"][1])
    return "<token>"


def listed(value: Any) -> list[Any]:
    """An IAM policy element (Action, Resource...) as a list: IAM allows a single value or a list."""
    return value if isinstance(value, list) else [value]


def admitting(allows: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    """The Allow statements (of a permissions boundary) whose Action patterns match ``action``, as IAM matches them:
    case-insensitively, with * and ? wildcards."""
    return [allow for allow in allows if any(fnmatch.fnmatchcase(action.lower(), pattern.lower()) for pattern in listed(allow["Action"]))]
