"""The repository layout that DESIGN.md fixes, and the `constructs` namespace it relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.assembly import REPO_ROOT

# What `make` builds in the checkout (Makefile: VENV, CHECKOV_VENV, SERVICES_VENV, node_modules, LAYERS' build).
TOOLCHAIN = (".venv", ".venv-checkov", ".venv-services", "node_modules",
             "constructs/service_data/rotation_layer/build", "constructs/operations/failover_layer/build")


def test_constructs_folder_joins_the_library_namespace_without_shadowing_it():
    import constructs
    from constructs import Construct

    from constructs.vpc_network import VpcNetwork

    # The library class, from the installed package...
    assert Construct.__module__ == "constructs"
    assert "site-packages" in Path(constructs.__file__).parts
    # ...and this repo's module, from the repo's constructs/ folder.
    assert Path(__import__("constructs.vpc_network", fromlist=["x"]).__file__).is_relative_to(REPO_ROOT / "constructs")
    assert issubclass(VpcNetwork, Construct)


def test_constructs_folder_has_no_init_file():
    assert not (REPO_ROOT / "constructs" / "__init__.py").exists()


def test_every_construct_package_has_a_readme_with_its_props():
    packages = [p for p in (REPO_ROOT / "constructs").iterdir() if (p / "__init__.py").exists()]
    assert len(packages) >= 5
    for package in packages:
        readme = package / "README.md"
        assert readme.exists(), f"{package.name} has no README.md"
        text = readme.read_text()
        for section in ("## Example", "## Props", "## Attributes", "## What it does not do"):
            assert section in text, f"{package.name}/README.md lacks '{section}'"


def test_top_level_layout():
    for path in ("app.py", "cdk.json", "stacks", "constructs", "services", "pipelines", "runbooks", "tests",
                 "requirements.txt", "package.json", "package-lock.json", "Makefile", "README.md", "CONTRIBUTING.md", "SECURITY.md", "LICENSE", ".ci/run", ".gitignore"):
        assert (REPO_ROOT / path).exists(), path


def test_the_repository_tracks_no_symlink():
    """A tracked link (say, a worktree's link to a shared .venv) dangles or loops in every other clone, where
    `make`'s `python -m venv .venv` then fails."""
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout (the pipeline's source archive); the pull-request checks run this")
    tracked = subprocess.run(["git", "ls-files", "--stage"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    assert [line.split("\t", 1)[1] for line in tracked.splitlines() if line.startswith("120000 ")] == []


@pytest.mark.parametrize("kind", ["folder", "link"])
def test_the_toolchain_is_ignored_as_a_folder_and_as_a_link_to_a_shared_one(tmp_path, kind):
    checkout, shared = tmp_path / "checkout", tmp_path / "shared"
    checkout.mkdir()
    shared.mkdir()
    shutil.copy(REPO_ROOT / ".gitignore", checkout / ".gitignore")
    subprocess.run(["git", "init", "-q"], cwd=checkout, check=True)
    for path in TOOLCHAIN:
        place = checkout / path
        place.parent.mkdir(parents=True, exist_ok=True)
        if kind == "link":
            place.symlink_to(shared, target_is_directory=True)
        else:
            place.mkdir()
            (place / "installed").touch()
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                            cwd=checkout, capture_output=True, text=True, check=True).stdout
    assert status.splitlines() == ["?? .gitignore"]


def test_every_python_dependency_is_pinned():
    for name in ("requirements.txt", "constraints.txt", "tools/checkov/requirements.txt", "tools/checkov/constraints.txt",
                 "constructs/service_data/rotation_layer/requirements.txt", "constructs/operations/failover_layer/requirements.txt"):
        for line in (REPO_ROOT / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                assert re.fullmatch(r"[A-Za-z0-9._\[\]-]+==[0-9][A-Za-z0-9.+-]*", line), f"{name}: {line}"


def test_cdk_cli_is_pinned_exactly():
    import json

    package = json.loads((REPO_ROOT / "package.json").read_text())
    lock = json.loads((REPO_ROOT / "package-lock.json").read_text())
    version = package["devDependencies"]["aws-cdk"]
    assert re.fullmatch(r"2\.\d+\.\d+", version)
    assert lock["packages"]["node_modules/aws-cdk"]["version"] == version


def test_shell_scripts_pass_shellcheck():
    """Every script of ours with a shell shebang (.ci/run, the CI image smoke test, ...); actionlint runs the same
    shellcheck over the workflows' run steps."""
    import os
    import subprocess
    import sys

    # A walk, not `git ls-files`: the pipeline's build runs `make test` on a source archive without .git.
    scripts = []
    for folder, subfolders, files in os.walk(REPO_ROOT):
        subfolders[:] = [name for name in subfolders if name not in ("node_modules", "build", "__pycache__")
                         and not name.startswith("cdk.out") and (not name.startswith(".") or name in (".ci", ".github"))]
        for name in files:
            path = Path(folder, name)
            with path.open("rb") as file:
                shebang = file.read(40)
            if re.match(rb"#!\s*/(usr/)?bin/(env )?(ba)?sh\b", shebang):
                scripts.append(path.relative_to(REPO_ROOT).as_posix())
    assert {".ci/run", "services/ci/smoke_image.sh", "services/ci/ecr_regions.sh"} <= set(scripts)
    shellcheck = Path(sys.executable).parent / "shellcheck"
    result = subprocess.run([str(shellcheck), "--format", "gcc", *scripts], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_python_code_passes_ruff():
    """Pyflakes and bugbear findings (unused names, mutable defaults, ...) across the repo (ruff.toml)."""
    import subprocess
    import sys

    ruff = Path(sys.executable).parent / "ruff"
    # Without .gitignore, as in the pipeline's source archive (no .git), where `make install` has built the layers.
    result = subprocess.run([str(ruff), "check", "--no-respect-gitignore", "--output-format", "concise", "."], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout
