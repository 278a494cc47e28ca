"""What each mesh backend adds: Service Connect (default) and App Mesh (legacy, selectable)."""

from __future__ import annotations

import json

import aws_cdk as cdk
import pytest
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_servicediscovery as servicediscovery
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Match, Template

from constructs.meshed_service import MeshedFargateService, MeshedServiceProps, Rollout, ServiceConnectMesh
from tests.assembly import cdk_json_context, synth
from tests.conftest import IMPORTED_CA_ARN

SERVICES = ("auth", "persona", "vc-start")
REGIONS = ("eu-central-1", "eu-west-1")
CALLEES = {"auth": [], "persona": ["auth"], "vc-start": ["auth", "persona"]}
# What some other service calls through the mesh (nothing calls vc-start), and what answers gRPC too.
CALLED = {callee for callees in CALLEES.values() for callee in callees}
GRPC_SERVICES = ("persona",)


def _resources(assembly, stack, resource_type):
    return assembly.resources(stack, resource_type)


def _ecs_services(assembly, region="eu-west-1"):
    return {
        logical_id: resource["Properties"]
        for logical_id, resource in _resources(assembly, f"mf-{region}/services", "AWS::ECS::Service").items()
    }


# --- Service Connect ------------------------------------------------------------------------


def test_service_connect_publishes_each_service_under_its_name_with_timeouts_and_json_access_logs(dev):
    published = {}
    for properties in _ecs_services(dev).values():
        connect = properties["ServiceConnectConfiguration"]
        assert connect["Enabled"] is True
        assert "platform" in connect["Namespace"]["Fn::GetStackOutput"]["StackName"]
        assert connect["AccessLogConfiguration"] == {"Format": "JSON", "IncludeQueryParameters": "DISABLED"}
        assert connect["LogConfiguration"]["LogDriver"] == "awslogs"
        for service in connect["Services"]:
            assert service["Timeout"] == {"IdleTimeoutSeconds": 300, "PerRequestTimeoutSeconds": 15}
            assert "Tls" not in service  # dev: TLS off by default
            # Service Connect's own (API-only) Cloud Map entries; <name> itself is the DNS registration.
            suffix = {"http": "-sc", "grpc": "-grpc-sc"}[service["PortName"]]
            assert service["DiscoveryName"] == f"{properties['ServiceName']}{suffix}"
            published.setdefault(properties["ServiceName"], []).extend(service["ClientAliases"])
    # persona also publishes its gRPC port under the same name: vc-start dials persona:50051.
    assert published == {"auth": [{"DnsName": "auth", "Port": 8080}], "vc-start": [{"DnsName": "vc-start", "Port": 8080}],
                         "persona": [{"DnsName": "persona", "Port": 8080}, {"DnsName": "persona", "Port": 50051}]}


def test_service_connect_canary_rolls_back_on_its_alarms(dev):
    alarms = _resources(dev, "mf-eu-west-1/services", "AWS::CloudWatch::Alarm")
    for _logical_id, properties in _ecs_services(dev).items():
        name = properties["ServiceName"]
        deployment = properties["DeploymentConfiguration"]
        assert deployment["Strategy"] == "CANARY"
        assert deployment["CanaryConfiguration"] == {"CanaryBakeTimeInMinutes": 10, "CanaryPercent": 5}
        assert deployment["BakeTimeInMinutes"] == 10
        assert (deployment["Alarms"]["Enable"], deployment["Alarms"]["Rollback"]) == (True, True)
        watched = [alarms[ref["Ref"]]["Properties"]["AlarmName"] for ref in deployment["Alarms"]["AlarmNames"]]
        # The mesh's alarms (only where mesh callers give them data), the service's own gRPC calls', then the load
        # balancer's per target group (tests/test_ingress.py).
        assert watched == [f"mf-{name}-5xx-rate", f"mf-{name}-p95-latency"] * (name in CALLED) + [
            f"mf-{name}-grpc-server-error-rate", f"mf-{name}-grpc-server-p95-latency"] * (name in GRPC_SERVICES) + [
            f"mf-{name}-lb-group{i}-{what}" for i in (0, 1) for what in ("5xx-rate", "p95-latency")]
        # Referenced with Ref, so they exist before the service's first deployment.
        assert all(set(ref) == {"Ref"} for ref in deployment["Alarms"]["AlarmNames"])


def test_deployment_alarms_watch_5xx_rate_and_p95_latency_and_notify(dev):
    alarms = {a["Properties"]["AlarmName"]: a["Properties"] for a in _resources(dev, "mf-eu-west-1/services", "AWS::CloudWatch::Alarm").values()
              if not any(kind in a["Properties"]["AlarmName"] for kind in ("-lb-", "-grpc-"))}
    # The load balancer's: tests/test_ingress.py; gRPC: below. A service no other service calls (vc-start) gets no mesh
    # alarms: Service Connect counts its responses in callers' proxies only, so they would never get data.
    assert sorted(alarms) == sorted(f"mf-{n}-{what}" for n in CALLED for what in ("5xx-rate", "p95-latency"))
    for name, alarm in alarms.items():
        topic = {"Fn::GetStackOutput": alarm["AlarmActions"][0]["Fn::GetStackOutput"]}
        assert "AlarmsTopic" in topic["Fn::GetStackOutput"]["OutputName"]
        assert alarm["OKActions"] == alarm["AlarmActions"]
        assert "Runbook: runbooks/" in alarm["AlarmDescription"]
        service = name.removeprefix("mf-").removesuffix("-5xx-rate").removesuffix("-p95-latency")
        # Service Connect publishes response codes and times on the callers' side only: TargetDiscoveryName.
        # Every metric the alarm reads needs it (without, the metric has no data and the alarm never fires).
        metrics = [m["MetricStat"]["Metric"] for m in alarm.get("Metrics", []) if "MetricStat" in m]
        if "MetricName" in alarm:
            metrics.append(alarm)
        assert metrics, name
        for metric in metrics:
            assert metric.get("Dimensions") == [{"Name": "TargetDiscoveryName", "Value": f"{service}-sc"}], name
        by_id = {m["Id"]: m for m in alarm["Metrics"]}
        if name.endswith("p95-latency"):
            # A few slow requests do not decide: below 20 responses a minute the alarm reads 0 (the rate alarm's floor).
            assert (by_id["p95"]["MetricStat"]["Metric"]["MetricName"], by_id["p95"]["MetricStat"]["Stat"], alarm["Threshold"]) == (
                "TargetResponseTime", "p95", 1000)
            assert by_id["requests"]["Expression"] == "FILL(r2xx, 0) + FILL(r3xx, 0) + FILL(r4xx, 0) + FILL(r5xx, 0)"
        else:
            assert alarm["Metrics"][0]["Expression"] == "IF(requests >= 20, 100 * FILL(errors, 0) / requests, 0)"
            # Responses as the service's callers saw them, both sides of the division from the same proxies.
            assert by_id["requests"]["Expression"] == "FILL(r2xx, 0) + FILL(r3xx, 0) + FILL(r4xx, 0) + FILL(r5xx, 0)"
            stats = {m["Id"]: m["MetricStat"] for m in alarm["Metrics"] if "MetricStat" in m}
            assert {i: s["Metric"]["MetricName"] for i, s in stats.items()} == {
                "errors": "HTTPCode_Target_5XX_Count", **{f"r{c}xx": f"HTTPCode_Target_{c}XX_Count" for c in "2345"}}
            assert alarm["Threshold"] == 1  # below the 5 % canary share, so a failing canary trips it


@pytest.mark.parametrize("variant", ["dev", "prod"])
def test_a_grpc_service_rolls_back_on_the_error_rate_and_p95_of_its_own_grpc_calls(request, variant):
    """vc-start calls persona over gRPC only: no load balancer or Service Connect metric reads gRPC status codes, so
    persona's own rpc.server.duration judges a deployment (every caller's calls: a broken canary at 5 % shows ~5 %)."""
    assembly = request.getfixturevalue(variant)
    deployment = cdk_json_context()["deployment"]
    for region in REGIONS:
        alarms = {a["Properties"]["AlarmName"]: a["Properties"]
                  for a in _resources(assembly, f"mf-{region}/services", "AWS::CloudWatch::Alarm").values()}
        for name in SERVICES:
            kinds = ("grpc-server-error-rate", "grpc-server-p95-latency")
            if name not in GRPC_SERVICES:
                assert not any(f"mf-{name}-{kind}" in alarms for kind in kinds)
                continue
            rate, slow = alarms[f"mf-{name}-grpc-server-error-rate"], alarms[f"mf-{name}-grpc-server-p95-latency"]
            stats = {m["Id"]: m["MetricStat"] for m in rate["Metrics"] if "MetricStat" in m}
            assert {(s["Metric"]["Namespace"], s["Metric"]["MetricName"], s["Stat"]) for s in stats.values()} == {
                ("mf/services", "rpc.server.duration", "SampleCount")}
            assert {d["Value"] for s in stats.values() for d in s["Metric"]["Dimensions"] if d["Name"] == "rpc.grpc.status_code"} == {
                "2", "4", "12", "13", "14", "15"}
            assert stats["requests"]["Metric"]["Dimensions"] == [{"Name": "service.name", "Value": name}]
            assert rate["Metrics"][0]["Expression"] == "IF(requests >= 20, 100 * FILL(errors, 0) / requests, 0)"
            by_id = {m["Id"]: m for m in slow["Metrics"]}
            assert by_id["p95"]["MetricStat"]["Stat"] == "p95" and by_id["requests"]["MetricStat"]["Stat"] == "SampleCount"
            # Milliseconds, as the metric; the same thresholds as every other deployment alarm.
            assert (rate["Threshold"], slow["Threshold"]) == (deployment["alarm_5xx_percent"], deployment["alarm_p95_latency_ms"])
            for alarm, runbook in ((rate, "elevated-5xx"), (slow, "latency-slo-breach")):
                assert alarm["AlarmActions"] == alarm["OKActions"] and alarm["AlarmActions"]
                assert alarm["AlarmDescription"].endswith(f"rolls back. Runbook: runbooks/{runbook}.md")
            # One alarm for one thing: the observability stack no longer makes its own.
            assert not {f"mf-{name}-{kind}" for kind in kinds} & {
                a["Properties"]["AlarmName"] for a in _resources(assembly, f"mf-{region}/observability", "AWS::CloudWatch::Alarm").values()}


def test_prod_service_connect_uses_tls_from_a_short_lived_private_ca(prod):
    (authority,) = _resources(prod, "mf-eu-central-1/platform", "AWS::ACMPCA::CertificateAuthority").values()
    assert authority["Properties"]["UsageMode"] == "SHORT_LIVED_CERTIFICATE"
    assert {"Key": "AmazonECSManaged", "Value": "true"} in authority["Properties"]["Tags"]
    assert authority["DeletionPolicy"] == "Retain"
    assert len(_resources(prod, "mf-eu-central-1/platform", "AWS::ACMPCA::CertificateAuthorityActivation")) == 1
    for properties in _ecs_services(prod, "eu-central-1").values():
        tls = properties["ServiceConnectConfiguration"]["Services"][0]["Tls"]
        assert "MeshCertificateAuthority" in tls["IssuerCertificateAuthority"]["AwsPcaAuthorityArn"]["Fn::GetStackOutput"]["OutputName"]
        assert "RoleArn" in tls


def test_an_imported_ca_replaces_the_platform_ca(one_region):
    """one_region (tests/conftest.py): mesh_options tls on with IMPORTED_CA_ARN for eu-west-1, deployment strategy LINEAR."""
    assembly = one_region
    arn = IMPORTED_CA_ARN
    assert _resources(assembly, "mf-eu-west-1/platform", "AWS::ACMPCA::CertificateAuthority") == {}
    for properties in _ecs_services(assembly).values():
        assert properties["ServiceConnectConfiguration"]["Services"][0]["Tls"]["IssuerCertificateAuthority"] == {"AwsPcaAuthorityArn": arn}
        # LINEAR is selectable too.
        assert properties["DeploymentConfiguration"]["Strategy"] == "LINEAR"
        assert properties["DeploymentConfiguration"]["LinearConfiguration"] == {"StepBakeTimeInMinutes": 10, "StepPercent": 20}


# --- App Mesh -------------------------------------------------------------------------------


def _mesh(appmesh, resource_type, region="eu-west-1"):
    return {k: v["Properties"] for k, v in _resources(appmesh, f"mf-{region}/services", resource_type).items()}


def test_appmesh_mesh_drops_all_egress_outside_the_mesh(appmesh):
    (mesh,) = _mesh(appmesh, "AWS::AppMesh::Mesh").values()
    assert mesh["Spec"]["EgressFilter"] == {"Type": "DROP_ALL"}
    assert mesh["MeshName"] == "mf"


def test_appmesh_virtual_service_per_service_routes_weighted_with_retries(appmesh):
    services = _mesh(appmesh, "AWS::AppMesh::VirtualService")
    assert sorted(s["VirtualServiceName"] for s in services.values()) == sorted(f"{n}.svc.local" for n in SERVICES)
    routes = _mesh(appmesh, "AWS::AppMesh::Route")
    http_routes = [r["Spec"]["HttpRoute"] for r in routes.values() if "HttpRoute" in r["Spec"]]
    grpc_routes = [r["Spec"]["GrpcRoute"] for r in routes.values() if "GrpcRoute" in r["Spec"]]
    assert (len(http_routes), len(grpc_routes)) == (3, 1)
    for http in http_routes:
        assert sorted(t["Weight"] for t in http["Action"]["WeightedTargets"]) == [5, 95]
        # Each route names its port: persona's router and nodes listen on two.
        assert http["Match"] == {"Port": 8080, "Prefix": "/"} and {t["Port"] for t in http["Action"]["WeightedTargets"]} == {8080}
        assert http["RetryPolicy"] == {
            "HttpRetryEvents": ["server-error", "gateway-error", "stream-error"], "MaxRetries": 2,
            "PerRetryTimeout": {"Unit": "ms", "Value": 2000}, "TcpRetryEvents": ["connection-error"],
        }
    (grpc,) = grpc_routes
    assert grpc["Match"] == {"Port": 50051}
    assert sorted((t["Port"], t["Weight"]) for t in grpc["Action"]["WeightedTargets"]) == [(50051, 5), (50051, 95)]
    assert grpc["RetryPolicy"] == {"GrpcRetryEvents": ["unavailable"], "MaxRetries": 2, "PerRetryTimeout": {"Unit": "ms", "Value": 2000},
                                   "TcpRetryEvents": ["connection-error"]}
    assert grpc["Timeout"] == {"PerRequest": {"Unit": "ms", "Value": 15000}}
    routers = {r["VirtualRouterName"]: r["Spec"]["Listeners"] for r in _mesh(appmesh, "AWS::AppMesh::VirtualRouter").values()}
    assert routers["persona"] == [{"PortMapping": {"Port": 8080, "Protocol": "http"}}, {"PortMapping": {"Port": 50051, "Protocol": "grpc"}}]
    assert routers["auth"] == routers["vc-start"] == [{"PortMapping": {"Port": 8080, "Protocol": "http"}}]


def test_appmesh_nodes_listen_with_health_checks_outlier_detection_pools_timeouts_and_strict_tls(appmesh):
    nodes = _mesh(appmesh, "AWS::AppMesh::VirtualNode")
    assert sorted(n["VirtualNodeName"] for n in nodes.values()) == sorted(f"{s}-{v}" for s in SERVICES for v in ("primary", "canary"))
    for node in nodes.values():
        listener, *grpc = node["Spec"]["Listeners"]
        if node["VirtualNodeName"].startswith("persona-"):
            # The gRPC port: its own listener, health-checked with the gRPC health protocol, TLS only too.
            (grpc,) = grpc
            assert grpc["PortMapping"] == {"Port": 50051, "Protocol": "grpc"}
            assert (grpc["HealthCheck"]["Protocol"], grpc["HealthCheck"]["Port"]) == ("grpc", 50051)
            assert grpc["ConnectionPool"] == {"GRPC": {"MaxRequests": 1024}} and grpc["OutlierDetection"] == listener["OutlierDetection"]
            assert grpc["Timeout"]["GRPC"]["PerRequest"] == {"Unit": "ms", "Value": 15000}
            assert grpc["TLS"] == listener["TLS"]
        else:
            assert grpc == []
        assert listener["PortMapping"] == {"Port": 8080, "Protocol": "http"}
        assert listener["HealthCheck"]["Path"] == "/health/ready"
        assert listener["OutlierDetection"]["MaxServerErrors"] == 5
        assert listener["ConnectionPool"] == {"HTTP": {"MaxConnections": 1024, "MaxPendingRequests": 1024}}
        assert listener["Timeout"]["HTTP"]["PerRequest"] == {"Unit": "ms", "Value": 15000}
        # TLS only, for mesh callers and the load balancer alike (it sends HTTPS: tests/test_ingress.py).
        assert listener["TLS"]["Mode"] == "STRICT" and "ACM" in listener["TLS"]["Certificate"]
        policy = node["Spec"]["BackendDefaults"]["ClientPolicy"]["TLS"]
        assert policy["Enforce"] is True and "ACM" in policy["Validation"]["Trust"]
        service = node["VirtualNodeName"].rsplit("-", 1)[0]
        backends = sorted(b["VirtualService"]["VirtualServiceName"] for b in node["Spec"].get("Backends", []))
        assert backends == sorted(f"{c}.svc.local" for c in CALLEES[service])
        assert node["Spec"]["ServiceDiscovery"]["AWSCloudMap"]["NamespaceName"]


def test_appmesh_envoy_sidecar_and_start_order(appmesh):
    for task in _mesh(appmesh, "AWS::ECS::TaskDefinition").values():
        containers = {c["Name"]: c for c in task["ContainerDefinitions"]}
        envoy = containers["envoy"]
        assert (envoy["Cpu"], envoy["Memory"], envoy["User"], envoy["Essential"]) == (256, 256, "1337", True)
        assert "server_info" in " ".join(envoy["HealthCheck"]["Command"])
        assert any(e["Name"] == "APPMESH_RESOURCE_ARN" for e in envoy["Environment"])
        assert {"Condition": "HEALTHY", "ContainerName": "envoy"} in containers["app"]["DependsOn"]
        proxy = {p["Name"]: p["Value"] for p in task["ProxyConfiguration"]["ProxyConfigurationProperties"]}
        assert proxy["IgnoredUID"] == "1337" and proxy["EgressIgnoredPorts"] == "443"
        # Envoy takes inbound traffic on every port the app serves.
        assert proxy["AppPorts"] == ("8080,50051" if "grpc" in {m["Name"] for m in containers["app"]["PortMappings"]} else "8080")


