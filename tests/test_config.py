"""The config's public interface: defaults, cdk.json and the README agree; overrides parse."""

from __future__ import annotations

import dataclasses
import json

import pytest

from stacks.config import (
    CONFIG_KEYS,
    SERVICEKIT_DRAIN_SECONDS,
    SERVICEKIT_SHUTDOWN_TIMEOUT_SECONDS,
    STOP_MARGIN_SECONDS,
    STOP_TIMEOUT_SECONDS,
    TABLE_ITEM_ACTIONS,
    ConfigError,
    TableIndexConfig,
    default_rule_priority,
    load_config,
)
from tests.assembly import CDK_JSON, DEPLOYMENT_KEYS, REPO_ROOT, cdk_json_context, committed_context, source_value, with_settings


def test_cdk_json_holds_every_key_at_its_documented_default():
    """Apart from the deployment keys, which a deployment sets in cdk.json (tests/assembly.py, DEPLOYMENT_KEYS)."""
    assert load_config(cdk_json_context()) == load_config({})
    assert set(CONFIG_KEYS) <= set(committed_context())
    load_config(committed_context())  # and cdk.json as it is, filled in or not, is a valid config


# A deployment as the set-up steps configure it in cdk.json (README "CI", pipelines/README.md "Set it up"):
# prod, an account, a connection in that account and the primary region with the release approvers, the CI
# repository, a domain, on-call addresses.
FILLED_IN = {
    "profile": "prod",
    "account": "123456789012",
    "pipeline": {"connection_arn": "arn:aws:codeconnections:eu-central-1:123456789012:connection/0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d",
                 "repository": "acme/platform", "branch": "main", "approval_emails": ["release@acme.example"]},
    "github": {"repository": "acme/platform"},
    "domain": {"zone_name": "acme.example", "hosted_zone_id": "Z0ABCDEFGHIJKLMNOPQRS"},
    "budget.notify_emails": ["finance@acme.example"],
    "observability.notify_emails": ["oncall@acme.example"],
}


def test_a_deployment_filled_into_cdk_json_leaves_the_tests_reference_settings_as_they_are(tmp_path):
    """The pipeline runs `make test` on the operator's cdk.json: its deployment keys and release tags must not reach
    the tests."""
    assert set(FILLED_IN) == set(DEPLOYMENT_KEYS)
    cdk_json = json.loads(CDK_JSON.read_text())
    with_settings(cdk_json["context"], FILLED_IN)
    for settings in cdk_json["context"]["services"].values():  # and a release: every service on a pushed image
        settings["image_tag"] = "0123456789abcdef0123456789abcdef01234567"
    (tmp_path / "cdk.json").write_text(json.dumps(cdk_json))

    deployed = load_config(committed_context(tmp_path / "cdk.json"))  # a valid config, with every key set
    assert (deployed.profile, deployed.account, deployed.pipeline.repository, deployed.github.repository, deployed.domain.zone_name,
            deployed.budget.notify_emails, deployed.observability.notify_emails) == (
        "prod", "123456789012", "acme/platform", "acme/platform", "acme.example", ("finance@acme.example",), ("oncall@acme.example",))
    assert {service.image_tag for service in deployed.services} == {"0123456789abcdef0123456789abcdef01234567"}
    assert cdk_json_context(tmp_path / "cdk.json") == cdk_json_context()


def test_defaults():
    config = load_config({})
    assert (config.prefix, config.primary_region, config.profile, config.mesh, config.account, config.namespace) == (
        "mf", "eu-central-1", "dev", "service-connect", None, "svc.local"
    )
    assert [(r.name, r.cidr) for r in config.regions] == [("eu-central-1", "10.10.0.0/16"), ("eu-west-1", "10.20.0.0/16")]
    assert config.regions[1].availability_zones == ("eu-west-1a", "eu-west-1b", "eu-west-1c")


def test_cli_overrides_arrive_as_strings_and_lists_as_json():
    config = load_config({"profile": "prod", "account": "111122223333",
                          "regions": '[{"name": "eu-west-1", "cidr": "172.16.0.0/20"}]', "primary_region": "eu-west-1"})
    assert config.is_prod and config.account == "111122223333"
    assert config.regions[0].cidr == "172.16.0.0/20"


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_config({}).profile = "prod"  # type: ignore[misc]


