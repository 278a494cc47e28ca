"""The gRPC contract (services/proto): buf lint and buf breaking pass, the checked-in Python stubs are
exactly what the documented protoc command generates, and buf breaking does fail on a breaking change."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROTO = REPO / "services" / "proto"
STUBS = REPO / "services" / "common" / "mf" / "persona" / "v1"
BUF = REPO / "node_modules" / ".bin" / "buf"
BASELINE = PROTO / "breaking-baseline.binpb"
GENERATED = ("persona_pb2.py", "persona_pb2.pyi", "persona_pb2_grpc.py")



@pytest.fixture(scope="module")
def buf() -> Path:
    assert BUF.exists(), f"buf CLI missing at {BUF.relative_to(REPO)}: run `npm ci` at the repository root"
    return BUF


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_buf_lint_passes(buf):
    result = run(buf, "lint", cwd=PROTO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_breaking_against_the_released_baseline_passes(buf):
    result = run(buf, "breaking", "--against", BASELINE.name, cwd=PROTO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_removed_field_is_reported_as_breaking(buf, tmp_path):
    # Proves the check above can fail: the same module with one field of Persona removed.
    module = tmp_path / "proto"
    shutil.copytree(PROTO, module, ignore=shutil.ignore_patterns("*.binpb", "*.md"))
    proto = module / "mf" / "persona" / "v1" / "persona.proto"
    source = proto.read_text()
    assert "  string display_name = 2;\n" in source
    proto.write_text(source.replace("  string display_name = 2;\n", "", 1))

    result = run(buf, "breaking", "--against", BASELINE, cwd=module)
    assert result.returncode != 0, "buf breaking accepted a removed field"
    assert "display_name" in result.stdout + result.stderr


def documented_protoc_command() -> list[str]:
    """The stub generation command from services/proto/README.md (run from the repository root)."""
    lines = [line.strip() for line in (PROTO / "README.md").read_text().splitlines() if "grpc_tools.protoc" in line]
    assert len(lines) == 1, f"expected one protoc command in services/proto/README.md, found {len(lines)}"
    return shlex.split(lines[0])


def test_checked_in_stubs_match_a_fresh_generation(tmp_path):
    command = documented_protoc_command()
    out_flags = [arg for arg in command if arg.startswith(("--python_out=", "--pyi_out=", "--grpc_python_out="))]
    assert sorted(flag.split("=", 1)[0] for flag in out_flags) == ["--grpc_python_out", "--pyi_out", "--python_out"]
    assert {flag.split("=", 1)[1] for flag in out_flags} == {"services/common"}
    # The same command, writing into a temporary folder instead of services/common.
    command = [f"{arg.split('=', 1)[0]}={tmp_path}" if arg in out_flags else arg for arg in command]

    result = run(*command, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in GENERATED:
        fresh = (tmp_path / "mf" / "persona" / "v1" / name).read_text()
        assert fresh == (STUBS / name).read_text(), f"services/common/mf/persona/v1/{name} is stale: regenerate it (services/proto/README.md)"
