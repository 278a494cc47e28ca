"""The GitHub Actions workflows: they lint clean, pin what they run, and do what the README says.

pull-request.yml runs `make test` and `make synth`; main.yml runs the same checks and then `cdk diff`
per stage; containers.yml builds each service for amd64 and arm64, scans both with Trivy, runs the
amd64 image as ECS runs it (services/ci/smoke_image.sh) and only then pushes one immutable tag (the
commit SHA) to ECR.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from constructs.meshed_service.props import MeshedServiceProps
from constructs.meshed_service.service import TMPFS_MOUNT_OPTIONS
from stacks.config import load_config
from stacks.services_stack import STOP_TIMEOUT_SECONDS
from tests.assembly import REPO_ROOT, cdk_json_context, committed_context

WORKFLOWS_DIR = REPO_ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS_DIR.glob("*.yml"))
ACTIONLINT = Path(sys.executable).parent / "actionlint"
# owner/repo[/path]@<40 hex> # v1.2.3: the full commit, and the release it is, for the reader and for updates.
PINNED_USES = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40} # v?\d+\.\d+\.\d+$")
# Actions allowed without a commit pin: none. (Local reusable workflows, ./.github/..., are this repo's own.)
UNPINNED_EXCEPTIONS: frozenset[str] = frozenset()
CONFIG = load_config(cdk_json_context())


def _ci_branch() -> str:
    """The one branch the CI roles trust: config github.branch (default main) of cdk.json as it is, not the tests'
    reference settings. GitHub reads a workflow's triggers before any step could read cdk.json, so the workflows
    name it themselves, and the tests below hold them to it."""
    github = load_config(committed_context()).github
    return github.branch if github else "main"


def _load(name: str) -> dict[str, Any]:
    workflow = yaml.safe_load((WORKFLOWS_DIR / name).read_text())
    # YAML 1.1 reads the key `on` as the boolean true.
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    return workflow


def _steps(workflow: dict[str, Any], job: str) -> list[dict[str, Any]]:
    return workflow["jobs"][job]["steps"]


def _index(steps: list[dict[str, Any]], predicate) -> list[int]:
    return [i for i, step in enumerate(steps) if predicate(step)]


def _uses(step: dict[str, Any], action: str) -> bool:
    return step.get("uses", "").split("@")[0] == action


def test_the_workflows_exist():
    assert {path.name for path in WORKFLOW_FILES} >= {"pull-request.yml", "main.yml", "containers.yml", "checks.yml"}


def test_every_workflow_passes_actionlint():
    result = subprocess.run([str(ACTIONLINT), "-no-color", *map(str, WORKFLOW_FILES)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda path: path.name)
def test_every_action_is_pinned_to_a_full_commit_with_its_release_in_a_comment(path: Path):
    uses_lines = [line.strip() for line in path.read_text().splitlines() if re.match(r"^\s*(- )?uses: ", line)]
    assert uses_lines
    for line in uses_lines:
        reference = line.split("uses: ", 1)[1]
        if reference.startswith("./"):
            continue
        action = reference.split("@")[0]
        assert PINNED_USES.match(reference) or action in UNPINNED_EXCEPTIONS, line


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda path: path.name)
def test_every_workflow_reads_only_by_default_and_every_job_has_a_timeout(path: Path):
    workflow = _load(path.name)
    assert workflow["permissions"] == {"contents": "read"}
    for job_id, job in workflow["jobs"].items():
        if "uses" in job:  # a call to a reusable workflow: its own jobs carry their timeouts
            continue
        assert 1 <= job["timeout-minutes"] <= 60, job_id


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda path: path.name)
def test_only_jobs_that_assume_an_aws_role_may_request_an_oidc_token(path: Path):
    workflow = _load(path.name)
    for job_id, job in workflow["jobs"].items():
        assumes_role = any(_uses(step, "aws-actions/configure-aws-credentials") for step in job.get("steps", []))
        permissions = job.get("permissions", {})
        assert (permissions.get("id-token") == "write") == assumes_role, job_id
        if assumes_role:
            assert permissions == {"contents": "read", "id-token": "write"}, job_id


def branch_mismatches(branch: str) -> list[str]:
    """Where a workflow names a branch other than ``branch``: its push trigger's branches, and every
    `refs/heads/<name>` in it (the conditions that decide whether a job may take AWS credentials)."""
    mismatches = []
    for path in WORKFLOW_FILES:
        on = _load(path.name)["on"]
        push = (on.get("push") or {}) if isinstance(on, dict) else {}
        named = [("on.push.branches", name) for name in push.get("branches", [])]
        named += [("refs/heads/", name) for name in re.findall(r"refs/heads/([\w./-]+)", path.read_text())]
        mismatches += [f"{path.name} {where} {name}" for where, name in named if name != branch]
    return mismatches


def test_every_branch_a_workflow_names_is_the_configured_ci_branch():
    """With config github.branch set to another branch, main.yml would diff and containers.yml push on a branch
    whose token the CI roles refuse: this names every place to change."""
    assert branch_mismatches(_ci_branch()) == []
    # What a change of github.branch asks for (the check reads both workflows, their triggers and conditions).
    assert branch_mismatches("release/2026") == [
        f"containers.yml on.push.branches {_ci_branch()}", f"containers.yml refs/heads/ {_ci_branch()}",
        f"main.yml on.push.branches {_ci_branch()}"]


def test_pull_requests_run_make_test_then_make_synth():
    workflow = _load("pull-request.yml")
    assert "pull_request" in workflow["on"]
    assert workflow["concurrency"] == {"group": "pull-request-${{ github.event.pull_request.number }}", "cancel-in-progress": True}
    assert workflow["jobs"] == {"checks": {"uses": "./.github/workflows/checks.yml"}}

    checks = _load("checks.yml")
    assert "workflow_call" in checks["on"]
    steps = _steps(checks, "test-and-synth")
    runs = [step.get("run") for step in steps]
    assert runs.index("make test") < runs.index("make synth")
    setup = next(step for step in steps if _uses(step, "actions/setup-python"))
    assert setup["with"]["python-version"] == "3.11"
    cache = next(step for step in steps if _uses(step, "actions/cache"))
    for pin_file in ("requirements*.txt", "constraints*.txt", "tools/checkov/*.txt", "package-lock.json"):
        assert pin_file in cache["with"]["key"]
    # main.yml's diff jobs restore what the checks job saved: the same key, or they save a second cache each.
    diff_cache = next(step for step in _steps(_load("main.yml"), "diff") if _uses(step, "actions/cache"))
    assert (diff_cache["with"]["key"], diff_cache["with"]["path"]) == (cache["with"]["key"], cache["with"]["path"])


def test_main_runs_the_checks_then_diffs_every_stage_through_the_diff_role():
    workflow = _load("main.yml")
    assert workflow["on"] == {"push": {"branches": [_ci_branch()]}}  # the branch the diff role trusts
    assert workflow["jobs"]["checks"] == {"uses": "./.github/workflows/checks.yml"}
    diff = workflow["jobs"]["diff"]
    assert diff["needs"] == "checks"

    expected = [(CONFIG.stage_name(region.name), region.name) for region in CONFIG.regions]
    if CONFIG.has_edge:
        expected.append((f"{CONFIG.prefix}-edge", "us-east-1"))
    assert [(entry["stage"], entry["region"]) for entry in diff["strategy"]["matrix"]["include"]] == expected

    steps = diff["steps"]
    credentials = next(step for step in steps if _uses(step, "aws-actions/configure-aws-credentials"))
    assert credentials["with"]["role-to-assume"] == "${{ vars.AWS_DIFF_ROLE_ARN }}"
    assert credentials["with"]["aws-region"] == "${{ matrix.region }}"
    diff_step = steps[-1]
    assert diff_step["env"] == {"STAGE": "${{ matrix.stage }}"}
    # The lookup role (all the diff role may assume) serves only the template method.
    assert 'npx --no-install cdk diff --method=template "${STAGE}/*"' in diff_step["run"]


def _container_steps() -> list[dict[str, Any]]:
    return _steps(_load("containers.yml"), "image")


def _builds(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The builds into OCI layouts (what is scanned and pushed), not the smoke test's load."""
    return [step for step in steps if _uses(step, "docker/build-push-action") and "outputs" in step["with"]]


