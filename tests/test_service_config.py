"""Each service's configuration lives in SSM under /<prefix>/<service>/config/ and reaches its tasks through ECS."""

from __future__ import annotations

import pytest

from stacks.config import CONFIG_DIGEST
from tests.assembly import container_settings

REGIONS = ("eu-central-1", "eu-west-1")
SERVICES = ("auth", "persona", "vc-start")
# What the task definition itself is built around stays a plain environment variable.
TASK_DEFINITION_ENVIRONMENT = {"SERVICE_NAME", "PORT", "GRPC_PORT", "PUBLIC_PATH", "TRUSTED_PROXY_HOPS", "OTEL_EXPORTER_OTLP_ENDPOINT",
                               # The hash of the service's parameters' values (the test below).
                               CONFIG_DIGEST,
                               # The ADOT collector's: histograms it can turn into percentiles (tests/test_service_percentiles.py).
                               "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION", "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"}
SSM_READS = {"ssm:GetParameters", "ssm:GetParameter", "ssm:GetParameterHistory", "ssm:DescribeParameters"}
# The chaos target's fault-injection sidecar registering its task as an SSM managed instance
# (constructs/meshed_service/fault_injection.py; tests/test_chaos.py checks those grants): no parameter reads.
FAULT_INJECTION_ACTIONS = {
    "ssm:CreateActivation", "ssm:AddTagsToResource", "ssm:DeregisterManagedInstance", "ssm:DeleteActivation",
    "ssm:UpdateInstanceInformation", "ssm:ListInstanceAssociations",
    "ec2messages:AcknowledgeMessage", "ec2messages:DeleteMessage", "ec2messages:FailMessage", "ec2messages:GetEndpoint",
    "ec2messages:GetMessages", "ec2messages:SendReply", "ssmmessages:CreateControlChannel", "ssmmessages:OpenControlChannel",
}


def _owner(logical_id):
    for name in sorted(SERVICES, key=len, reverse=True):
        if logical_id.startswith(name.replace("-", "")):
            return name
    return None


def _parameters(resources):
    """parameter logical ID -> properties, for the services' configuration parameters only."""
    return {i: r["Properties"] for i, r in resources.items()
            if r["Type"] == "AWS::SSM::Parameter" and "/config/" in r["Properties"]["Name"]}


def _parameter_ref(value_from):
    """The parameter logical ID in an ARN CDK builds as Fn::Join [..., ':parameter', {Ref: <parameter>}]."""
    (ref,) = [part["Ref"] for part in value_from["Fn::Join"][1] if isinstance(part, dict) and "Ref" in part and part["Ref"] != "AWS::AccountId"]
    return ref


def _task_definitions(assembly, region):
    resources = assembly.template(f"mf-{region}/services")["Resources"]
    return resources, {i: r for i, r in resources.items() if r["Type"] == "AWS::ECS::TaskDefinition"}


@pytest.fixture(params=["dev", "appmesh"])
def backend(request, dev, appmesh):
    return {"dev": dev, "appmesh": appmesh}[request.param]


