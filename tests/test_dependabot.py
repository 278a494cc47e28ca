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


PIN = re.compile(r"([A-Za-z0-9._-]+)(\[[A-Za-z0-9,._-]+\])?==[0-9][A-Za-z0-9.+-]*")


def _parses_as_requirements(path: Path) -> bool:
    """Dependabot's test for a .txt file: named like requirements, or every line a pin, an option or a comment."""
    return "requirements" in path.name or all(
        not line.strip() or line.strip().startswith(("#", "-r ", "-c ", "--")) or PIN.fullmatch(line.strip())
        for line in path.read_text().splitlines())


def _read_from(folder: str) -> set[Path]:
    """The files Dependabot's pip file fetcher reads for one listed folder: the *.txt files of the folder and of
    the folders right below it that parse as requirements, and what they reach by -r / -c."""
    root = REPO_ROOT / folder.strip("/")
    pending = [txt for txt in [*root.glob("*.txt"), *root.glob("*/*.txt")]
               if not NOT_SOURCE.match(txt.parent.name) and _parses_as_requirements(txt)]
    read: set[Path] = set()
    while pending:
        path = pending.pop().resolve()
        if path not in read:
            read.add(path)
            pending += [path.parent / line.split(None, 1)[1] for line in path.read_text().splitlines()
                        if line.startswith(("-r ", "-c "))]
    return read


def _folders(update: dict[str, Any]) -> list[str]:
    return update.get("directories", [update.get("directory")])


def _read_by(update: dict[str, Any]) -> set[Path]:
    return set().union(*map(_read_from, _folders(update)))


def _pip_updates() -> list[dict[str, Any]]:
    return [update for update in yaml.safe_load(CONFIG_FILE.read_text())["updates"] if update["package-ecosystem"] == "pip"]


def _names(paths) -> set[str]:
    return {PIN.fullmatch(line.strip()).group(1).lower().replace("_", "-") for path in paths
            for line in path.read_text().splitlines() if PIN.fullmatch(line.strip())}


def test_every_python_pin_file_is_read_from_exactly_one_dependabot_folder():
    """Read from two folders, a file would get competing pull requests; from none, it would never move."""
    readers = [_read_from(folder) for update in _pip_updates() for folder in _folders(update)]
    pin_files = _source_files("requirements*.txt") + _source_files("constraints*.txt")
    assert len(pin_files) >= 10  # the app's, checkov's, the services' and the layers'
    for path in pin_files:
        assert sum(path.resolve() in read for read in readers) == 1, path.relative_to(REPO_ROOT).as_posix()


def test_every_pin_file_beside_one_a_folder_reads_is_read_too_so_constraints_move_with_their_requirements():
    """A constraints file that did not parse as requirements would be left alone while the requirements file
    beside it moved: pip would then refuse the clash. The pin files beside each read file are listed here
    unfiltered (_read_from keeps only those that parse), so one that does not parse is missed."""
    constraints = 0
    for update in _pip_updates():
        for folder in _folders(update):
            read = _read_from(folder)
            for beside in {path.parent for path in read}:
                for pin_file in [*beside.glob("requirements*.txt"), *beside.glob("constraints*.txt")]:
                    assert pin_file.resolve() in read, f"{folder}: {pin_file.relative_to(REPO_ROOT).as_posix()}"
                    constraints += pin_file.name.startswith("constraints")
    assert constraints >= 3  # the app's, the services' and checkov's


def test_dependabot_moves_exactly_the_direct_dependencies():
    """`allow` names what the requirements files name (a pattern may cover a family, such as opentelemetry-*):
    a new direct dependency is updated from its first day, and no pattern outlives its package."""
    for update in _pip_updates():
        read = _read_by(update)
        direct = _names(path for path in read if "requirements" in path.name)
        pinned = _names(read)
        patterns = [rule["dependency-name"] for rule in update["allow"]]
        assert [name for name in sorted(direct) if not any(fnmatch.fnmatch(name, p) for p in patterns)] == []
        assert [p for p in patterns if not any(fnmatch.fnmatch(name, p) for name in direct)] == []
        # A pattern takes transitive pins only in the OpenTelemetry family, which releases together and pins itself
        # with ==; anywhere else a transitive bump could break its dependent's cap (aws-cdk-lib pins its assets).
        extras = {name for name in pinned if any(fnmatch.fnmatch(name, p) for p in patterns)} - direct
        assert [name for name in sorted(extras) if not name.startswith("opentelemetry-")] == []


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
    # A dependency goes to the first group it matches: the named groups before the catch-alls.
    assert list(pip["groups"]) == ["aws-sdk", "cdk", "minor-and-patch", "major"]