def test_appmesh_envoy_may_fetch_only_its_own_node_and_certificate(appmesh):
    nodes = set(_mesh(appmesh, "AWS::AppMesh::VirtualNode"))
    certificates = set(_mesh(appmesh, "AWS::CertificateManager::Certificate"))
    granted = {"appmesh:StreamAggregatedResources": set(), "acm:ExportCertificate": set(), "acm-pca:GetCertificateAuthorityCertificate": 0}
    for policy in _mesh(appmesh, "AWS::IAM::Policy").values():
        for statement in policy["PolicyDocument"]["Statement"]:
            if statement["Action"] == "appmesh:StreamAggregatedResources":
                granted[statement["Action"]].add(statement["Resource"]["Ref"])
            elif statement["Action"] == "acm:ExportCertificate":
                granted[statement["Action"]].add(statement["Resource"]["Ref"])
            elif statement["Action"] == "acm-pca:GetCertificateAuthorityCertificate":
                assert "MeshCertificateAuthority" in json.dumps(statement["Resource"])
                granted[statement["Action"]] += 1
    # One statement per task role, each naming exactly its own node and certificate.
    assert granted["appmesh:StreamAggregatedResources"] == nodes and len(nodes) == 6
    assert granted["acm:ExportCertificate"] == certificates and len(certificates) == 6
    assert granted["acm-pca:GetCertificateAuthorityCertificate"] == 6


def test_appmesh_deploys_rolling_and_discovers_nodes_through_the_dns_registration(appmesh):
    registries = {k: v["Name"] for k, v in _mesh(appmesh, "AWS::ServiceDiscovery::Service").items()}
    for properties in _ecs_services(appmesh).values():
        assert properties["DeploymentConfiguration"]["Strategy"] == "ROLLING"
    for node in _mesh(appmesh, "AWS::AppMesh::VirtualNode").values():
        cloud_map = node["Spec"]["ServiceDiscovery"]["AWSCloudMap"]
        assert cloud_map["ServiceName"]["Fn::GetAtt"][0] in registries
        expected = node["VirtualNodeName"].removesuffix("-primary")  # auth-primary -> auth, auth-canary stays
        assert registries[cloud_map["ServiceName"]["Fn::GetAtt"][0]] == expected


def _watched(alarm: dict, services_outputs: dict) -> set[tuple[str, str]]:
    """What an alarm's metrics are of: their (dimension, value) pairs, a services-stack output resolved to its value."""
    pairs = set()
    for metric in (m["MetricStat"]["Metric"] for m in alarm.get("Metrics", []) if "MetricStat" in m):
        for dimension in metric["Dimensions"]:
            value = dimension["Value"]
            if "services" in (value.get("Fn::GetStackOutput", {}).get("StackName", "") if isinstance(value, dict) else ""):
                value = services_outputs[value["Fn::GetStackOutput"]["OutputName"]]["Value"]
            pairs.add((dimension["Name"], json.dumps(value, sort_keys=True) if isinstance(value, dict) else value))
    return pairs


def test_appmesh_rolling_deployments_roll_back_on_the_alarms_of_each_variants_own_tasks(appmesh):
    """The load balancer sends every public request to the primary, and the router's weights move mesh calls only
    (when a traffic shift runs): each ECS service's rolling deployment rolls back on the alarms that see its own tasks.
    By name, as plain strings: the observability stack, deployed after the services stack, makes them."""
    for region in REGIONS:
        outputs = appmesh.template(f"mf-{region}/services")["Outputs"]
        alarms = {r["Properties"]["AlarmName"]: r["Properties"]
                  for r in _resources(appmesh, f"mf-{region}/observability", "AWS::CloudWatch::Alarm").values()}
        for properties in _ecs_services(appmesh, region).values():
            ecs_name = properties["ServiceName"]
            name = ecs_name.removesuffix("-canary")
            if ecs_name == name:
                # The target group the primary registers in (every service has a path).
                (group,) = [lb["TargetGroupArn"]["Ref"] for lb in properties["LoadBalancers"]]
                of_group = {("TargetGroup", json.dumps({"Fn::GetAtt": [group, "TargetGroupFullName"]}))}
                expected = {f"mf-{name}-lb-group0-5xx-rate": of_group, f"mf-{name}-lb-group0-p95-latency": of_group}
            else:
                # Its own requests: the router's canary weight of the mesh calls (none for vc-start, which nothing calls).
                traffic = ["5xx-rate", "p95-latency", *(["grpc-error-rate", "grpc-p95-latency"] if name in GRPC_SERVICES else [])]
                expected = {f"mf-{name}-canary-{what}": {("service.name", name), ("deployment.variant", "canary")}
                            for what in traffic if name in CALLED}
            expected[f"mf-{ecs_name}-no-running-tasks"] = {("ServiceName", ecs_name)}
            deployment = properties["DeploymentConfiguration"]
            assert (deployment["Strategy"], deployment["DeploymentCircuitBreaker"]) == ("ROLLING", {"Enable": True, "Rollback": True})
            assert deployment["Alarms"] == {"AlarmNames": list(expected), "Enable": True, "Rollback": True}, ecs_name
            for alarm_name, of_variant in expected.items():
                assert alarm_name in alarms, f"{ecs_name} rolls back on {alarm_name}, which the app does not make"
                assert of_variant <= _watched(alarms[alarm_name], outputs), alarm_name
        # Names, not references: the services stack does not wait for (or import from) the observability stack.
        assert not any("observability" in d for d in appmesh.stack_artifacts[f"mf-{region}/services"].get("dependencies", []))


def test_appmesh_turns_service_connect_off_so_a_rollback_from_service_connect_removes_its_proxy(dev, appmesh):
    # ECS keeps a service's Service Connect settings when an update names none: App Mesh must say Enabled false.
    assert all(p["ServiceConnectConfiguration"]["Enabled"] for p in _ecs_services(dev).values())
    for properties in _ecs_services(appmesh).values():
        assert properties["ServiceConnectConfiguration"] == {"Enabled": False}


def test_appmesh_uses_a_general_purpose_ca_and_an_envoy_management_endpoint(appmesh):
    (authority,) = _resources(appmesh, "mf-eu-west-1/platform", "AWS::ACMPCA::CertificateAuthority").values()
    assert authority["Properties"]["UsageMode"] == "GENERAL_PURPOSE"
    endpoints = _resources(appmesh, "mf-eu-west-1/network", "AWS::EC2::VPCEndpoint")
    assert any("appmesh-envoy-management" in json.dumps(e["Properties"]["ServiceName"]) for e in endpoints.values())


def test_appmesh_resources_carry_the_w3696_exception_and_synth_warns(appmesh):
    for _stack_path, logical_id, resource in appmesh.all_resources():
        if resource["Type"].startswith("AWS::AppMesh::"):
            assert resource["Metadata"]["cfn-lint"] == {"config": {"ignore_checks": ["W3696"]}}, logical_id
            assert "end of support" in resource["Metadata"]["cfn-lint-reasons"]["W3696"]
        else:
            assert "W3696" not in json.dumps(resource.get("Metadata", {}))
    warnings = [
        entry["data"]
        for _, metadata in appmesh.stack_metadata()
        for entries in metadata.values()
        for entry in entries
        if entry["type"] == "aws:cdk:warning"
    ]
    assert any("App Mesh reached end of support on 2026-09-30" in str(w) for w in warnings)


def test_appmesh_canary_runs_the_canary_image_tag_and_its_repository_keeps_both(tmp_path):
    assembly = synth(tmp_path / "out", mesh="appmesh", regions=[{"name": "eu-west-1", "cidr": "10.20.0.0/16"}],
                     primary_region="eu-west-1", services={"auth": {"image_tag": "1.4.2", "canary_image_tag": "1.5.0-rc1"}})
    images = {}
    for task in _mesh(assembly, "AWS::ECS::TaskDefinition").values():
        app = next(c for c in task["ContainerDefinitions"] if c["Name"] == "app")
        images[task["Family"]] = app["Image"]["Fn::Join"][1][-1]
    assert sorted(images.values()) == ["/mf/auth:1.4.2", "/mf/auth:1.5.0-rc1"]  # one repository, two tags
    # Neither image can be expired: a rule each, ahead of the untagged and count rules (tests/test_platform.py).
    (repository,) = _resources(assembly, "mf-eu-west-1/platform", "AWS::ECR::Repository").values()
    rules = json.loads(repository["Properties"]["LifecyclePolicy"]["LifecyclePolicyText"])["rules"]
    assert sorted((r["rulePriority"], r["selection"]["tagStatus"], r["selection"].get("tagPatternList")) for r in rules) == [
        (1, "tagged", ["1.4.2"]), (2, "tagged", ["1.5.0-rc1"]), (3, "untagged", None), (4, "any", None)]