def _image_load(steps: list[dict[str, Any]]) -> dict[str, Any]:
    (load,) = [step for step in steps if _uses(step, "docker/build-push-action") and step["with"].get("load")]
    return load


SMOKE_SCRIPT = "services/ci/smoke_image.sh"


def _smoke(steps: list[dict[str, Any]]) -> dict[str, Any]:
    (smoke,) = [step for step in steps if SMOKE_SCRIPT in step.get("run", "")]
    return smoke


def _oci_layout(build: dict[str, Any]) -> str:
    """Where a build writes its OCI image layout (a directory: tar=false)."""
    exporter = dict(option.split("=", 1) for option in build["with"]["outputs"].split(","))
    assert exporter["type"] == "oci" and exporter["tar"] == "false", build["name"]
    return exporter["dest"]


def _push(steps: list[dict[str, Any]]) -> dict[str, Any]:
    (push,) = [step for step in steps if step.get("id") == "push"]
    return push


def test_images_are_built_for_both_platforms_for_every_service_with_the_actions_cache():
    workflow = _load("containers.yml")
    assert workflow["on"]["push"] == {"branches": [_ci_branch()], "paths": ["services/**", ".github/workflows/containers.yml"]}
    assert workflow["on"]["pull_request"] == {"paths": ["services/**", ".github/workflows/containers.yml"]}
    assert "workflow_dispatch" in workflow["on"]
    job = workflow["jobs"]["image"]
    assert job["strategy"]["matrix"]["service"] == [service.name for service in CONFIG.services]

    steps = job["steps"]
    builds = _builds(steps)
    assert len(_index(steps, lambda step: _uses(step, "docker/build-push-action"))) == 3  # and the smoke test's load
    assert sorted(step["with"]["platforms"] for step in builds) == ["linux/amd64", "linux/arm64"]
    for step in builds:
        platform = step["with"]["platforms"].split("/")[1]
        assert step["with"]["context"] == "services"
        assert step["with"]["file"] == "services/${{ matrix.service }}/Dockerfile"
        assert step["with"]["cache-from"] == f"type=gha,scope=${{{{ matrix.service }}}}-{platform}"
        assert step["with"]["cache-to"] == f"type=gha,mode=max,scope=${{{{ matrix.service }}}}-{platform}"
        # Built once, to disk, never pushed or loaded by the build itself: the push sends this layout.
        assert not {"push", "load", "tags"} & set(step["with"]), step["name"]
        assert step["with"]["provenance"] is False  # one manifest per layout, the one that is scanned
        assert _oci_layout(step) == f"${{{{ runner.temp }}}}/oci/{platform}"
    assert _index(steps, lambda step: _uses(step, "docker/setup-qemu-action"))
    assert _index(steps, lambda step: _uses(step, "docker/setup-buildx-action"))


