"""Dependabot (.github/dependabot.yml): a config Dependabot accepts, covering every pin file of the repository.

Every version in the repository is pinned exactly, so a pin file that Dependabot does not read would
never be updated, security fixes included.
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.assembly import REPO_ROOT

CONFIG_FILE = REPO_ROOT / ".github" / "dependabot.yml"
# check-jsonschema ships SchemaStore's Dependabot schema (its "vendor.dependabot"), so no download.
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
# Build output, virtualenvs and installed packages hold pin files that are not the repository's.
NOT_SOURCE = re.compile(r"^(\.|node_modules$|cdk\.out|build$)")


def _source_files(pattern: str) -> list[Path]:
    """The repository's own files matching ``pattern`` (a glob on the name)."""
    found = []
    for folder, subfolders, files in os.walk(REPO_ROOT):
        subfolders[:] = [name for name in subfolders if not NOT_SOURCE.match(name)]
        found += [Path(folder) / name for name in fnmatch.filter(files, pattern)]
    return sorted(found)


def _directories(ecosystem: str) -> set[str]:
    """The folders (relative, "" for the root) that Dependabot's entries for ``ecosystem`` read."""
    updates = yaml.safe_load(CONFIG_FILE.read_text())["updates"]
    listed = [folder for update in updates if update["package-ecosystem"] == ecosystem
              for folder in update.get("directories", [update.get("directory")])]
    return {folder.strip("/") for folder in listed}


def _folder(path: Path) -> str:
    return path.parent.relative_to(REPO_ROOT).as_posix().removeprefix(".")


def _check(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.dependabot", str(config)],
                          capture_output=True, text=True, timeout=60)


def test_the_config_is_one_dependabot_accepts():
    result = _check(CONFIG_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_config_dependabot_would_reject_fails_the_check(tmp_path: Path):
    config: dict[str, Any] = yaml.safe_load(CONFIG_FILE.read_text())
    config["updates"][0]["schedule"]["interval"] = "fortnightly"
    broken = tmp_path / "dependabot.yml"
    broken.write_text(yaml.safe_dump(config))
    result = _check(broken)
    assert result.returncode != 0
    assert "fortnightly" in result.stdout + result.stderr


def _included(requirements: Path) -> list[Path]:
    """The files a requirements file pulls in with ``-r`` (Dependabot follows them)."""
    return [requirements.parent / line.split(None, 1)[1] for line in requirements.read_text().splitlines()
            if line.startswith("-r ")]


def test_every_python_pin_file_is_read_by_dependabot():
    folders = _directories("pip")
    read: set[Path] = set()
    for folder in folders:
        pending = sorted((REPO_ROOT / folder).glob("*.txt"))
        while pending:
            path = pending.pop().resolve()
            if path not in read:
                read.add(path)
                pending.extend(_included(path))
    pin_files = _source_files("requirements*.txt") + _source_files("constraints*.txt")
    assert len(pin_files) >= 10  # the app's, checkov's, the services' and the layers'
    assert [path.relative_to(REPO_ROOT).as_posix() for path in pin_files if path.resolve() not in read] == []


@pytest.mark.parametrize("folder", sorted(_directories("pip")))
def test_dependabot_reads_each_txt_file_beside_a_requirements_file_as_one(folder: str):
    """Dependabot takes a .txt file whose name lacks "requirements" (constraints.txt) as a requirements
    file only if every line is a requirement, an option or a comment. Otherwise it would leave the
    constraints alone and bump the requirements file into a clash with them."""
    for path in sorted((REPO_ROOT / folder).glob("*.txt")):
        for line in path.read_text().splitlines():
            line = line.strip()
            assert not line or line.startswith(("#", "-r ", "-c ", "--")) or re.fullmatch(
                r"[A-Za-z0-9._-]+(\[[A-Za-z0-9,._-]+\])?==[0-9][A-Za-z0-9.+-]*", line), f"{path.name}: {line}"


def test_every_dockerfile_is_read_by_dependabot():
    dockerfiles = _source_files("Dockerfile")
    assert dockerfiles
    assert {_folder(path) for path in dockerfiles} <= _directories("docker")


def test_the_npm_pins_and_the_workflows_actions_are_read_by_dependabot():
    assert {_folder(path) for path in _source_files("package.json")} == _directories("npm")
    assert (REPO_ROOT / "package-lock.json").exists()  # npm updates move the lock file with package.json
    assert "" in _directories("github-actions")  # Dependabot reads .github/workflows from the root entry
    assert list((REPO_ROOT / ".github" / "workflows").glob("*.yml"))


def test_every_update_waits_out_a_cooldown_and_shared_pins_move_together():
    updates = yaml.safe_load(CONFIG_FILE.read_text())["updates"]
    assert all(update["cooldown"]["default-days"] >= 7 for update in updates)
    pip = next(update for update in updates if update["package-ecosystem"] == "pip")
    # The failover layer, the services and the app's toolchain pin one botocore (their tests compare them).
    assert {"boto3", "botocore", "awscrt"} <= set(pip["groups"]["aws-sdk"]["patterns"])
    assert list(pip["groups"])[0] == "aws-sdk"  # a dependency goes to the first group it matches