def test_cdk_owned_context_keys_are_not_config_errors():
    load_config({"@aws-cdk/core:newStyleStackSynthesis": True, "aws:cdk:enable-path-metadata": True,
                 "acknowledged-issue-numbers": [1234]})


def test_errors_are_one_line():
    with pytest.raises(ConfigError) as error:
        load_config({"regions": [{"name": "eu-central-1", "cidr": "10.10.0.0/16\nx"}]})
    assert "\n" not in str(error.value)


def test_readme_config_table_lists_every_key():
    readme = (REPO_ROOT / "README.md").read_text()
    for key in CONFIG_KEYS:
        assert f"| `{key}` |" in readme, key


def test_load_balancer_rule_priorities_stay_with_their_services():
    # The deployed stages' numbers, which earlier versions gave by position.
    assert {s.name: s.priority for s in load_config({}).services} == {"auth": 10, "persona": 20, "vc-start": 30}
    # Unset: derived from the name, so another service's coming or going does not change it.
    billing = {"path": "/api/billing", "image_tag": "1"}
    alone, among = (load_config({"services": services}).services for services in (
        {"billing": billing}, {"auth": {"path": "/api/auth"}, "billing": billing, "vc-start": {}}))
    assert alone[0].priority == among[1].priority == default_rule_priority("billing")
    assert among[2].priority is None  # no path, no rule


def test_services_events_and_ports_defaults():
    services = {service.name: service for service in load_config({}).services}
    assert [name for name, service in services.items() if service.table] == ["auth", "persona", "vc-start"]
    assert services["persona"].grpc_port == 50051 and services["auth"].grpc_port is None
    assert services["persona"].worker_command == ("python", "-m", "persona_service.worker")
    assert services["vc-start"].worker_command == ("python", "-m", "vc_start.worker")
    assert dict(services["persona"].consumes) == {"vc-start": ("SessionStarted", "SessionCancelled")}
    assert dict(services["vc-start"].consumes) == {"persona": ("SlotConfirmed", "SlotReleased")}
    config = load_config({})
    assert config.producers == {"persona", "vc-start"} and config.token_signer.name == "auth"
    assert config.events.max_receive_count == 8 and config.event_source("persona") == "mf.persona"
    # Without `module`, the package is the service name with underscores.
    assert load_config({"services": {"vc-start": {}}}).services[0].module == "vc_start"
    # Each task role gets the table actions its code calls (tests/test_service_aws_calls.py); unset: every item action.
    assert services["auth"].table_actions == ("GetItem", "PutItem", "UpdateItem")
    assert services["vc-start"].table_actions == ("DeleteItem", "GetItem", "PutItem", "UpdateItem")
    # persona reads no history in bulk and deletes none (its released reservations expire by TTL): no BatchWriteItem.
    assert services["persona"].table_actions == tuple(a for a in TABLE_ITEM_ACTIONS if a != "BatchWriteItem")
    assert load_config({"services": {"billing": {"image_tag": "1"}}}).services[0].table_actions == ()
    # vc-start's sweeper finds stuck sessions through a sparse index, persona its expired holds (keyed by a number:
    # hold_expires_at, which only a HELD reservation has); auth has none, and none by default.
    assert services["vc-start"].table_indexes == (TableIndexConfig(name="sweep", partition_key="sweep_shard", sort_key="sweep_at"),)
    assert services["persona"].table_indexes == (
        TableIndexConfig(name="holds", partition_key="persona_id", sort_key="hold_expires_at", sort_key_type="number"),)
    assert services["auth"].table_indexes == ()
    assert load_config({"services": {"billing": {"image_tag": "1", "table": True}}}).services[0].table_indexes == ()
    # DynamoDB's limits: 3-255 characters of [A-Za-z0-9_.-] for the name, 255 bytes for a key; the table's own keys may be reused.
    (edge,) = load_config({"services": {"billing": {"image_tag": "1", "table": True, "table_indexes": {
        "by.shard_2-x": {"partition_key": "pk", "sort_key": "a" * 255}}}}}).services[0].table_indexes
    assert edge == TableIndexConfig(name="by.shard_2-x", partition_key="pk", sort_key="a" * 255)


_INDEX = {"partition_key": "shard", "sort_key": "at"}


