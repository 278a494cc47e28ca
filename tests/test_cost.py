"""`make cost`: the offline estimate (tools/cost) against figures worked out by hand, the price table's
schema, and the estimate of the real app's assemblies."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.assembly import Assembly, cdk_json_context
from tools.cost.estimate import estimate_assembly, main
from tools.cost.pricing import DEFAULT_PRICE_FILE, PriceTableError, load_price_table, parse_price_table
from tools.cost.rules import CapacityShare, TemplateError, capacity_split

REGION = "eu-central-1"

# Round prices for eu-central-1, so the expected figures below can be checked with pencil and paper.
ROUND_PRICES = {
    "nat_gateway_hour": 0.05, "nat_gateway_gb": 0.05, "public_ipv4_hour": 0.005,
    "interface_endpoint_az_hour": 0.01, "interface_endpoint_gb": 0.01,
    "alb_hour": 0.02, "alb_lcu_hour": 0.008,
    "fargate_vcpu_hour": 0.04, "fargate_gb_hour": 0.004, "fargate_spot_vcpu_hour": 0.012, "fargate_spot_gb_hour": 0.0012,
    "private_ca_general_purpose_month": 400, "private_ca_short_lived_month": 50,
    "logs_ingest_gb": 0.5, "logs_storage_gb_month": 0.03, "kms_key_month": 1.0, "secret_month": 0.4,
}


@pytest.fixture(scope="module")
def round_prices():
    data = json.loads(DEFAULT_PRICE_FILE.read_text())
    for key, usd in ROUND_PRICES.items():
        data["regions"][REGION][key]["usd"] = usd
    data["assumptions"]["dev"]["nat_gb_per_region"]["value"] = 100
    data["assumptions"]["dev"]["endpoint_gb_per_region"]["value"] = 50
    data["assumptions"]["dev"]["log_gb_per_group"]["value"] = 2
    data["assumptions"]["dev"]["cloudfront_million_requests"]["value"] = 10
    return parse_price_table(data)


def write_assembly(directory: Path, stacks: dict[str, dict[str, Any]], profile: str = "dev", region: str = REGION) -> Path:
    """A cloud assembly as the CDK writes it: manifest.json naming one template per stack."""
    directory.mkdir(parents=True, exist_ok=True)
    artifacts = {}
    for index, (path, resources) in enumerate(stacks.items()):
        artifact_id = f"Stack{index}"
        (directory / f"{artifact_id}.template.json").write_text(json.dumps({"Resources": resources}))
        artifacts[artifact_id] = {
            "type": "aws:cloudformation:stack", "environment": f"aws://111122223333/{region}", "displayName": path,
            "properties": {"templateFile": f"{artifact_id}.template.json", "tags": {"environment": profile}},
        }
    (directory / "manifest.json").write_text(json.dumps({"version": "48.0.0", "artifacts": artifacts}))
    return directory


def lines_named(estimate, item: str):
    return [line for line in estimate.lines if line.item == item]


def fargate_service(desired: int, strategy: list[dict] | None, task_cpu: str | None = "512", task_memory: str | None = "1024"):
    task_props: dict[str, Any] = {
        "RequiresCompatibilities": ["FARGATE"],
        "ContainerDefinitions": [{"Name": "app", "Cpu": 256, "Memory": 512}, {"Name": "sidecar", "Cpu": 256, "Memory": 512}],
    }
    if task_cpu:
        task_props |= {"Cpu": task_cpu, "Memory": task_memory}
    service: dict[str, Any] = {"TaskDefinition": {"Ref": "Task"}, "DesiredCount": desired}
    if strategy is not None:
        service["CapacityProviderStrategy"] = strategy
    return {
        "Task": {"Type": "AWS::ECS::TaskDefinition", "Properties": task_props},
        "Service": {"Type": "AWS::ECS::Service", "Properties": service},
    }


DEV_STRATEGY = [{"CapacityProvider": "FARGATE", "Base": 1, "Weight": 1}, {"CapacityProvider": "FARGATE_SPOT", "Base": 0, "Weight": 3}]


# --- hand-computed figures for small templates ---------------------------------------------------


def test_one_nat_gateway_costs_730_hours_plus_its_address_and_the_assumed_traffic(tmp_path, round_prices):
    assembly = write_assembly(tmp_path, {"app/network": {
        "Eip": {"Type": "AWS::EC2::EIP", "Properties": {"Domain": "vpc"}},
        "Nat": {"Type": "AWS::EC2::NatGateway", "Properties": {"SubnetId": "subnet-1"}},
    }})
    estimate = estimate_assembly(assembly, round_prices)
    assert [(li.resource, round(li.usd, 2)) for li in lines_named(estimate, "NAT gateway")] == [("Nat", 36.50)]  # 730 h x $0.05
    assert round(lines_named(estimate, "Public IPv4 address")[0].usd, 2) == 3.65  # 730 h x $0.005
    assert round(lines_named(estimate, "NAT data processed")[0].usd, 2) == 5.00  # 100 GB x $0.05
    assert round(estimate.total(), 2) == 45.15


def test_interface_endpoints_cost_per_subnet_az_and_gateway_endpoints_nothing(tmp_path, round_prices):
    endpoint = {"Type": "AWS::EC2::VPCEndpoint", "Properties": {
        "VpcEndpointType": "Interface", "ServiceName": "com.amazonaws.eu-central-1.ecr.api", "SubnetIds": ["a", "b", "c"]}}
    assembly = write_assembly(tmp_path, {"app/network": {
        "EcrApi": endpoint,
        "Logs": {**endpoint, "Properties": {**endpoint["Properties"], "ServiceName": "com.amazonaws.eu-central-1.logs"}},
        "S3": {"Type": "AWS::EC2::VPCEndpoint", "Properties": {"ServiceName": {"Fn::Join": ["", ["com.amazonaws.", {"Ref": "AWS::Region"}, ".s3"]]}}},
    }})
    estimate = estimate_assembly(assembly, round_prices)
    interface = [li for li in estimate.lines if li.item.startswith("Interface endpoint ") and li.resource]
    # 2 endpoints x 3 AZs = 6 AZ-hours per hour, x 730 h x $0.01 = $43.80
    assert sorted((li.item, round(li.usd, 2)) for li in interface) == [
        ("Interface endpoint ecr.api", 21.90), ("Interface endpoint logs", 21.90)]
    assert [(li.item, li.usd) for li in lines_named(estimate, "Gateway endpoint s3")] == [("Gateway endpoint s3", 0.0)]
    assert round(lines_named(estimate, "Interface endpoint data processed")[0].usd, 2) == 0.50  # 50 GB x $0.01
    assert round(estimate.total(), 2) == 44.30


def test_fargate_service_prices_base_on_demand_and_the_rest_by_weight(tmp_path, round_prices):
    """Desired 2 tasks of 0.5 vCPU / 1 GB, FARGATE base 1 weight 1, FARGATE_SPOT weight 3: the base task is
    on-demand, the second is shared 1:3, so 1.25 tasks on-demand and 0.75 on Spot."""
    assembly = write_assembly(tmp_path, {"app/services": fargate_service(2, DEV_STRATEGY)})
    estimate = estimate_assembly(assembly, round_prices)
    on_demand, = lines_named(estimate, "Fargate on-demand")
    spot, = lines_named(estimate, "Fargate Spot")
    # on-demand: 1.25 x 730 h x (0.5 x $0.04 + 1 x $0.004) = 1.25 x 730 x 0.024 = $21.90
    assert round(on_demand.usd, 4) == 21.90
    # Spot: 0.75 x 730 h x (0.5 x $0.012 + 1 x $0.0012) = 0.75 x 730 x 0.0072 = $3.942
    assert round(spot.usd, 4) == 3.942
    assert "1.25 of 2 tasks" in on_demand.detail and "0.75 of 2 tasks" in spot.detail


def test_task_size_includes_every_container_when_the_task_sets_no_size(tmp_path, round_prices):
    # No task-level Cpu/Memory: app 256 + sidecar 256 CPU units, 512 + 512 MiB = 0.5 vCPU, 1 GB.
    assembly = write_assembly(tmp_path, {"app/services": fargate_service(1, None, task_cpu=None)})
    estimate = estimate_assembly(assembly, round_prices)
    assert round(lines_named(estimate, "Fargate on-demand")[0].usd, 2) == 17.52  # 1 x 730 x 0.024


def test_a_service_without_a_strategy_uses_the_clusters_default_and_max_tasks_reads_its_scaling_bound(tmp_path, round_prices):
    services = fargate_service(1, None)
    services["Target"] = {"Type": "AWS::ApplicationAutoScaling::ScalableTarget", "Properties": {
        "MinCapacity": 1, "MaxCapacity": 5,
        "ResourceId": {"Fn::Join": ["", ["service/cluster/", {"Fn::GetAtt": ["Service", "Name"]}]]}}}
    assembly = write_assembly(tmp_path, {
        "app/platform": {"Providers": {"Type": "AWS::ECS::ClusterCapacityProviderAssociations", "Properties": {
            "Cluster": "c", "CapacityProviders": ["FARGATE", "FARGATE_SPOT"], "DefaultCapacityProviderStrategy": DEV_STRATEGY}}},
        "app/services": services,
    })
    desired = estimate_assembly(assembly, round_prices)
    assert round(lines_named(desired, "Fargate on-demand")[0].usd, 2) == 17.52  # the base task
    assert lines_named(desired, "Fargate Spot")[0].usd == 0
    scaled = estimate_assembly(assembly, round_prices, task_count="max")
    # 5 tasks: 1 base + 4 shared 1:3 = 2 on-demand (730 x 0.024 x 2 = $35.04), 3 Spot (730 x 0.0072 x 3 = $15.768)
    assert round(lines_named(scaled, "Fargate on-demand")[0].usd, 3) == 35.04
    assert round(lines_named(scaled, "Fargate Spot")[0].usd, 3) == 15.768


@pytest.mark.parametrize(("tasks", "strategy", "expected"), [
    (1, DEV_STRATEGY, {"FARGATE": 1, "FARGATE_SPOT": 0}),
    (2, DEV_STRATEGY, {"FARGATE": 1.25, "FARGATE_SPOT": 0.75}),
    (5, DEV_STRATEGY, {"FARGATE": 2, "FARGATE_SPOT": 3}),
    (2, [{"CapacityProvider": "FARGATE", "Base": 2, "Weight": 1}, {"CapacityProvider": "FARGATE_SPOT", "Weight": 1}],
     {"FARGATE": 2, "FARGATE_SPOT": 0}),
    (10, [{"CapacityProvider": "FARGATE", "Base": 2, "Weight": 1}, {"CapacityProvider": "FARGATE_SPOT", "Weight": 1}],
     {"FARGATE": 6, "FARGATE_SPOT": 4}),
    (4, [{"CapacityProvider": "FARGATE_SPOT", "Weight": 1}], {"FARGATE_SPOT": 4}),
])
def test_spot_share_is_base_first_then_weights(tasks, strategy, expected):
    shares = [CapacityShare(e["CapacityProvider"], e.get("Base", 0), e["Weight"]) for e in strategy]
    assert capacity_split(tasks, shares) == pytest.approx(expected)


def test_tasks_above_the_bases_need_a_weight():
    with pytest.raises(TemplateError, match="no weight"):
        capacity_split(3, [CapacityShare("FARGATE", 1, 0)])


def test_private_ca_mode_sets_the_monthly_fee(tmp_path, round_prices):
    assembly = write_assembly(tmp_path, {"app/platform": {
        "ShortLived": {"Type": "AWS::ACMPCA::CertificateAuthority", "Properties": {"UsageMode": "SHORT_LIVED_CERTIFICATE"}},
        "General": {"Type": "AWS::ACMPCA::CertificateAuthority", "Properties": {}},  # the API default mode
    }})
    estimate = estimate_assembly(assembly, round_prices)
    assert {li.resource: li.usd for li in estimate.lines} == {"ShortLived": 50, "General": 400}


def test_web_acl_costs_the_acl_each_rule_and_the_requests(tmp_path, round_prices):
    rule = {"Name": "r", "Priority": 0, "Statement": {"ManagedRuleGroupStatement": {}}}
    assembly = write_assembly(tmp_path, {"app/edge": {"Acl": {"Type": "AWS::WAFv2::WebACL", "Properties": {
        "Scope": "CLOUDFRONT", "Rules": [rule, rule, rule]}}}})
    estimate = estimate_assembly(assembly, round_prices)
    # $5 + 3 rules x $1 + 10M requests x $0.60 = $14, billed globally
    assert round(estimate.total("global"), 2) == 14.00


def test_log_group_costs_ingestion_and_the_retained_months(tmp_path, round_prices):
    assembly = write_assembly(tmp_path, {"app/services": {
        "Logs": {"Type": "AWS::Logs::LogGroup", "Properties": {"RetentionInDays": 365}},
        "Key": {"Type": "AWS::KMS::Key", "Properties": {}},
        "Secret": {"Type": "AWS::SecretsManager::Secret", "Properties": {"ReplicaRegions": [{"Region": "eu-west-1"}]}},
    }})
    estimate = estimate_assembly(assembly, round_prices)
    # 2 GB x $0.50 + 12 months x 2 GB stored x $0.03 = $1.72
    assert round(lines_named(estimate, "Log group")[0].usd, 2) == 1.72
    assert lines_named(estimate, "KMS key")[0].usd == 1.0
    # The secret and its replica each cost a secret-month, the replica in its own region.
    assert [(li.region, li.usd) for li in estimate.lines if li.resource == "Secret"] == [(REGION, 0.4), ("eu-west-1", 0.4)]


def test_unmodelled_resource_types_are_listed_not_ignored(tmp_path, round_prices):
    assembly = write_assembly(tmp_path, {"app/services": {
        "Queue": {"Type": "AWS::SQS::Queue", "Properties": {}},
        "Role": {"Type": "AWS::IAM::Role", "Properties": {}},
    }})
    estimate = estimate_assembly(assembly, round_prices)
    assert dict(estimate.unpriced) == {"AWS::SQS::Queue": 1}


# --- the price table -----------------------------------------------------------------------------


def test_price_table_is_versioned_and_every_price_names_its_source_and_basis():
    table = load_price_table()
    assert table.version >= 1 and len(table.as_of) == 10
    for section in [*table.regions.values(), table.global_prices]:
        for price in section.values():
            assert table.sources[price.source]["url"].startswith(("https://", "http://"))
            assert price.basis in ("aws-page", "third-party", "assumption")
            assert price.usd > 0


def test_every_configured_region_and_the_edge_region_has_prices():
    table = load_price_table()
    for region in [r["name"] for r in cdk_json_context()["regions"]] + ["us-east-1"]:
        assert region in table.regions, region
    assert {"dev", "prod"} <= set(table.profiles())


def test_a_price_table_missing_a_price_is_rejected():
    data = json.loads(DEFAULT_PRICE_FILE.read_text())
    broken = copy.deepcopy(data)
    del broken["regions"]["eu-west-1"]["nat_gateway_hour"]
    with pytest.raises(PriceTableError, match=r"regions.eu-west-1 lacks \['nat_gateway_hour'\]"):
        parse_price_table(broken)
    broken = copy.deepcopy(data)
    broken["regions"]["eu-west-1"]["alb_hour"]["source"] = "nowhere"
    with pytest.raises(PriceTableError, match="not one of the sources"):
        parse_price_table(broken)


# --- the command line ----------------------------------------------------------------------------


def test_cli_prints_lines_totals_and_assumptions(tmp_path, capsys):
    assembly = write_assembly(tmp_path / "cdk.out", {"app/network": {"Nat": {"Type": "AWS::EC2::NatGateway", "Properties": {}}}})
    assert main(["--assembly", str(assembly)]) == 0
    out = capsys.readouterr().out
    assert "NAT gateway [Nat]" in out and "37.96" in out  # 730 h x $0.052, the table's eu-central-1 price
    assert "TOTAL profile dev" in out and "nat_gb_per_region = 20" in out
    assert "https://aws.amazon.com/vpc/pricing/" in out


def test_cli_fails_with_one_line_on_a_folder_that_is_no_assembly(tmp_path, capsys):
    assert main(["--assembly", str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err


# --- the real app ----------------------------------------------------------------------------------


def test_dev_estimate_prices_every_nat_gateway_and_interface_endpoint(dev: Assembly):
    estimate = estimate_assembly(dev.outdir, load_price_table())
    priced = {(line.stack, line.resource) for line in estimate.lines if line.usd > 0}
    expected = set()
    for stack_path, logical_id, resource in dev.all_resources():
        if resource["Type"] == "AWS::EC2::NatGateway" or (
                resource["Type"] == "AWS::EC2::VPCEndpoint" and resource["Properties"].get("VpcEndpointType") == "Interface"):
            expected.add((stack_path, logical_id))
    assert len(expected) == 2 * (1 + 11)  # per region: dev's single NAT gateway, 11 interface endpoints
    assert expected <= priced
    assert estimate.profile == "dev" and not any("ACMPCA" in t for t in estimate.unpriced)


def test_prod_costs_more_than_dev_in_every_region(dev: Assembly, prod: Assembly):
    prices = load_price_table()
    dev_estimate, prod_estimate = estimate_assembly(dev.outdir, prices), estimate_assembly(prod.outdir, prices)
    assert prod_estimate.profile == "prod"
    for region in ("eu-central-1", "eu-west-1"):
        assert prod_estimate.total(region) > dev_estimate.total(region), region
    # What prod adds in each region: 2 more NAT gateways, endpoints in 2 more AZs, a short-lived-mode CA.
    nat = [li for li in prod_estimate.lines if li.item == "NAT gateway" and li.region == "eu-central-1"]
    assert len(nat) == 3
    ca = [li for li in prod_estimate.lines if li.item.startswith("Private CA")]
    assert [li.item for li in ca] == ["Private CA, short-lived certificate mode"] * 2


def test_dashboards_and_replica_keys_are_priced_in_their_own_regions(tmp_path, round_prices):
    create = {"Fn::Join": ["", ['{"action":"replicateKey","service":"KMS","parameters":{"KeyId":"', {"Fn::GetAtt": ["Key", "Arn"]},
                                '","ReplicaRegion":"eu-west-1"}}']]}
    assembly = write_assembly(tmp_path, {"app/data": {
        "Dashboard": {"Type": "AWS::CloudWatch::Dashboard", "Properties": {}},
        "KeyReplica": {"Type": "Custom::KmsReplicaKey", "Properties": {"Create": create}},
    }})
    estimate = estimate_assembly(assembly, round_prices)
    (dashboard,) = lines_named(estimate, "CloudWatch dashboard")
    assert (dashboard.region, dashboard.usd) == (REGION, round_prices.price(REGION, "cloudwatch_dashboard_month"))
    (replica,) = lines_named(estimate, "KMS replica key in eu-west-1")
    assert (replica.region, replica.usd) == ("eu-west-1", 1.0)