def _consumer_service(*, mesh_callers: bool) -> Template:
    """One Service Connect service built from the construct alone, as a consumer uses it (no ECS service name)."""
    stack = cdk.Stack(cdk.App(), "consumer", env=cdk.Environment(account="111122223333", region="eu-west-1"))
    vpc = ec2.Vpc(stack, "Vpc", max_azs=2, nat_gateways=1)
    cluster = ecs.Cluster(stack, "Cluster", vpc=vpc)
    namespace = cluster.add_default_cloud_map_namespace(name="svc.local", type=servicediscovery.NamespaceType.DNS_PRIVATE)
    mesh = ServiceConnectMesh(
        stack, "Mesh", namespace=namespace,
        alarm_name_prefix="demo", alarm_topic=sns.Topic(stack, "Alarms"), rollout=Rollout(strategy="CANARY", canary_percent=5.0),
        per_request_timeout=cdk.Duration.seconds(15), idle_timeout=cdk.Duration.seconds(300))
    MeshedFargateService(
        stack, "orders", cluster=cluster, extensions=[mesh.extension(mesh_callers=mesh_callers)],
        capacity_strategy=[ecs.CapacityProviderStrategy(capacity_provider="FARGATE", weight=1)],
        log_encryption_key=kms.Key(stack, "LogsKey"), log_retention=logs.RetentionDays.ONE_WEEK,
        props=MeshedServiceProps(name="orders", image=ecs.ContainerImage.from_registry("public.ecr.aws/docker/library/python:3.12-slim"),
                                 container_port=8080, cpu=256, memory_limit_mib=512, health_check_path="/ready",
                                 min_tasks=1, max_tasks=2))
    return Template.from_stack(stack)


def test_a_service_connect_service_without_an_ecs_service_name_gets_its_rollback_alarms():
    """The construct alone, as a consumer uses it: without `service_name` CloudFormation names the ECS
    service, and the deployment alarms (named after `name`, dimension TargetDiscoveryName) still roll it back."""
    template = _consumer_service(mesh_callers=True)
    [service] = template.find_resources("AWS::ECS::Service").values()
    assert "ServiceName" not in service["Properties"]
    alarms = template.find_resources("AWS::CloudWatch::Alarm")
    assert service["Properties"]["DeploymentConfiguration"]["Alarms"] == {"AlarmNames": [{"Ref": alarm} for alarm in alarms],
                                                                          "Enable": True, "Rollback": True}
    assert sorted(alarm["Properties"]["AlarmName"] for alarm in alarms.values()) == ["demo-orders-5xx-rate", "demo-orders-p95-latency"]
    template.has_resource_properties("AWS::CloudWatch::Alarm", {
        "AlarmName": "demo-orders-5xx-rate",
        "Metrics": Match.array_with([Match.object_like({"MetricStat": Match.object_like({"Metric": Match.object_like({
            "Dimensions": [{"Name": "TargetDiscoveryName", "Value": "orders-sc"}]})})})])})


def test_a_service_connect_service_nothing_calls_gets_no_mesh_alarms_that_could_never_fire():
    """Service Connect measures responses in the callers' proxies: without mesh callers there is nothing to judge."""
    template = _consumer_service(mesh_callers=False)
    assert template.find_resources("AWS::CloudWatch::Alarm") == {}
    [service] = template.find_resources("AWS::ECS::Service").values()
    assert not service["Properties"]["DeploymentConfiguration"].get("Alarms", {}).get("AlarmNames")