def test_both_platform_images_are_scanned_and_a_high_or_critical_finding_stops_the_job_before_the_push():
    steps = _container_steps()
    scans = _index(steps, lambda step: _uses(step, "aquasecurity/trivy-action"))
    builds = [steps.index(step) for step in _builds(steps)]
    credentials = _index(steps, lambda step: _uses(step, "aws-actions/configure-aws-credentials"))
    push = steps.index(_push(steps))
    assert len(scans) == 2 and len(builds) == 2 and len(credentials) == 1
    # No AWS credentials exist until both images have passed the scan, and nothing builds after it
    # (the smoke test's load of the amd64 image included).
    assert max(_index(steps, lambda step: _uses(step, "docker/build-push-action"))) < min(scans)
    assert max(scans) < credentials[0] < push

    # Each scan reads a build's OCI layout from disk (`trivy image --input`), not a name that could be rebuilt.
    assert sorted(steps[i]["with"]["input"] for i in scans) == sorted(_oci_layout(steps[i]) for i in builds)
    for i in scans:
        assert "image-ref" not in steps[i]["with"]
        assert steps[i]["with"]["exit-code"] == "1"
        assert steps[i]["with"]["severity"] == "HIGH,CRITICAL"
        assert "ignore-unfixed" not in steps[i]["with"]  # an unfixed HIGH or CRITICAL finding fails too
        assert "if" not in steps[i]  # a scan never skips