def test_each_services_settings_are_parameters_under_its_own_path(backend):
    for region in REGIONS:
        resources = backend.template(f"mf-{region}/services")["Resources"]
        parameters = _parameters(resources)
        by_service = {}
        for logical_id, parameter in parameters.items():
            service = _owner(logical_id)
            name = parameter["Name"].removeprefix(f"/mf/{service}/config/")
            assert parameter["Name"] == f"/mf/{service}/config/{name}", parameter["Name"]
            assert parameter["Type"] == "String" and parameter["Tier"] == "Standard"
            by_service.setdefault(service, set()).add(name)
        # Every service: its log level and trace sampler (the rate of the X-Ray sampling rules).
        common = {"LOG_LEVEL", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"}
        assert by_service["auth"] == common | {"TABLE_NAME", "JWT_SIGNING_SECRET_ID", "JWT_ISSUER", "JWT_AUDIENCE"}
        assert by_service["persona"] == common | {"TABLE_NAME", "QUEUE_URL", "EVENT_BUS_NAME", "EVENT_SOURCE", "AUTH_URL",
                                         "JWT_ISSUER", "JWT_AUDIENCE"}
        assert by_service["vc-start"] == common | {"TABLE_NAME", "QUEUE_URL", "EVENT_BUS_NAME", "EVENT_SOURCE", "AUTH_URL",
                                          "PERSONA_URL", "PERSONA_GRPC_TARGET", "JWT_ISSUER", "JWT_AUDIENCE"}
        assert {p["Value"] for p in parameters.values() if p["Name"].endswith("/LOG_LEVEL")} == {"INFO"}


def test_containers_get_the_parameters_as_ecs_secrets_and_keep_the_task_definitions_own_settings(backend):
    """ECS resolves the parameters when a task starts: a changed value needs new tasks, not a new image."""
    for region in REGIONS:
        resources, tasks = _task_definitions(backend, region)
        parameters = _parameters(resources)
        for logical_id, task in tasks.items():
            service = _owner(logical_id)
            for container in task["Properties"]["ContainerDefinitions"]:
                if container["Name"] not in ("app", "worker"):
                    continue
                environment = {e["Name"] for e in container["Environment"]}
                assert environment <= TASK_DEFINITION_ENVIRONMENT and {"SERVICE_NAME", "PORT"} <= environment
                injected = {s["Name"]: _parameter_ref(s["ValueFrom"]) for s in container["Secrets"]}
                # Every one of the service's own parameters, under its own variable name, and no other service's.
                own = {p["Name"].rsplit("/", 1)[1]: i for i, p in parameters.items() if _owner(i) == service}
                assert injected == own, (region, logical_id, container["Name"])
                assert not environment & set(injected)


def test_only_each_services_execution_roles_read_its_parameters(backend):
    for region in REGIONS:
        resources, tasks = _task_definitions(backend, region)
        parameters = _parameters(resources)
        execution_roles = {t["Properties"]["ExecutionRoleArn"]["Fn::GetAtt"][0]: _owner(i) for i, t in tasks.items()}
        task_roles = {t["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0] for t in tasks.values()}
        readers = {}
        for policy in (r for r in resources.values() if r["Type"] == "AWS::IAM::Policy"):
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                if not any(a.startswith("ssm:") for a in actions) or set(actions) <= FAULT_INJECTION_ACTIONS:
                    continue
                assert set(actions) <= SSM_READS
                targets = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
                assert "*" not in targets and all(isinstance(t, dict) for t in targets)  # ARNs of single parameters
                for role in policy["Properties"]["Roles"]:
                    readers.setdefault(role["Ref"], set()).update(_parameter_ref(t) for t in targets)
        # Exactly the execution roles read parameters: ECS resolves each task's Secrets with its execution role.
        assert set(readers) == set(execution_roles), region
        assert not set(readers) & task_roles  # the containers themselves read no parameter
        for role, read in readers.items():
            assert read == {i for i in parameters if _owner(i) == execution_roles[role]}, role


def test_config_environment_goes_to_ssm_and_overrides_the_default_log_level(one_region_auth):
    """one_region_auth (tests/conftest.py): auth alone, environment LOG_LEVEL=DEBUG, FEATURE_FLAGS=login-v2 and EMPTY=''."""
    resources, tasks = _task_definitions(one_region_auth, "eu-west-1")
    parameters = {p["Name"]: p["Value"] for p in _parameters(resources).values()}
    assert parameters["/mf/auth/config/LOG_LEVEL"] == "DEBUG"
    assert parameters["/mf/auth/config/FEATURE_FLAGS"] == "login-v2"
    # SSM cannot hold an empty value: that one stays in the environment.
    assert "/mf/auth/config/EMPTY" not in parameters
    (task,) = tasks.values()
    app = next(c for c in task["Properties"]["ContainerDefinitions"] if c["Name"] == "app")
    settings = container_settings(resources, app)
    assert (settings["LOG_LEVEL"], settings["FEATURE_FLAGS"], settings["EMPTY"]) == ("DEBUG", "login-v2", "")


def _app_and_worker(tasks):
    """task definition logical ID -> its app's and worker's container definitions (the ones that read the parameters)."""
    return {i: [c for c in t["Properties"]["ContainerDefinitions"] if c["Name"] in ("app", "worker")] for i, t in tasks.items()}


def _without_digest(container):
    return {**container, "Environment": [e for e in container["Environment"] if e["Name"] != CONFIG_DIGEST]}


def test_a_deployed_setting_changes_only_its_services_task_definitions(dev, settings_changes):
    """settings_changes (tests/conftest.py): dev with auth's LOG_LEVEL DEBUG in its environment (and edge settings
    that no regional stack reads). A changed parameter alone starts no ECS deployment: its new value would reach tasks one by
    one as they are replaced, past the deployment's canary, alarms and circuit breaker. The digest of the values in
    the task definition makes ECS deploy the change; the same settings keep the same digest, synth after synth."""
    for region in REGIONS:
        before_resources, before = _task_definitions(dev, region)
        after_resources, after = _task_definitions(settings_changes, region)
        assert set(before) == set(after)
        parameter = "/mf/auth/config/LOG_LEVEL"
        assert [p["Value"] for p in _parameters(before_resources).values() if p["Name"] == parameter] == ["INFO"]
        assert [p["Value"] for p in _parameters(after_resources).values() if p["Name"] == parameter] == ["DEBUG"]
        before_containers, after_containers = _app_and_worker(before), _app_and_worker(after)
        for logical_id in before:
            if _owner(logical_id) == "auth":
                assert before[logical_id]["Properties"]["ContainerDefinitions"] != after[logical_id]["Properties"]["ContainerDefinitions"]
                # Only the digest differs: the value itself still comes from the parameter.
                assert [_without_digest(c) for c in before_containers[logical_id]] == [_without_digest(c) for c in after_containers[logical_id]]
            else:
                assert before[logical_id]["Properties"]["ContainerDefinitions"] == after[logical_id]["Properties"]["ContainerDefinitions"], logical_id
        # The app and the worker of one task carry the same digest, and each service its own.
        digests = {i: {e["Value"] for c in containers for e in c["Environment"] if e["Name"] == CONFIG_DIGEST}
                   for i, containers in before_containers.items()}
        assert all(len(values) == 1 for values in digests.values())
        assert len({value for values in digests.values() for value in values}) == len(digests)


def test_service_config_parameters_reject_what_ssm_cannot_hold():
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from constructs.service_config import ServiceConfigParameters

    stack = cdk.Stack(cdk.App(), "Stack")
    with pytest.raises(ValueError, match="SSM parameters cannot be empty"):
        ServiceConfigParameters(stack, "Empty", prefix="mf", service="auth", values={"LOG_LEVEL": ""})
    with pytest.raises(ValueError, match="upper-case environment variable name"):
        ServiceConfigParameters(stack, "Lower", prefix="mf", service="auth", values={"log_level": "INFO"})
    config = ServiceConfigParameters(stack, "Good", prefix="mf", service="auth", values={"LOG_LEVEL": "INFO"})
    assert config.path == "/mf/auth/config" and list(config.secrets) == ["LOG_LEVEL"]
    # The digest depends on the values alone (not on the construct's path or stack), and changes with any.
    again = ServiceConfigParameters(cdk.Stack(cdk.App(), "Other"), "Again", prefix="mf", service="auth", values={"LOG_LEVEL": "INFO"})
    debug = ServiceConfigParameters(stack, "Debug", prefix="mf", service="auth", values={"LOG_LEVEL": "DEBUG"})
    assert config.digest == again.digest != debug.digest and len(config.digest) == 16
    Template.from_stack(stack).has_resource_properties(
        "AWS::SSM::Parameter", {"Name": "/mf/auth/config/LOG_LEVEL", "Value": "INFO", "Type": "String"})