@pytest.mark.parametrize("services, message", [
    ({"auth": {}, "persona": {"table": True, "worker": True, "consumes": {"auth": []}}},
     "services.persona.consumes.auth=[] is invalid: expected a non-empty list of distinct event detail-types"),
    ({"auth": {}, "persona": {"table": True, "worker": True, "consumes": {"auth": ["A", "A"]}}},
     'services.persona.consumes.auth=["A", "A"] is invalid: expected a non-empty list of distinct'),
    ({"auth": {"grpc_port": 4317}}, "services.auth.grpc_port=4317 is invalid: must differ from port=8080 and from the sidecars' ports"),
    ({"auth": {"table": "yes"}}, "services.auth.table='yes' is invalid: expected true or false"),
    ({"auth": {"table": True, "table_actions": ["GetItem", "Scan"]}},
     'services.auth.table_actions=["GetItem", "Scan"] is invalid: expected a non-empty list of distinct DynamoDB item actions'),
    ({"auth": {"table_actions": ["GetItem"]}}, 'services.auth.table_actions=["GetItem"] is invalid: needs table: true'),
    ({"auth": {"table": True, "table_indexes": ["sweep"]}}, 'services.auth.table_indexes=["sweep"] is invalid: expected an object of up to 20 index name'),
    ({"auth": {"table": True, "table_indexes": {f"index{n:02}": _INDEX for n in range(21)}}},
     'services.auth.table_indexes={"index00": {"partition_key": "shard", "sort_key": "at"}, '),
    ({"auth": {"table": True, "table_indexes": {"sweep\n": _INDEX}}},
     "services.auth.table_indexes='sweep\\n' is invalid: the index name must be 3-255 letters"),
    ({"auth": {"table": True, "table_indexes": {"sweep": {"partition_key": "shard"}}}},
     "services.auth.table_indexes.sweep.sort_key=null is invalid: expected the name of a string or number attribute"),
    ({"auth": {"table": True, "table_indexes": {"sweep": {**_INDEX, "projection": "ALL"}}}},
     "services.auth.table_indexes.sweep.projection='ALL' is invalid: unknown key; known keys are partition_key, sort_key"),
    ({"auth": {"table": True, "table_indexes": {"sweep": {**_INDEX, "partition_key": ""}}}},
     "services.auth.table_indexes.sweep.partition_key='' is invalid: expected the name of a string attribute, 1 to 255 bytes"),
    ({"auth": {"table": True, "table_indexes": {"sweep": {**_INDEX, "sort_key": "é" * 128}}}},
     "services.auth.table_indexes.sweep.sort_key='éééé"),
    ({"auth": {"table": True, "table_indexes": {"sweep": {**_INDEX, "sort_key": 7}}}},
     "services.auth.table_indexes.sweep.sort_key=7 is invalid: expected the name of a string or number attribute"),
    ({"auth": {"table": True, "table_indexes": {"sweep": {**_INDEX, "sort_key_type": "N"}}}},
     "services.auth.table_indexes.sweep.sort_key_type='N' is invalid: expected one of string, number"),
    # CloudFormation takes one type per attribute of the table: a number sort key cannot be a string key elsewhere.
    ({"auth": {"table": True, "table_indexes": {"by_at": {"partition_key": "at", "sort_key": "x"},
                                                "sweep": {**_INDEX, "sort_key_type": "number"}}}},
     "services.auth.table_indexes.sweep.sort_key='at' is invalid: is a string key elsewhere on the table"),
    ({"auth": {"table": True, "table_indexes": {"sweep": {**_INDEX, "sort_key": "sk", "sort_key_type": "number"}}}},
     "services.auth.table_indexes.sweep.sort_key='sk' is invalid: is a string key elsewhere on the table"),
    ({"auth": {"module": "auth-service"}}, "services.auth.module='auth-service' is invalid: expected a Python module name"),
    ({"auth": {"consumes": ["persona"]}}, 'services.auth.consumes=["persona"] is invalid: expected an object of producer service'),
    # Variables the stack sets itself, fixed or derived from a callee's name, would be overwritten silently.
    ({"auth": {"environment": {"TABLE_NAME": "x"}}}, "services.auth.environment.TABLE_NAME='x' is invalid: the stack sets this variable"),
    ({"auth": {}, "vc-start": {"calls": ["auth"], "environment": {"AUTH_URL": "http://elsewhere"}}},
     "services.vc-start.environment.AUTH_URL='http://elsewhere' is invalid: the stack sets this variable"),
])
def test_bad_service_event_and_port_settings_name_the_key(services, message):
    with pytest.raises(ConfigError) as error:
        load_config({"services": services})
    assert str(error.value).startswith(f"config error: {message}")


