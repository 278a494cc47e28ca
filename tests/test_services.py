"""The services stack: every configured service as a MeshedFargateService, on both mesh backends."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.assembly import REPO_ROOT

REGIONS = ("eu-central-1", "eu-west-1")
SERVICES = ("auth", "persona", "vc-start")
CALLS = {("persona", "auth"), ("vc-start", "auth"), ("vc-start", "persona")}  # (caller, callee)
ADOT_CONFIG = REPO_ROOT / "constructs" / "meshed_service" / "adot-collector.yaml"


def _stack(region):
    return f"mf-{region}/services"


def _by_type(assembly, region, resource_type):
    return assembly.resources(_stack(region), resource_type)


def _service_name(logical_id):
    """'vcstartServiceXXXX' -> 'vc-start'; 'authcanaryService..' -> 'auth-canary'."""
    for name in sorted(SERVICES, key=len, reverse=True):
        flat = name.replace("-", "")
        if logical_id.startswith(flat + "canary"):
            return name + "-canary"
        if logical_id.startswith(flat):
            return name
    raise AssertionError(logical_id)


@pytest.fixture(params=["dev", "appmesh"])
def backend(request, dev, appmesh):
    """Each test below runs against both mesh backends."""
    return {"dev": dev, "appmesh": appmesh}[request.param]


def test_every_configured_service_runs(dev, appmesh):
    for region in REGIONS:
        assert sorted(_service_name(i) for i in _by_type(dev, region, "AWS::ECS::Service")) == sorted(SERVICES)
        # App Mesh: a primary and a canary ECS service behind each virtual service.
        assert sorted(_service_name(i) for i in _by_type(appmesh, region, "AWS::ECS::Service")) == sorted(
            [*SERVICES, *(f"{s}-canary" for s in SERVICES)])


def test_no_container_runs_as_root_and_every_root_filesystem_is_read_only(backend):
    for region in REGIONS:
        for task in _by_type(backend, region, "AWS::ECS::TaskDefinition").values():
            for container in task["Properties"]["ContainerDefinitions"]:
                if container["Name"] == "amazon-ssm-agent":
                    # The one exception: AWS FIS's SSM agent sidecar (config chaos) installs its tools and registers
                    # the task as root, as AWS's script requires. It is never essential (tests/test_chaos.py).
                    assert container["Essential"] is False and task["Properties"]["EnableFaultInjection"] is True
                    continue
                assert container["User"].split(":")[0] not in ("", "0", "root"), container["Name"]
                assert container["ReadonlyRootFilesystem"] is True, container["Name"]


@pytest.mark.parametrize("variant", ["dev", "appmesh", "prod"])
def test_every_read_only_non_root_container_writes_to_a_tmpfs_at_tmp_not_to_a_task_volume(request, variant):
    """A read-only, non-root container can write only to a tmpfs: a Fargate task volume is not writable by a non-root
    user (why, and the mode a tmpfs has: constructs/meshed_service/README.md, Default settings)."""
    assembly = request.getfixturevalue(variant)
    checked = set()
    for region in REGIONS:
        for task in _by_type(assembly, region, "AWS::ECS::TaskDefinition").values():
            containers = task["Properties"]["ContainerDefinitions"]
            for container in containers:
                if not (container.get("ReadonlyRootFilesystem") and container.get("User")):
                    continue
                (tmp,) = container["LinuxParameters"]["Tmpfs"]
                assert tmp["ContainerPath"] == "/tmp", container["Name"]
                # No task volume mounted over the scratch path.
                assert "/tmp" not in [m["ContainerPath"] for m in container.get("MountPoints", [])], container["Name"]
                # No device files, no setuid, nothing executed from it.
                assert tmp["MountOptions"] == ["nosuid", "nodev", "noexec"], container["Name"]
                # A sidecar's tmpfs is a small part of its hard limit.
                assert "Memory" not in container or tmp["Size"] <= container["Memory"] // 8, container["Name"]
                checked.add(container["Name"])
            # The construct's rule (MeshedFargateService): the task's tmpfs mounts together within a quarter of its memory.
            total = sum(t["Size"] for c in containers for t in c.get("LinuxParameters", {}).get("Tmpfs", []))
            assert 0 < total <= int(task["Properties"]["Memory"]) // 4
    assert checked == {"app", "worker", "adot-collector", *(["envoy"] if variant == "appmesh" else [])}


def test_every_container_logs_to_an_encrypted_log_group_with_retention(backend):
    for region in REGIONS:
        log_groups = _by_type(backend, region, "AWS::Logs::LogGroup")
        assert all("KmsKeyId" in g["Properties"] and g["Properties"]["RetentionInDays"] == 30 for g in log_groups.values())
        for task in _by_type(backend, region, "AWS::ECS::TaskDefinition").values():
            for container in task["Properties"]["ContainerDefinitions"]:
                logging = container["LogConfiguration"]
                assert logging["LogDriver"] == "awslogs" and logging["Options"]["mode"] == "non-blocking"
                assert logging["Options"]["awslogs-group"]["Ref"] in log_groups


def test_app_container_health_check_and_stop_timeout(backend):
    for task in _by_type(backend, "eu-west-1", "AWS::ECS::TaskDefinition").values():
        app = next(c for c in task["Properties"]["ContainerDefinitions"] if c["Name"] == "app")
        # Liveness for the container check; readiness (/health/ready) is for the mesh and load balancer.
        assert "http://127.0.0.1:8080/health/live" in " ".join(app["HealthCheck"]["Command"])
        assert app["StopTimeout"] == 30
        assert app["PortMappings"][0] == {"AppProtocol": "http", "ContainerPort": 8080, "Name": "http", "Protocol": "tcp"}
        assert task["Properties"]["ExecutionRoleArn"] != task["Properties"]["TaskRoleArn"]


def test_adot_collector_sidecar_runs_the_versioned_config(backend):
    for task in _by_type(backend, "eu-central-1", "AWS::ECS::TaskDefinition").values():
        containers = {c["Name"]: c for c in task["Properties"]["ContainerDefinitions"]}
        adot = containers["adot-collector"]
        assert adot["Image"].startswith("public.ecr.aws/aws-observability/aws-otel-collector:v")
        config = next(e["Value"] for e in adot["Environment"] if e["Name"] == "AOT_CONFIG_CONTENT")
        # Fn::Join parts: the repo file, with the metrics log group's name filled in.
        text = "".join(p if isinstance(p, str) else "<log-group>" for p in config["Fn::Join"][1])
        expected = ADOT_CONFIG.read_text().replace("__METRICS_NAMESPACE__", "mf/services").replace("__METRICS_LOG_GROUP__", "<log-group>")
        assert text == expected
        assert {"Condition": "START", "ContainerName": "adot-collector"} in containers["app"]["DependsOn"]
        # Not essential: without a restart policy a collector that exits stays down for the task's life, and ECS
        # restarts it only after it ran the attempt period (default 300 s): 60 s, the least, leaves the shortest gap.
        assert adot["Essential"] is False and adot["RestartPolicy"] == {"Enabled": True, "RestartAttemptPeriod": 60}
        # Its health check is what Container Insights reports and the observability stack alarms on.
        assert adot["HealthCheck"]["Command"] == ["CMD", "/healthcheck"]


def test_the_collector_limits_its_memory_first_in_every_pipeline_below_its_container_limit():
    config = yaml.safe_load(ADOT_CONFIG.read_text())
    limiter = config["processors"]["memory_limiter"]
    assert limiter["limit_mib"] < 128 and limiter["spike_limit_mib"] < limiter["limit_mib"]
    for name, pipeline in config["service"]["pipelines"].items():
        assert pipeline["processors"][0] == "memory_limiter", name


def test_collector_receives_only_on_localhost():
    assert ADOT_CONFIG.read_text().count("endpoint: 127.0.0.1:") == 3
    assert "0.0.0.0" not in ADOT_CONFIG.read_text()


def _role_policy_actions(assembly, region, role_logical_id):
    actions = set()
    for policy in _by_type(assembly, region, "AWS::IAM::Policy").values():
        if {"Ref": role_logical_id} in policy["Properties"]["Roles"]:
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                action = statement["Action"]
                actions |= {action} if isinstance(action, str) else set(action)
    return actions


def test_execution_and_task_roles_are_separate_and_least_privilege(backend):
    region = "eu-west-1"
    for task in _by_type(backend, region, "AWS::ECS::TaskDefinition").values():
        execution = _role_policy_actions(backend, region, task["Properties"]["ExecutionRoleArn"]["Fn::GetAtt"][0])
        task_actions = _role_policy_actions(backend, region, task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0])
        assert {"logs:CreateLogStream", "logs:PutLogEvents"} <= execution <= {
            "ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage",
            "ecr:GetAuthorizationToken", "logs:CreateLogStream", "logs:PutLogEvents",
            # The service's configuration parameters, read when a task starts (tests/test_service_config.py).
            "ssm:DescribeParameters", "ssm:GetParameter", "ssm:GetParameterHistory", "ssm:GetParameters"}
        assert {"xray:PutTraceSegments", "logs:PutLogEvents"} <= task_actions
        # The apps sample on their own and the collector serves no X-Ray remote sampling: no sampling APIs.
        assert not any(action.startswith("xray:GetSampling") for action in task_actions)
        assert not any(a.endswith(":*") or a == "*" for a in execution | task_actions)
    for role in _by_type(backend, region, "AWS::IAM::Role").values():
        statement = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
        if statement["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}:
            assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}


def test_services_run_private_with_rollback_and_the_platform_capacity_strategy(backend):
    for region in REGIONS:
        platform = backend.template(f"mf-{region}/platform")["Resources"]
        (associations,) = [r for r in platform.values() if r["Type"] == "AWS::ECS::ClusterCapacityProviderAssociations"]
        for service in _by_type(backend, region, "AWS::ECS::Service").values():
            properties = service["Properties"]
            network = properties["NetworkConfiguration"]["AwsvpcConfiguration"]
            assert network["AssignPublicIp"] == "DISABLED"
            assert all("privateSubnet" in s["Fn::GetStackOutput"]["OutputName"] for s in network["Subnets"])
            assert properties["CapacityProviderStrategy"] == associations["Properties"]["DefaultCapacityProviderStrategy"]
            assert "LaunchType" not in properties
            deployment = properties["DeploymentConfiguration"]
            assert deployment["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
            assert (deployment["MinimumHealthyPercent"], deployment["MaximumPercent"]) == (100, 200)
            assert properties["AvailabilityZoneRebalancing"] == "ENABLED"


def test_security_groups_admit_only_the_named_callers_on_the_app_and_grpc_ports(backend):
    for region in REGIONS:
        groups = _by_type(backend, region, "AWS::EC2::SecurityGroup")
        admitted, behind_load_balancer = set(), set()
        for rule in _by_type(backend, region, "AWS::EC2::SecurityGroupIngress").values():
            properties = rule["Properties"]
            if properties["GroupId"]["Fn::GetAtt"][0].startswith("IngressSecurityGroup"):
                continue  # the load balancer's own rule (tests/test_ingress.py)
            port = properties["FromPort"]
            assert (properties["ToPort"], properties["IpProtocol"]) == (port, "tcp")
            callee = _service_name(properties["GroupId"]["Fn::GetAtt"][0])
            source = properties["SourceSecurityGroupId"]["Fn::GetAtt"][0]
            if source.startswith("IngressSecurityGroup"):
                assert port == 8080
                behind_load_balancer.add(callee)
                continue
            admitted.add((_service_name(source).removesuffix("-canary"), callee.removesuffix("-canary"), port))
        # Every caller on the callee's HTTP port; persona's gRPC port only for vc-start, its one caller.
        assert admitted == {(caller, callee, 8080) for caller, callee in CALLS} | {("vc-start", "persona", 50051)}
        # The load balancer reaches every service with a path (all three by default); an App Mesh canary
        # takes mesh traffic only.
        assert behind_load_balancer == set(SERVICES)
        assert all("SecurityGroupIngress" not in g["Properties"] for g in groups.values())


def test_a_service_with_an_image_tag_runs_from_its_ecr_repository(one_region_auth):
    """one_region_auth (tests/conftest.py): auth alone, image_tag 1.4.2."""
    assembly = one_region_auth
    (task,) = assembly.resources("mf-eu-west-1/services", "AWS::ECS::TaskDefinition").values()
    app = next(c for c in task["Properties"]["ContainerDefinitions"] if c["Name"] == "app")
    image = "".join(p if isinstance(p, str) else "<x>" for p in app["Image"]["Fn::Join"][1])
    # The platform stack's mf/auth repository, by name: no output of another stack, which CloudFormation
    # could not split for the URI.
    assert image == "<x>.dkr.ecr.eu-west-1.<x>/mf/auth:1.4.2", image  # the account and URL suffix: pseudo parameters
    assert "GetStackOutput" not in json.dumps(app["Image"])
    pulls = [s for p in assembly.resources("mf-eu-west-1/services", "AWS::IAM::Policy").values()
             for s in p["Properties"]["PolicyDocument"]["Statement"] if "ecr:BatchGetImage" in s["Action"]]
    assert pulls and all(json.dumps(s["Resource"]).endswith(':repository/mf/auth"]]}') for s in pulls), pulls


def test_a_fourth_service_needs_config_only(tmp_path):
    from tests.assembly import cdk_json_context, synth

    # Any image works: this one has no python, runs as uid 101 and listens on 8080.
    services = {**cdk_json_context()["services"],
                "billing": {"image": "public.ecr.aws/nginx/nginx-unprivileged:1.27", "calls": ["auth"], "port": 8080,
                            "user": "101", "health_check_path": "/", "liveness_path": "/",
                            "health_check_command": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1"],
                            "min_tasks": 2, "max_tasks": 2}}
    assembly = synth(tmp_path / "out", regions=[{"name": "eu-west-1", "cidr": "10.20.0.0/16"}], primary_region="eu-west-1",
                     services=services)
    by_name = {r["Properties"]["ServiceName"]: r["Properties"] for r in assembly.resources("mf-eu-west-1/services", "AWS::ECS::Service").values()}
    assert set(by_name) == {"auth", "persona", "vc-start", "billing"}
    # A fixed count (min == max) has no scalable target, so the template holds the count; scaled services leave it out.
    assert by_name["billing"]["DesiredCount"] == 2 and all("DesiredCount" not in by_name[name] for name in ("auth", "persona", "vc-start"))
    targets = json.dumps([t["Properties"]["ResourceId"] for t in assembly.resources("mf-eu-west-1/services", "AWS::ApplicationAutoScaling::ScalableTarget").values()])
    assert "billing" not in targets.lower() and len(assembly.resources("mf-eu-west-1/services", "AWS::ApplicationAutoScaling::ScalableTarget")) == 3
    repositories = {r["Properties"]["RepositoryName"] for r in assembly.resources("mf-eu-west-1/platform", "AWS::ECR::Repository").values()}
    assert "mf/billing" in repositories
    ingress = [r["Properties"] for r in assembly.resources("mf-eu-west-1/services", "AWS::EC2::SecurityGroupIngress").values()]
    assert any(r["Description"] == "from billing" and r["FromPort"] == 8080 for r in ingress)  # auth admits billing
    billing = next(t["Properties"]["ContainerDefinitions"] for t in assembly.resources("mf-eu-west-1/services", "AWS::ECS::TaskDefinition").values()
                   if any(c.get("Image") == "public.ecr.aws/nginx/nginx-unprivileged:1.27" for c in t["Properties"]["ContainerDefinitions"]))
    app = next(c for c in billing if c["Name"] == "app")
    assert app["User"] == "101" and app["HealthCheck"]["Command"][0] == "CMD-SHELL"


def test_secrets_are_injected_by_ecs_and_readable_only_by_the_execution_role(one_region_auth):
    """one_region_auth (tests/conftest.py): auth alone, secrets JWT_SIGNING_KEY from Secrets Manager and DB_PASSWORD from SSM."""
    assembly = one_region_auth
    (task,) = assembly.resources("mf-eu-west-1/services", "AWS::ECS::TaskDefinition").values()
    app = next(c for c in task["Properties"]["ContainerDefinitions"] if c["Name"] == "app")
    # Besides the two from config, only the service's own configuration parameters (tests/test_service_config.py).
    config_secrets = {s["Name"] for s in app["Secrets"]} - {"DB_PASSWORD", "JWT_SIGNING_KEY"}
    parameters = {p["Properties"]["Name"] for p in assembly.resources("mf-eu-west-1/services", "AWS::SSM::Parameter").values()}
    assert {"DB_PASSWORD", "JWT_SIGNING_KEY"} <= {s["Name"] for s in app["Secrets"]}
    assert {f"/mf/auth/config/{name}" for name in config_secrets} <= parameters
    assert not any(e["Name"] in ("DB_PASSWORD", "JWT_SIGNING_KEY") for e in app["Environment"])
    execution = task["Properties"]["ExecutionRoleArn"]["Fn::GetAtt"][0]
    task_role = task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
    reads = {}
    for policy in assembly.resources("mf-eu-west-1/services", "AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            for action in actions:
                if action in ("secretsmanager:GetSecretValue", "ssm:GetParameters"):
                    reads.setdefault(action, set()).update(r["Ref"] for r in policy["Properties"]["Roles"])
    assert reads == {"secretsmanager:GetSecretValue": {execution}, "ssm:GetParameters": {execution}}
    assert task_role not in reads["secretsmanager:GetSecretValue"]


def test_every_service_registers_in_dns_with_a_short_ttl(backend):
    for region in REGIONS:
        registries = _by_type(backend, region, "AWS::ServiceDiscovery::Service")
        services = _by_type(backend, region, "AWS::ECS::Service")
        assert len(registries) == len(services)
        for registry in registries.values():
            assert registry["Properties"]["DnsConfig"]["DnsRecords"] == [{"TTL": 10, "Type": "A"}]
        for service in services.values():
            (registration,) = service["Properties"]["ServiceRegistries"]
            registry = registries[registration["RegistryArn"]["Fn::GetAtt"][0]]
            assert registry["Properties"]["Name"] == service["Properties"]["ServiceName"]