def test_the_push_sends_the_scanned_layouts_by_the_digests_the_builds_reported():
    """What reaches ECR is what Trivy scanned: the same layout directory, checked against the build's digest."""
    steps = _container_steps()
    push = _push(steps)
    assert "uses" not in push  # not a second docker build
    scanned = {step["with"]["input"] for step in steps if _uses(step, "aquasecurity/trivy-action")}
    builds = {step["id"]: step for step in _builds(steps)}
    assert set(builds) == {"build-amd64", "build-arm64"}
    for platform in ("amd64", "arm64"):
        layout, digest = f"${platform.upper()}_LAYOUT", f"${platform.upper()}_DIGEST"
        assert push["env"][layout[1:]] == _oci_layout(builds[f"build-{platform}"])
        assert push["env"][layout[1:]] in scanned
        assert push["env"][digest[1:]] == f"${{{{ steps.build-{platform}.outputs.digest }}}}"
        # crane pushes that layout to the build's digest, and the step fails unless that is what it pushed.
        pushed = f'"${{REPOSITORY_URI}}@${{{platform.upper()}_DIGEST}}"'
        assert f'test "$(crane push "{layout}" {pushed})" = {pushed}' in push["run"]
    run = push["run"]
    assert run.startswith("set -euo pipefail")
    assert not re.search(r"docker (push|build |buildx build)", run)  # nothing is rebuilt or re-exported
    # The one tag is an index of exactly the two scanned manifests, read back from ECR and compared.
    assert ('docker buildx imagetools create --tag "${REPOSITORY_URI}:${GITHUB_SHA}" \\\n'
            '  "${REPOSITORY_URI}@${AMD64_DIGEST}" "${REPOSITORY_URI}@${ARM64_DIGEST}"') in run
    assert 'imagetools inspect --raw "${REPOSITORY_URI}:${GITHUB_SHA}"' in run
    assert 'test "$pushed" = "$scanned"' in run

    install = next(step for step in steps if step.get("name") == "Install crane")
    assert re.fullmatch(r"go install github\.com/google/go-containerregistry/cmd/crane@v\d+\.\d+\.\d+\n"
                        r'echo "\$GOBIN" >> "\$GITHUB_PATH"\n', install["run"])
    assert steps.index(install) < steps.index(push)


def test_a_pull_request_builds_and_scans_but_gets_no_credentials_and_pushes_nothing():
    workflow = _load("containers.yml")
    job = workflow["jobs"]["image"]
    # Push from the CI branch (a push or a run by hand), with the push role configured; never from a pull request or
    # another branch, whose token the push role refuses.
    assert job["env"]["PUSH"] == (f"${{{{ github.event_name != 'pull_request' && github.ref == 'refs/heads/{_ci_branch()}' "
                                  "&& vars.AWS_IMAGE_PUSH_ROLE_ARN != '' }}")
    steps = job["steps"]
    first_aws_step = steps.index(next(step for step in steps if step.get("id") == "app"))
    assert first_aws_step > max(_index(steps, lambda step: _uses(step, "aquasecurity/trivy-action")))
    for step in steps[:first_aws_step]:
        assert "if" not in step, step["name"]  # build and scan always run
    for step in steps[first_aws_step:]:
        assert step["if"].startswith("env.PUSH == 'true'"), step["name"]  # everything after them needs PUSH
    # A newer push to a pull request cancels its older scan; on main, runs for one commit queue instead.
    assert workflow["concurrency"] == {"group": "containers-${{ github.event.pull_request.number || github.sha }}",
                                       "cancel-in-progress": "${{ github.event_name == 'pull_request' }}"}


