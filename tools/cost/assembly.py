"""Read a synthesized cloud assembly (cdk.out) the way the CDK CLI does: manifest.json, nested stages."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator


class AssemblyError(ValueError):
    """The folder is not a cloud assembly this tool can price."""


@dataclass(frozen=True)
class Stack:
    path: str  # the display name, e.g. mf-eu-central-1/network
    region: str
    tags: dict[str, str] = field(default_factory=dict)
    template: dict[str, Any] = field(default_factory=dict)

    def resources(self, resource_type: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        for logical_id, resource in self.template.get("Resources", {}).items():
            if resource_type is None or resource["Type"] == resource_type:
                yield logical_id, resource


def read_stacks(directory: Path) -> list[Stack]:
    directory = Path(directory)
    if not (directory / "manifest.json").is_file():
        raise AssemblyError(f"{directory} is not a cloud assembly (no manifest.json); synthesize it first")
    stacks: list[Stack] = []
    _read_manifest(directory, stacks)
    if not stacks:
        raise AssemblyError(f"{directory} holds no stacks")
    return stacks


def profile_of(stacks: list[Stack]) -> str | None:
    """The profile the app tagged every stack with (tag ``environment``), if they agree on one."""
    profiles = {stack.tags.get("environment") for stack in stacks}
    return profiles.pop() if len(profiles) == 1 else None


def _read_manifest(directory: Path, stacks: list[Stack]) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    for artifact_id, artifact in manifest.get("artifacts", {}).items():
        properties = artifact.get("properties", {})
        if artifact["type"] == "cdk:cloud-assembly":
            _read_manifest(directory / properties["directoryName"], stacks)
        elif artifact["type"] == "aws:cloudformation:stack":
            tags = properties.get("tags", {})
            stacks.append(Stack(
                path=artifact.get("displayName", artifact_id),
                region=_region(artifact, tags),
                tags=tags,
                template=json.loads((directory / properties["templateFile"]).read_text()),
            ))


def _region(artifact: dict[str, Any], tags: dict[str, str]) -> str:
    # environment is aws://<account>/<region>; an environment-agnostic stack says unknown-region.
    region = artifact.get("environment", "").rsplit("/", 1)[-1]
    if region and region != "unknown-region":
        return region
    if "region" in tags:
        return tags["region"]
    raise AssemblyError(f"stack {artifact.get('displayName')} has no region: give it an env or a region tag")