def test_the_stop_timings_the_config_checks_default_to_servicekits():
    """A service environment that sets neither is checked with the defaults the services really use."""
    settings = "services/common/servicekit/settings.py"
    assert source_value(settings, r"^    drain_seconds: float = Field\(default=([\d.]+), ge=0\)$") == SERVICEKIT_DRAIN_SECONDS
    assert source_value(settings, r"^    shutdown_timeout_seconds: float = Field\(default=([\d.]+), ge=0\)$") == SERVICEKIT_SHUTDOWN_TIMEOUT_SECONDS
    assert SERVICEKIT_DRAIN_SECONDS + SERVICEKIT_SHUTDOWN_TIMEOUT_SECONDS <= STOP_TIMEOUT_SECONDS - STOP_MARGIN_SECONDS


def test_a_service_may_take_the_whole_stop_timeout_but_its_margin():
    limit = STOP_TIMEOUT_SECONDS - STOP_MARGIN_SECONDS
    load_config({"services": {"auth": {"environment": {"DRAIN_SECONDS": "0", "SHUTDOWN_TIMEOUT_SECONDS": str(limit)}}}})
    load_config({"services": {"auth": {"environment": {"DRAIN_SECONDS": str(limit - SERVICEKIT_SHUTDOWN_TIMEOUT_SECONDS)}}}})
    with pytest.raises(ConfigError) as error:
        load_config({"services": {"auth": {"environment": {"DRAIN_SECONDS": "0.5", "SHUTDOWN_TIMEOUT_SECONDS": str(limit)}}}})
    assert str(error.value).startswith(f"config error: services.auth.environment.SHUTDOWN_TIMEOUT_SECONDS='{limit}' is invalid: "
                                       f"with DRAIN_SECONDS=0.5 a stopping task takes {limit + 0.5:g} s")


def test_budget_defaults_and_a_single_limit_for_every_profile():
    budget = load_config({}).budget
    assert (budget.limit_usd("dev"), budget.limit_usd("prod")) == (600, 2500)
    assert budget.alert_thresholds_percent == (50, 80, 100) and budget.notify_emails == () and budget.filter_by_project_tag
    single = load_config({"budget": {"monthly_limit_usd": 750, "alert_thresholds_percent": [100, 75]}}).budget
    assert (single.limit_usd("dev"), single.limit_usd("prod")) == (750, 750)
    assert single.alert_thresholds_percent == (75, 100)


def test_alarm_topics_have_no_subscriber_unless_the_config_names_one():
    assert load_config({}).observability.notify_emails == ()
    observability = load_config({"observability": {"notify_emails": ["oncall@example.com"]}}).observability
    assert observability.notify_emails == ("oncall@example.com",)
    assert observability.quota_alarm_percent == 80  # the object's other keys keep their defaults


def test_appmesh_traffic_shift_defaults_and_override():
    shift = load_config({}).appmesh
    assert (shift.shift_steps_percent, shift.shift_bake_minutes, shift.shift_min_canary_requests) == ((5, 25, 50, 100), 10, 60)
    # From the CLI, the object arrives as JSON text.
    shift = load_config({"appmesh": '{"shift_steps_percent": [10, 50, 100], "shift_bake_minutes": 5, "shift_min_canary_requests": 1}'}).appmesh
    assert (shift.shift_steps_percent, shift.shift_bake_minutes, shift.shift_min_canary_requests) == ((10, 50, 100), 5, 1)


def test_the_config_check_allows_the_traffic_shifts_bake_limit_exactly():
    """app.py checks the config before it loads aws-cdk-lib, so config.py keeps its own copy of the limit."""
    from constructs.meshed_service.traffic_shift import MAX_TOTAL_BAKE_MINUTES
    from stacks.config import APPMESH_MAX_TOTAL_BAKE_MINUTES

    assert APPMESH_MAX_TOTAL_BAKE_MINUTES == MAX_TOTAL_BAKE_MINUTES