def test_the_push_is_both_platforms_under_one_immutable_tag_the_commit_sha():
    steps = _container_steps()
    push = _push(steps)
    check = _region_check(steps)
    # Tags are immutable: a commit whose tag the primary region holds is not pushed again.
    assert push["if"] == "env.PUSH == 'true' && steps.ecr.outputs.exists == 'false'"
    install = next(step for step in steps if step.get("name") == "Install crane")
    assert install["if"] == "env.PUSH == 'true'"
    assert steps.index(install) < steps.index(check) < steps.index(push)
    # One tag only, the commit SHA, in <prefix>/<service> of the primary region read from cdk.json;
    # the manifests themselves go up untagged (by digest), so no other tag is ever taken.
    assert push["env"]["REPOSITORY_URI"] == "${{ steps.ecr.outputs.repository }}"
    assert re.findall(r"--tag \S+", push["run"]) == ['--tag "${REPOSITORY_URI}:${GITHUB_SHA}"']
    assert check["env"]["REPOSITORY"] == "${{ steps.app.outputs.prefix }}/${{ matrix.service }}"
    credentials = next(step for step in steps if _uses(step, "aws-actions/configure-aws-credentials"))
    assert credentials["with"]["role-to-assume"] == "${{ vars.AWS_IMAGE_PUSH_ROLE_ARN }}"
    assert credentials["with"]["aws-region"] == "${{ steps.app.outputs.region }}"
    config_step = next(step for step in steps if step.get("id") == "app")
    assert ".context.prefix" in config_step["run"] and ".context.primary_region" in config_step["run"]


REGION_SCRIPT = "services/ci/ecr_regions.sh"
SHA = "4f2c" + "0" * 36


def _region_check(steps: list[dict[str, Any]]) -> dict[str, Any]:
    (check,) = [step for step in steps if step.get("run") == f"bash {REGION_SCRIPT}"]
    return check


def _outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines()) if path.exists() else {}


def _app_outputs(tmp_path: Path) -> dict[str, str]:
    """What the workflow's step `app` reads from cdk.json: its own shell, run on the repository's cdk.json."""
    app = next(step for step in _container_steps() if step.get("id") == "app")
    output = tmp_path / "app-output"
    subprocess.run(["bash", "-e", "-c", app["run"]], cwd=REPO_ROOT, env={"PATH": "/usr/bin:/bin", "GITHUB_OUTPUT": str(output)},
                   check=True, timeout=30)
    return _outputs(output)


# Stand-ins for what the region check calls. ECR: $STATE/<region> holds the digest the commit's tag names there;
# empty or absent: no such tag; NOREPO: no repository; DENIED: no answer. AWS_WARNS=1: the CLI prints a warning
# on stderr before answering.
_FAKE_AWS = r"""#!/bin/bash
echo "aws $*" >> "$CALLS/calls.log"
[ -n "$AWS_WARNS" ] && echo "WARNING: your AWS CLI version is out of date" >&2
region=""; previous=""
for word in "$@"; do [ "$previous" = --region ] && region=$word; previous=$word; done
case "$1 $2" in
  "sts get-caller-identity") echo 111122223333 ;;
  "ecr get-login-password") echo token ;;
  "ecr describe-images")
    case "$(cat "$STATE/$region" 2>/dev/null)" in
      NOREPO) echo "An error occurred (RepositoryNotFoundException) when calling the DescribeImages operation: The repository does not exist" >&2; exit 254 ;;
      DENIED) echo "An error occurred (AccessDeniedException) when calling the DescribeImages operation: not authorized" >&2; exit 254 ;;
      "") echo "An error occurred (ImageNotFoundException) when calling the DescribeImages operation: The image does not exist" >&2; exit 254 ;;
      *) cat "$STATE/$region" ;;
    esac ;;
  *) echo "unexpected: aws $*" >&2; exit 2 ;;
esac
"""
_FAKE_DOCKER = r"""#!/bin/bash
[ "$1" = login ] || { echo "unexpected: docker $*" >&2; exit 2; }
[ "$(cat)" = token ] || exit 1
echo "docker $*" >> "$CALLS/calls.log"
"""


def _run_region_check(tmp_path: Path, states: dict[str, str], aws_warns: bool = False,
                      **overrides: str) -> tuple[subprocess.CompletedProcess[str], dict[str, str], str]:
    """Runs the workflow's region check for auth as the workflow wires it: its env from step `app`'s outputs (read
    from cdk.json by that step's own shell), against stand-in aws and docker."""
    app = _app_outputs(tmp_path)
    check = _region_check(_container_steps())
    env = {name: re.sub(r"\$\{\{ steps\.app\.outputs\.(\w+) \}\}", lambda m: app[m.group(1)], value).replace("${{ matrix.service }}", "auth")
           for name, value in check["env"].items()}
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name, text in (("aws", _FAKE_AWS), ("docker", _FAKE_DOCKER)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    for region, value in states.items():
        (state / region).write_text(value)
    result = subprocess.run(["bash", "-c", check["run"]], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                            env={"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(tmp_path), "STATE": str(state),
                                 "AWS_WARNS": "1" if aws_warns else "", "GITHUB_SHA": SHA,
                                 "GITHUB_OUTPUT": str(tmp_path / "output"), **env, **overrides})
    calls = (tmp_path / "calls.log").read_text() if (tmp_path / "calls.log").exists() else ""
    return result, _outputs(tmp_path / "output"), calls


PRIMARY = CONFIG.primary_region
OTHERS = [name for name in CONFIG.region_names if name != PRIMARY]


def _registry(region: str) -> str:
    return f"111122223333.dkr.ecr.{region}.amazonaws.com"


def test_the_region_check_reads_every_region_of_cdk_json_and_asks_each():
    """The repository check covers each region cdk.json configures, read by the workflow itself."""
    assert OTHERS  # the reference settings have a second region to check
    steps = _container_steps()
    check = _region_check(steps)
    assert check["if"] == "env.PUSH == 'true'"
    assert check["env"] == {"REPOSITORY": "${{ steps.app.outputs.prefix }}/${{ matrix.service }}",
                            "PRIMARY_REGION": "${{ steps.app.outputs.region }}", "REGIONS": "${{ steps.app.outputs.regions }}"}
    credentials = next(step for step in steps if _uses(step, "aws-actions/configure-aws-credentials"))
    assert steps.index(credentials) < steps.index(check) < steps.index(_push(steps))


def test_the_workflow_reads_the_prefix_and_every_region_from_cdk_json(tmp_path):
    assert _app_outputs(tmp_path) == {"prefix": CONFIG.prefix, "region": PRIMARY, "regions": " ".join(CONFIG.region_names)}


def test_nothing_is_pushed_while_a_region_lacks_the_repository(tmp_path):
    """Replication would create the repository with ECR's defaults on the first push, and that region's platform
    stack would then fail on the existing name: the job stops first, naming the stack to deploy."""
    result, outputs, calls = _run_region_check(tmp_path, {PRIMARY: "", **{region: "NOREPO" for region in OTHERS}})
    assert result.returncode != 0
    for region in OTHERS:
        assert (f"::error::the ECR repository {CONFIG.prefix}/auth is not in {region}: deploy every region's platform stack "
                f"(npx cdk deploy '{CONFIG.stage_name(region)}/platform') before the first push") in result.stdout
    assert "exists" not in outputs  # the push step does not run
    for region in CONFIG.region_names:  # every region was asked
        assert f"aws ecr describe-images --region {region} --repository-name {CONFIG.prefix}/auth --image-ids imageTag={SHA}" in calls


def test_a_new_commit_is_pushed_to_the_primary_region_only(tmp_path):
    """Replication copies the push to the other regions: docker logs in to the primary's registry alone."""
    result, outputs, calls = _run_region_check(tmp_path, {region: "" for region in CONFIG.region_names})
    assert result.returncode == 0, result.stdout + result.stderr
    assert outputs == {"repository": f"{_registry(PRIMARY)}/{CONFIG.prefix}/auth", "exists": "false"}
    assert [line for line in calls.splitlines() if line.startswith("docker ")] == [
        f"docker login --username AWS --password-stdin {_registry(PRIMARY)}"]


@pytest.mark.parametrize("others", ["", "sha256:aaa"])
def test_a_tag_the_primary_holds_is_not_pushed_again_whatever_the_other_regions_hold(tmp_path, others):
    """Tags are immutable: a rerun pushes nothing. A region without the tag (added since) gets it from replication
    backfill, not from this job."""
    result, outputs, calls = _run_region_check(tmp_path, {PRIMARY: "sha256:aaa", **{region: others for region in OTHERS}})
    assert result.returncode == 0, result.stdout + result.stderr
    assert outputs == {"exists": "true"}
    assert "docker" not in calls


def test_a_tag_only_another_region_holds_stops_the_job_instead_of_a_rebuild(tmp_path):
    """The primary's repository was re-created: a rebuild would push another digest under the same immutable tag,
    and replicating it into the region that holds the tag would fail without a word."""
    result, outputs, calls = _run_region_check(tmp_path, {PRIMARY: "", **{region: "sha256:aaa" for region in OTHERS}})
    assert result.returncode != 0
    assert (f"::error::{CONFIG.prefix}/auth:{SHA} is in {OTHERS[0]} (sha256:aaa) but not in {PRIMARY} (its repository "
            "re-created?): a rebuild would push another digest") in result.stdout
    assert "exists" not in outputs and "docker" not in calls


def test_a_cli_warning_is_not_read_as_a_digest(tmp_path):
    result, outputs, _ = _run_region_check(tmp_path, {PRIMARY: "sha256:aaa", **{region: "" for region in OTHERS}}, aws_warns=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert outputs == {"exists": "true"}
    assert f"is in {PRIMARY} (sha256:aaa): nothing to push" in result.stdout


def test_a_primary_region_missing_from_the_regions_is_a_clear_error(tmp_path):
    result, outputs, calls = _run_region_check(tmp_path, {}, PRIMARY_REGION="us-west-2")
    assert result.returncode != 0
    assert "::error::the primary region us-west-2 is not one of the regions of cdk.json" in result.stdout
    assert "unbound variable" not in result.stderr and outputs == {} and calls == ""


def test_a_region_ecr_does_not_answer_about_fails_the_job_instead_of_guessing(tmp_path):
    result, outputs, calls = _run_region_check(tmp_path, {PRIMARY: "sha256:aaa", **{region: "DENIED" for region in OTHERS}})
    assert result.returncode != 0
    assert f"::error::could not check {CONFIG.prefix}/auth:{SHA} in {OTHERS[0]}: An error occurred (AccessDeniedException)" in result.stdout
    assert "exists" not in outputs and "docker" not in calls


def _markdown_section(path: Path, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    text = path.read_text()
    level = heading.split(" ")[0]
    start = text.index(f"\n{heading}\n")
    end = re.search(rf"\n#{{1,{len(level)}}} ", text[start + 1:])
    return text[start:start + 1 + end.start()] if end else text[start:]


@pytest.mark.parametrize("path, heading", [(REPO_ROOT / "README.md", "## CI"), (REPO_ROOT / "pipelines" / "README.md", "## Set it up")],
                         ids=["README CI", "pipelines README set-up"])
def test_the_ci_set_up_deploys_every_regions_repositories_and_the_push_role_before_the_first_push(path, heading):
    """Deploying only the primary stage before containers.yml's first push turns on replication (its global stack),
    which then creates the other regions' repositories with ECR's defaults, and their platform stacks fail on the
    names. The set-up's deploy commands must cover every region's platform stack and the primary's global stack."""
    section = _markdown_section(path, heading)
    patterns = [word for command in re.findall(r"npx cdk deploy ([^`\n]*)", section)
                for word in shlex.split(command) if not word.startswith("-")]
    needed = [f"{CONFIG.stage_name(region)}/platform" for region in CONFIG.region_names]
    needed.append(f"{CONFIG.stage_name(PRIMARY)}/global")
    for stack in needed:
        assert any(fnmatch.fnmatchcase(stack, pattern) for pattern in patterns), f"{path.relative_to(REPO_ROOT)} {heading}: {stack} not deployed"


def test_the_smoke_test_loads_the_amd64_image_from_the_same_build():
    """A cache hit of the amd64 build, into the Docker engine under a local tag; never pushed."""
    steps = _container_steps()
    load = _image_load(steps)
    (amd64,) = [step for step in _builds(steps) if step["with"]["platforms"] == "linux/amd64"]
    assert load["uses"] == amd64["uses"]
    assert steps.index(amd64) < steps.index(load)
    for key in ("context", "file", "platforms", "provenance", "cache-from"):
        assert load["with"][key] == amd64["with"][key], key
    assert load["with"]["load"] is True
    assert load["with"]["tags"] == "local/${{ matrix.service }}:smoke"  # no registry: nothing can push it
    assert not {"push", "outputs", "cache-to"} & set(load["with"])
    assert "if" not in load


def test_every_service_is_smoke_tested_as_ecs_runs_it_before_anything_is_pushed():
    workflow = _load("containers.yml")
    job = workflow["jobs"]["image"]
    steps = job["steps"]
    smoke = _smoke(steps)
    index = steps.index(smoke)
    # Every service, on pull requests and on main alike: never gated (on PUSH or anything else), after
    # the scans, before the first step that reads AWS settings, takes credentials or pushes.
    assert "if" not in smoke
    assert max(_index(steps, lambda step: _uses(step, "aquasecurity/trivy-action"))) < index
    assert steps.index(_image_load(steps)) < index
    first_push_step = min(_index(steps, lambda step: "env.PUSH" in step.get("if", "")))
    assert index < first_push_step
    assert index < min(_index(steps, lambda step: _uses(step, "aws-actions/configure-aws-credentials")))
    assert index < steps.index(_push(steps))
    # Through bash: a checkout or source archive that drops the executable bit (CodePipeline's may) still runs it.
    assert smoke["run"] == f"bash {SMOKE_SCRIPT}"
    # It runs the loaded image, and checks its layers against the scanned amd64 layout.
    (amd64,) = [step for step in _builds(steps) if step["with"]["platforms"] == "linux/amd64"]
    assert smoke["env"]["IMAGE"] == _image_load(steps)["with"]["tags"]
    assert smoke["env"]["LAYOUT"] == _oci_layout(amd64)
    assert smoke["env"]["GRPC_PORT"] == "${{ matrix.grpc-port }}"
    assert smoke["env"]["WORKER"] == "${{ matrix.worker }}"

    # The matrix tells it, per service, the gRPC port and the worker the task definition runs.
    include = {entry["service"]: entry for entry in job["strategy"]["matrix"]["include"]}
    assert set(include) <= set(job["strategy"]["matrix"]["service"])
    for service in CONFIG.services:
        entry = include.get(service.name, {})
        assert entry.get("grpc-port") == service.grpc_port, service.name
        if service.worker:
            assert ["python", "-m", entry.get("worker")] == list(service.worker_command), service.name
        else:
            assert "worker" not in entry, service.name


def test_the_smoke_script_runs_each_container_as_the_task_definition_does():
    script = (REPO_ROOT / SMOKE_SCRIPT).read_text()
    assert script.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in script
    (as_ecs,) = re.findall(r"^AS_ECS=\((.*?)\)$", script, re.MULTILINE | re.DOTALL)
    flags = as_ecs.split()
    # ECS: read-only root, a tmpfs per scratch path with the task definition's options and size (no Docker volume,
    # which Docker makes writable where a Fargate task volume is not), the configured user.
    assert "--read-only" in flags
    (scratch,) = MeshedServiceProps.__dataclass_fields__["scratch_paths"].default
    size_mib = MeshedServiceProps.__dataclass_fields__["scratch_size_mib"].default
    assert flags[flags.index("--tmpfs") + 1] == f'"{scratch}:{",".join(TMPFS_MOUNT_OPTIONS)},size={size_mib}m"'
    assert "--mount" not in flags and "--volume" not in flags and "-v" not in flags
    assert {service.user for service in CONFIG.services} == {"10001:10001"}
    assert flags[flags.index("--user") + 1] == "10001:10001"
    # Stricter than Fargate needs: no capabilities, no privilege gain.
    assert flags[flags.index("--cap-drop") + 1] == "ALL"
    assert flags[flags.index("--security-opt") + 1] == "no-new-privileges"
    # Every container it starts (the pip check, the image's command, the worker) gets all of that.
    runs = re.findall(r"docker run (.*)", script)
    assert len(runs) == 3 and all(re.match(r'(-d|--rm) "\$\{AS_ECS\[@\]\}"', run) for run in runs)
    assert "--network none --no-healthcheck" in runs[2]  # the worker: no AWS at all, no health check, as in ECS
    # No installer in the runtime image: neither the venv's python nor the base image's finds pip.
    assert 'find_spec("pip") is not None' in script and 'glob("pip-*.whl")' in script
    # ECS's stop timeout, the liveness path, Docker's own health status, and the /tmp-only diff.
    assert f"docker stop --timeout {STOP_TIMEOUT_SECONDS} " in script
    assert "/health/live" in script and "{{.State.Health.Status}}" in script
    assert "docker diff" in script and 'index($2, "/tmp/") != 1' in script
    assert "docker top" in script and "10001" in script
