"""What each service owns and may do (issue 5): its queue, its bus permissions, its grants on its own table,
secret and key (global since issue 6: tests/test_service_data.py), its environment and its worker, on both
mesh backends. Database per service: no other role touches a table."""

from __future__ import annotations

import json
import re

import pytest

from constructs.service_resources.service_resources import (
    QUEUE_ACTIONS,
    SECRET_ACTIONS,
    TABLE_ACTIONS,
    TABLE_KEY_ACTIONS,
    TABLE_KEY_DESCRIBE_ACTIONS,
)
from stacks.config import CONFIG_DIGEST, TABLE_ITEM_ACTIONS, load_config
from tests.assembly import cdk_json_context, container_settings, source_value, synth

REGIONS = ("eu-central-1", "eu-west-1")
SERVICES = ("auth", "persona", "vc-start")
CONSUMES = {"persona": ("vc-start", ["SessionStarted", "SessionCancelled"]), "vc-start": ("persona", ["SlotConfirmed", "SlotReleased"])}
PRODUCERS = {"persona", "vc-start"}
WORKERS = {"persona": "persona_service.worker", "vc-start": "vc_start.worker"}
TABLE_ACTIONS_BY_SERVICE = {s.name: s.table_actions for s in load_config(cdk_json_context()).services}


def _claim_lease_seconds():
    return source_value("services/common/servicekit/events.py", r"^CLAIM_LEASE_SECONDS = (\d+)$")


def _resources(assembly, region="eu-west-1"):
    """The services stack's resources but the listener rule guard's, which are no service's (tests/test_listener_rule_guard.py)."""
    return {logical_id: r for logical_id, r in assembly.template(f"mf-{region}/services")["Resources"].items()
            if not logical_id.startswith("ListenerRuleGuard")}


def _of_type(resources, resource_type):
    return {logical_id: r for logical_id, r in resources.items() if r["Type"] == resource_type}


def _owner(logical_id):
    """'vcstartresourcesTable..' -> 'vc-start'; 'personacanaryTaskRole..' -> 'persona' (a canary is its service)."""
    for name in sorted((*SERVICES, "billing"), key=len, reverse=True):  # billing: the config-only test below
        if logical_id.startswith(name.replace("-", "")):
            return name
    return None


def _owned(resources, resource_type):
    """service name -> logical ID of the one resource of that type it owns."""
    owned = {}
    for logical_id in _of_type(resources, resource_type):
        assert "resources" in logical_id, logical_id
        assert _owner(logical_id) not in owned, logical_id
        owned[_owner(logical_id)] = logical_id
    return owned


@pytest.fixture(params=["dev", "appmesh"])
def backend(request, dev, appmesh):
    return request.param, {"dev": dev, "appmesh": appmesh}[request.param]


# --- Retention ----------------------------------------------------------------------------------


@pytest.mark.parametrize("profile, retained", [("dev", False), ("prod", True)])
def test_prod_keeps_the_queues_and_dev_deletes_them(dev, prod, profile, retained):
    resources = _resources({"dev": dev, "prod": prod}[profile])
    policy = "Retain" if retained else "Delete"
    # The dead-letter queues above all: unhandled events outlive the stack in prod.
    queues = _of_type(resources, "AWS::SQS::Queue")
    assert len(queues) == 2 * len(CONSUMES)
    for logical_id, resource in queues.items():
        assert (resource["DeletionPolicy"], resource["UpdateReplacePolicy"]) == (policy, policy), logical_id


# --- Least privilege ---------------------------------------------------------------------------


def _statements_by_role(resources):
    """(role logical ID, statement) for every identity policy statement of the stack."""
    for policy in _of_type(resources, "AWS::IAM::Policy").values():
        for role in policy["Properties"]["Roles"]:
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                yield role["Ref"], statement


def _actions(statement):
    return [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]


def _text(value):
    """An ARN expression as text: joins joined, references as <logical ID> (the account as <AWS::AccountId>),
    attributes as <logical ID.attribute>, anything else as JSON."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        return value["Fn::Join"][0].join(_text(part) for part in value["Fn::Join"][1])
    if "Ref" in value:
        return f"<{value['Ref']}>"
    if "Fn::GetAtt" in value:
        return f"<{value['Fn::GetAtt'][0]}.{value['Fn::GetAtt'][1]}>"
    return json.dumps(value)


# Names of every service's table and secret, as the grants' ARNs end.
def _named_resource(arn):
    """'arn:...:table/mf-persona' -> ('table', 'persona'), as is one of its indexes ('...:table/mf-vc-start/index/sweep');
    '...:secret:mf/auth/jwt-signing-key-??????' -> ('secret', 'auth')."""
    match = re.search(r":table/mf-([a-z-]+)(/index/[A-Za-z0-9_.-]+)?$", arn) or re.search(r":secret:mf/([a-z-]+)/jwt-signing-key-\?{6}$", arn)
    return (("table" if ":table/" in arn else "secret"), match.group(1)) if match else None


def test_only_a_services_own_task_roles_reach_its_queue_table_and_secret(backend):
    variant, assembly = backend
    resources = _resources(assembly)
    queues = {logical_id: _owner(logical_id) for logical_id in _of_type(resources, "AWS::SQS::Queue")}
    assert len(queues) == 4
    reached = {}
    for role, statement in _statements_by_role(resources):
        for logical_id in queues:
            if logical_id in json.dumps(statement["Resource"]):
                assert role.startswith(queues[logical_id].replace("-", "")) and "TaskRole" in role, (role, logical_id)
                reached.setdefault(logical_id, set()).add(role)
        # The table and the secret are the primary region's (tests/test_service_data.py), named by ARN here.
        named = _named_resource(_text(statement["Resource"]))
        if named:
            assert named[1] == _owner(role) and "TaskRole" in role, (role, named)
            reached.setdefault(named, set()).add(role)
    # The dead-letter queues are read by operators, not by the services.
    assert all("DeadLetterQueue" not in str(resource) for resource in reached)
    task_roles_per_service = 2 if variant == "appmesh" else 1  # with App Mesh, the canary too
    for resource, roles in reached.items():
        # The App Mesh canary runs no worker, so it gets no queue: only the primary reads it.
        expected = 1 if "Queue" in str(resource) else task_roles_per_service
        assert len(roles) == expected, (resource, roles)
        if "Queue" in str(resource):
            assert not any("canary" in role for role in roles), (resource, roles)
    assert {name for kind, name in (r for r in reached if isinstance(r, tuple)) if kind == "table"} == set(SERVICES)
    assert {name for kind, name in (r for r in reached if isinstance(r, tuple)) if kind == "secret"} == {"auth"}


def test_task_roles_get_item_actions_on_their_table_and_nothing_broader(backend):
    _, assembly = backend
    resources = _resources(assembly)
    seen = set()
    for role, statement in _statements_by_role(resources):
        actions = _actions(statement)
        service = _owner(role)
        if any(a.startswith("dynamodb:") for a in actions) and "/index/" in _text(statement["Resource"]):
            continue  # Query on an index (test below)
        if any(a.startswith("dynamodb:") for a in actions):
            # What the service's code calls (cdk.json table_actions; tests/test_service_aws_calls.py ties them to the code).
            assert sorted(actions) == [f"dynamodb:{action}" for action in TABLE_ACTIONS_BY_SERVICE[service]], service
            assert _text(statement["Resource"]) == f"arn:aws:dynamodb:eu-west-1:<AWS::AccountId>:table/mf-{service}"
            seen.add(service)
        if set(actions) == set(TABLE_KEY_ACTIONS):
            # Any key of the region (the replica's ID is the primary's), through DynamoDB, for this table only.
            assert _text(statement["Resource"]) == "arn:aws:kms:eu-west-1:<AWS::AccountId>:key/*"
            assert statement["Condition"] == {"StringEquals": {"kms:ViaService": "dynamodb.eu-west-1.amazonaws.com",
                                                               "kms:EncryptionContext:aws:dynamodb:tableName": f"mf-{service}"}}
        if set(actions) == set(TABLE_KEY_DESCRIBE_ACTIONS):
            assert statement["Condition"] == {"StringEquals": {"kms:ViaService": "dynamodb.eu-west-1.amazonaws.com"}}
    assert seen == set(SERVICES)
    # Item-level only: no scans, no table administration, no transactions-as-a-wildcard.
    assert not {"dynamodb:Scan", "dynamodb:CreateTable", "dynamodb:UpdateTable", "dynamodb:DeleteTable"} & set(TABLE_ACTIONS)
    assert {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"} <= set(TABLE_ACTIONS)
    # The config accepts exactly the construct's item actions; persona calls all but BatchWriteItem (a deleted
    # persona's released reservations expire by TTL), and gets those.
    assert {f"dynamodb:{action}" for action in TABLE_ITEM_ACTIONS} == set(TABLE_ACTIONS)
    assert TABLE_ACTIONS_BY_SERVICE["persona"] == tuple(a for a in TABLE_ITEM_ACTIONS if a != "BatchWriteItem")
    # Nothing in services/ calls these (tests/test_service_aws_calls.py finds every call and ties each role to it).
    assert not {"dynamodb:DescribeTable", "dynamodb:ConditionCheckItem"} & set(TABLE_ACTIONS)
    # Key use that carries no table name is metadata only.
    assert set(TABLE_KEY_DESCRIBE_ACTIONS) == {"kms:DescribeKey"}


@pytest.mark.parametrize("region", REGIONS)
def test_vc_start_may_query_only_its_sweep_index_not_its_table_and_persona_its_table_and_holds_index(backend, region):
    """vc-start's sweeper reads its sparse index; Query on the table would let the role read any session partition.
    persona lists personas from its table and finds expired holds in its holds index."""
    variant, assembly = backend
    queries = {}
    for role, statement in _statements_by_role(_resources(assembly, region)):
        if "dynamodb:Query" in _actions(statement):
            queries.setdefault(_owner(role), []).append((role, _actions(statement), _text(statement["Resource"])))
    vc_start = queries.pop("vc-start")
    assert len(vc_start) == (2 if variant == "appmesh" else 1)  # with App Mesh, the canary's role too
    for role, actions, resource in vc_start:
        # A statement of its own, on exactly the index's ARN in this region.
        assert "TaskRole" in role and actions == ["dynamodb:Query"], role
        assert resource == f"arn:aws:dynamodb:{region}:<AWS::AccountId>:table/mf-vc-start/index/sweep"
    # persona queries its table, with its other item actions, and its holds index on its own; auth queries nothing.
    table = f"arn:aws:dynamodb:{region}:<AWS::AccountId>:table/mf-persona"
    persona = [(resource, sorted(actions)) for _, actions, resource in queries.pop("persona")]
    assert len(persona) == (4 if variant == "appmesh" else 2)  # with App Mesh, the canary's role too
    assert sorted(map(repr, persona)) == sorted(map(repr, [
        (table, [f"dynamodb:{action}" for action in TABLE_ACTIONS_BY_SERVICE["persona"]]),
        (f"{table}/index/holds", ["dynamodb:Query"])] * (2 if variant == "appmesh" else 1)))
    assert not queries
    # vc-start's table actions stay what its code calls on the table (cdk.json): no Query there.
    assert "Query" not in TABLE_ACTIONS_BY_SERVICE["vc-start"]


def test_only_producers_may_put_events_on_the_bus_and_only_under_their_own_source(backend):
    _, assembly = backend
    publishers = set()
    for role, statement in _statements_by_role(_resources(assembly)):
        if "events:PutEvents" in _actions(statement):
            service = _owner(role)
            assert _actions(statement) == ["events:PutEvents"] and "TaskRole" in role
            assert statement["Condition"] == {"StringEquals": {"events:source": f"mf.{service}"}}
            output = statement["Resource"]["Fn::GetStackOutput"]
            assert output["StackName"] == "mf-eu-west-1-platform" and "EventBus" in output["OutputName"] and "Arn" in output["OutputName"]
            publishers.add(service)
        assert not any(a.startswith("events:") and a != "events:PutEvents" for a in _actions(statement))
    assert publishers == PRODUCERS  # auth publishes nothing, so it may not


def test_consumers_receive_from_their_queue_only(backend):
    _, assembly = backend
    resources = _resources(assembly)
    readers = {}
    for role, statement in _statements_by_role(resources):
        if any(a.startswith("sqs:") for a in _actions(statement)):
            assert sorted(_actions(statement)) == sorted(QUEUE_ACTIONS)
            (queue,) = statement["Resource"]["Fn::GetAtt"][:1]
            assert resources[queue]["Properties"]["QueueName"] == f"mf-{_owner(role)}-events"
            readers.setdefault(_owner(role), set()).add(queue)
    assert set(readers) == set(CONSUMES)
    # The worker receives, deletes and reschedules messages (servicekit's retry backoff); it reads no queue attributes.
    assert sorted(QUEUE_ACTIONS) == ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:ReceiveMessage"]


# --- Queues and rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("region", REGIONS)
def test_each_consumer_has_an_encrypted_tls_only_queue_with_a_dead_letter_queue(dev, region):
    resources = _resources(dev, region)
    queues = {r["Properties"]["QueueName"]: (logical_id, r["Properties"]) for logical_id, r in _of_type(resources, "AWS::SQS::Queue").items()}
    assert sorted(queues) == sorted(f"mf-{name}-events{suffix}" for name in CONSUMES for suffix in ("", "-dlq"))
    policies = {p["Properties"]["Queues"][0]["Ref"]: p["Properties"]["PolicyDocument"]["Statement"]
                for p in _of_type(resources, "AWS::SQS::QueuePolicy").values()}
    rules = _of_type(resources, "AWS::Events::Rule")
    for name in CONSUMES:
        queue_id, queue = queues[f"mf-{name}-events"]
        dlq_id, dlq = queues[f"mf-{name}-events-dlq"]
        assert queue["SqsManagedSseEnabled"] is True and dlq["SqsManagedSseEnabled"] is True
        assert queue["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]}, "maxReceiveCount": 8}
        # Longer than the consumer's claim lease: a redelivery after a worker died mid-message finds the
        # claim expired and takes it over, instead of failing on it until the message is dead-lettered.
        assert queue["VisibilityTimeout"] == 150 > _claim_lease_seconds() == 120
        assert queue["ReceiveMessageWaitTimeSeconds"] == 20
        assert queue["MessageRetentionPeriod"] == 4 * 86400 < dlq["MessageRetentionPeriod"] == 14 * 86400
        for logical_id in (queue_id, dlq_id):
            deny, *allows = policies[logical_id]
            assert deny == {"Action": "sqs:*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}, "Effect": "Deny",
                            "Principal": {"AWS": "*"}, "Resource": {"Fn::GetAtt": [logical_id, "Arn"]}}
            # Only EventBridge may send, and only for this consumer's rule.
            (allow,) = allows
            assert allow["Principal"] == {"Service": "events.amazonaws.com"} and "sqs:SendMessage" in _actions(allow)
            (condition,) = allow["Condition"]["ArnEquals"].items()
            assert condition[0] == "aws:SourceArn" and condition[1]["Fn::GetAtt"][1] == "Arn"
            assert rules[condition[1]["Fn::GetAtt"][0]]["Properties"]["Name"] == f"mf-{name}-from-{CONSUMES[name][0]}"


@pytest.mark.parametrize("region", REGIONS)
def test_a_rule_per_consumer_routes_its_producers_detail_types_to_its_queue_with_retries_and_a_dead_letter_queue(dev, region):
    resources = _resources(dev, region)
    rules = {r["Properties"]["Name"]: r["Properties"] for r in _of_type(resources, "AWS::Events::Rule").values()}
    assert sorted(rules) == sorted(f"mf-{name}-from-{producer}" for name, (producer, _) in CONSUMES.items())
    queues = {r["Properties"]["QueueName"]: logical_id for logical_id, r in _of_type(resources, "AWS::SQS::Queue").items()}
    for name, (producer, detail_types) in CONSUMES.items():
        rule = rules[f"mf-{name}-from-{producer}"]
        assert rule["EventPattern"] == {"detail-type": detail_types, "source": [f"mf.{producer}"]}
        assert rule["State"] == "ENABLED"
        bus = rule["EventBusName"]["Fn::GetStackOutput"]
        assert bus["StackName"] == f"mf-{region}-platform" and "EventBus" in bus["OutputName"]
        (target,) = rule["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": [queues[f"mf-{name}-events"], "Arn"]}
        assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [queues[f"mf-{name}-events-dlq"], "Arn"]}}
        assert target["RetryPolicy"] == {"MaximumEventAgeInSeconds": 86400, "MaximumRetryAttempts": 185}


@pytest.mark.parametrize("region", REGIONS)
def test_each_region_has_one_custom_event_bus(dev, region):
    buses = dev.resources(f"mf-{region}/platform", "AWS::Events::EventBus")
    assert [b["Properties"]["Name"] for b in buses.values()] == ["mf-events"]


# --- The signing key ----------------------------------------------------------------------------


def test_only_auth_reads_the_signing_key_secret_by_name_and_decrypts_it_through_secrets_manager(backend):
    _, assembly = backend
    resources = _resources(assembly)
    assert not _of_type(resources, "AWS::SecretsManager::Secret")  # the primary region's data stack holds it
    pattern = "arn:aws:secretsmanager:eu-west-1:<AWS::AccountId>:secret:mf/auth/jwt-signing-key-??????"
    grants = [(role, statement) for role, statement in _statements_by_role(resources)
              if any(a.startswith("secretsmanager:") for a in _actions(statement))]
    assert grants and all(_owner(role) == "auth" and "TaskRole" in role and sorted(_actions(s)) == sorted(SECRET_ACTIONS)
                          and _text(s["Resource"]) == pattern for role, s in grants)
    decrypt = [s for role, s in _statements_by_role(resources) if _actions(s) == ["kms:Decrypt"]]
    assert decrypt
    for statement in decrypt:
        assert statement["Condition"]["StringEquals"] == {"kms:ViaService": "secretsmanager.eu-west-1.amazonaws.com"}
        assert _text(statement["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"]) == pattern


# --- Environment and worker ---------------------------------------------------------------------


def _readable(value):
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return f"<{value['Ref'].split('resources')[1][:-8]}>"  # 'personaresourcesQueueE3A7D94D' -> '<Queue>'
    if "Fn::GetStackOutput" in value:
        return f"<{value['Fn::GetStackOutput']['StackName'].rsplit('-', 1)[1]}:{'EventBus' if 'EventBus' in value['Fn::GetStackOutput']['OutputName'] else '?'}>"
    raise AssertionError(value)


def _containers(assembly, region="eu-west-1", primary_only=True):
    """service name -> container name -> container definition."""
    found = {}
    for logical_id, task in _of_type(_resources(assembly, region), "AWS::ECS::TaskDefinition").items():
        if primary_only and "canary" in logical_id:
            continue
        found.setdefault(_owner(logical_id), {}).update({c["Name"]: c for c in task["Properties"]["ContainerDefinitions"]})
    return found


def _expected_environment(variant):
    def address(name, port):
        return f"{name}.svc.local:{port}" if variant == "appmesh" else f"{name}:{port}"

    common = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "PORT": "8080", "JWT_ISSUER": "mf-auth", "JWT_AUDIENCE": "mf-services",
              "LOG_LEVEL": "INFO",
              # The rate of the region's X-Ray sampling rules (config observability.xray_sampling_rate).
              "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.05",
              # Histograms the ADOT collector can make percentiles of (tests/test_service_percentiles.py).
              "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION": "base2_exponential_bucket_histogram",
              "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "DELTA",
              # Behind the edge: CloudFront and the load balancer append to X-Forwarded-For (servicekit.forwarded).
              "TRUSTED_PROXY_HOPS": "2"}
    return {
        # Names, not ARNs: the same in every region, where each service reads its own region's replica.
        "auth": {**common, "SERVICE_NAME": "auth", "PUBLIC_PATH": "/api/auth", "TABLE_NAME": "mf-auth",
                 "JWT_SIGNING_SECRET_ID": "mf/auth/jwt-signing-key"},
        "persona": {**common, "SERVICE_NAME": "persona", "PUBLIC_PATH": "/api/persona", "GRPC_PORT": "50051", "TABLE_NAME": "mf-persona",
                    "QUEUE_URL": "<Queue>", "EVENT_BUS_NAME": "<platform:EventBus>", "EVENT_SOURCE": "mf.persona",
                    "AUTH_URL": f"http://{address('auth', 8080)}"},
        "vc-start": {**common, "SERVICE_NAME": "vc-start", "PUBLIC_PATH": "/api/vc", "TABLE_NAME": "mf-vc-start", "QUEUE_URL": "<Queue>",
                     "EVENT_BUS_NAME": "<platform:EventBus>", "EVENT_SOURCE": "mf.vc-start", "AUTH_URL": f"http://{address('auth', 8080)}",
                     "PERSONA_URL": f"http://{address('persona', 8080)}", "PERSONA_GRPC_TARGET": address("persona", 50051)},
    }


def test_each_service_gets_the_environment_the_services_read_on_either_backend(backend):
    variant, assembly = backend
    expected = _expected_environment(variant)
    for region in REGIONS:
        for canaries in (False, True):
            resources = _resources(assembly, region)
            for service, containers in _containers(assembly, region, primary_only=not canaries).items():
                # Environment variables and the service's configuration from SSM (tests/test_service_config.py).
                settings = container_settings(resources, containers["app"])
                # Not a setting the service reads: the hash of those from SSM (tests/test_service_config.py).
                assert re.fullmatch(r"[0-9a-f]{16}", settings.pop(CONFIG_DIGEST))
                environment = {name: _readable(value) for name, value in settings.items()}
                assert environment == expected[service], (region, service)
                # Each value that names a resource of the stack names the service's own.
                refs = [value["Ref"] for value in settings.values() if isinstance(value, dict) and "Ref" in value]
                assert all(_owner(ref) == service for ref in refs) and bool(refs) is (service in CONSUMES)


def test_without_the_edge_services_trust_only_the_load_balancers_entry_in_x_forwarded_for(one_region):
    """An app of one region has no CloudFront in front of its load balancer: the load balancer's entry is the caller.
    Trusting one more would let a caller pick the address auth throttles by (services/auth/README.md).
    one_region (tests/conftest.py): cdk.json's services in eu-west-1 alone."""
    assembly = one_region
    resources = _resources(assembly, "eu-west-1")
    hops = {service: container_settings(resources, containers["app"]).get("TRUSTED_PROXY_HOPS")
            for service, containers in _containers(assembly, "eu-west-1").items()}
    assert hops == {"auth": "1", "persona": "1", "vc-start": "1"}


def test_consumers_run_a_worker_from_the_app_image_read_only_non_root_with_the_same_environment(backend):
    _, assembly = backend
    # The primaries only: with App Mesh the canary runs no worker (test below).
    for service, containers in _containers(assembly).items():
        app = containers["app"]
        if service not in WORKERS:
            assert "worker" not in containers
            continue
        worker = containers["worker"]
        assert worker["Command"] == ["python", "-m", WORKERS[service]]
        assert worker["Image"] == app["Image"] and worker["Environment"] == app["Environment"]
        assert (worker["Essential"], worker["ReadonlyRootFilesystem"], worker["User"]) == (True, True, "10001:10001")
        assert worker["StopTimeout"] == app["StopTimeout"] == 30
        assert worker["LogConfiguration"]["Options"]["awslogs-stream-prefix"] == "worker"
        assert worker["LogConfiguration"]["Options"]["awslogs-group"] == app["LogConfiguration"]["Options"]["awslogs-group"]
        # Its own tmpfs at the app's scratch paths (a tmpfs belongs to one container).
        assert worker["LinuxParameters"] == app["LinuxParameters"] and "MountPoints" not in worker
        # It waits for what the app waits for (the collector; with App Mesh, a healthy Envoy), serves no port
        # and has no health check: ECS replaces the task if it exits.
        assert worker["DependsOn"] == app["DependsOn"]
        assert "PortMappings" not in worker and "HealthCheck" not in worker


def test_the_appmesh_canary_runs_no_worker_so_it_takes_no_share_of_the_queue(appmesh):
    resources = _resources(appmesh)
    tasks = {logical_id: {c["Name"] for c in task["Properties"]["ContainerDefinitions"]}
             for logical_id, task in _of_type(resources, "AWS::ECS::TaskDefinition").items()}
    canaries = {_owner(i): names for i, names in tasks.items() if "canary" in i}
    primaries = {_owner(i): names for i, names in tasks.items() if "canary" not in i}
    assert set(canaries) == set(primaries) == set(SERVICES)
    for service in SERVICES:
        assert "app" in canaries[service] and "worker" not in canaries[service], service
        assert ("worker" in primaries[service]) is (service in WORKERS), service


def test_persona_maps_its_grpc_port_with_the_grpc_app_protocol(backend):
    _, assembly = backend
    for service, containers in _containers(assembly).items():
        mappings = containers["app"]["PortMappings"]
        expected = [{"AppProtocol": "http", "ContainerPort": 8080, "Name": "http", "Protocol": "tcp"}]
        if service == "persona":
            expected.append({"AppProtocol": "grpc", "ContainerPort": 50051, "Name": "grpc", "Protocol": "tcp"})
        assert mappings == expected, service


# --- Images -------------------------------------------------------------------------------------


def test_each_image_is_built_from_its_own_folder_and_the_shared_code_only(dev):
    manifest = next(p for p in dev.outdir.glob("assembly-mf-eu-west-1/*services*.assets.json"))
    images = json.loads(manifest.read_text())["dockerImages"]
    assert len(images) == 3  # one per service: its app, worker (and App Mesh canary) share it
    built = {}
    for image in images.values():
        source = image["source"]
        context = manifest.parent / source["directory"]  # relative to the nested assembly
        service = source["dockerFile"].split("/")[0]
        built[service] = {p.name for p in context.iterdir()}
        assert {"common", service} <= built[service]
        # Other services, tests, tooling and sources of generated code stay out of the build context.
        assert not ({"tests", "bench", "ci", "local", "contracts", "proto", "pytest.ini", "requirements-dev.txt"}
                    | (set(SERVICES) - {service})) & built[service]
        assert not list(context.glob("**/tests")) and not list(context.glob("**/__pycache__")) and not list(context.glob("**/*.md"))
        # Caches and tool state (.pytest_cache, .hypothesis, ...) stay out; only .dockerignore, which docker reads.
        assert [p.name for p in context.glob("**/.*")] in ([], [".dockerignore"])
    assert set(built) == set(SERVICES)


# The Docker platform an image must be built for to run on each of Fargate's CPU architectures.
PLATFORM_OF_ARCHITECTURE = {"X86_64": "linux/amd64", "ARM64": "linux/arm64"}


def test_every_image_built_from_a_dockerfile_targets_the_cpu_architecture_of_the_tasks_that_run_it(backend):
    """Docker builds for the building machine's architecture unless the asset names a platform: `cdk deploy` from an
    arm64 machine (Apple Silicon, Graviton) would push arm64 images, and x86_64 tasks die on them with "exec format
    error" (aws-cdk issue 12472). Every Docker image asset of the app, its containers and their task definitions."""
    _, assembly = backend
    with_images = {}
    for stack, template_file in assembly.template_files.items():
        manifest = template_file.with_name(template_file.name.replace(".template.json", ".assets.json"))
        if manifest.exists() and (images := json.loads(manifest.read_text()).get("dockerImages")):
            with_images[stack] = images
    assert set(with_images) == {f"mf-{region}/services" for region in REGIONS}
    for stack, images in with_images.items():
        assert len(images) == len(SERVICES), stack
        task_definitions = assembly.resources(stack, "AWS::ECS::TaskDefinition")
        for image in images.values():
            tags = {destination["imageTag"] for destination in image["destinations"].values()}
            architectures = {(logical_id, container["Name"]): task_definition["Properties"]["RuntimePlatform"]["CpuArchitecture"]
                             for logical_id, task_definition in task_definitions.items()
                             for container in task_definition["Properties"]["ContainerDefinitions"]
                             if any(f':{tag}"' in json.dumps(container["Image"]) for tag in tags)}
            assert architectures, f"{stack}: no container runs {image['source']['dockerFile']}"
            assert image["source"].get("platform") == "linux/amd64", f"{stack}: {image['source']}"
            assert {PLATFORM_OF_ARCHITECTURE[a] for a in architectures.values()} == {image["source"]["platform"]}, architectures


# --- Config only --------------------------------------------------------------------------------


def test_a_new_consumer_needs_config_only(tmp_path):
    services = {**cdk_json_context()["services"],
                "billing": {"image": "registry.example.com/team/billing:1.0.0", "calls": ["auth"], "table": True, "worker": True,
                            "module": "billing_app", "consumes": {"persona": ["SlotConfirmed"], "vc-start": ["SessionStarted"]}}}
    assembly = synth(tmp_path / "out", regions=[{"name": "eu-west-1", "cidr": "10.20.0.0/16"}], primary_region="eu-west-1",
                     services=services, events={"max_receive_count": 5})
    resources = _resources(assembly)
    rules = {r["Properties"]["Name"]: r["Properties"] for r in _of_type(resources, "AWS::Events::Rule").values()}
    assert rules["mf-billing-from-persona"]["EventPattern"] == {"detail-type": ["SlotConfirmed"], "source": ["mf.persona"]}
    assert rules["mf-billing-from-vc-start"]["EventPattern"] == {"detail-type": ["SessionStarted"], "source": ["mf.vc-start"]}
    queues = [r["Properties"] for r in _of_type(resources, "AWS::SQS::Queue").values() if "RedrivePolicy" in r["Properties"]]
    assert {q["RedrivePolicy"]["maxReceiveCount"] for q in queues} == {5}
    billing = _containers(assembly)["billing"]
    assert billing["worker"]["Command"] == ["python", "-m", "billing_app.worker"]
    environment = set(container_settings(resources, billing["app"]))
    # A consumer that nobody consumes from publishes nothing: no bus variables, no PutEvents.
    assert {"TABLE_NAME", "QUEUE_URL", "AUTH_URL", "JWT_ISSUER"} <= environment and not {"EVENT_BUS_NAME", "EVENT_SOURCE"} & environment
    assert not [s for role, s in _statements_by_role(resources) if role.startswith("billing") and "events:PutEvents" in _actions(s)]


def test_a_service_refuses_scratch_space_beyond_a_quarter_of_its_task_memory():
    """A tmpfs is task memory: app 64 + worker 64 + collector 16 MiB fit a 1024 MiB task, not a 512 MiB one, and
    synthesis says which containers take what."""
    import aws_cdk as cdk
    from aws_cdk import aws_ec2 as ec2
    from aws_cdk import aws_ecs as ecs
    from aws_cdk import aws_kms as kms
    from aws_cdk import aws_logs as logs
    from aws_cdk import aws_servicediscovery as servicediscovery

    from constructs.meshed_service import AdotCollector, MeshedFargateService, MeshedServiceProps, WorkerContainer

    def synth(memory_limit_mib):
        app = cdk.App()
        stack = cdk.Stack(app, "consumer", env=cdk.Environment(account="111122223333", region="eu-west-1"))
        cluster = ecs.Cluster(stack, "Cluster", vpc=ec2.Vpc(stack, "Vpc", max_azs=2, nat_gateways=1))
        cluster.add_default_cloud_map_namespace(name="svc.local", type=servicediscovery.NamespaceType.DNS_PRIVATE)
        MeshedFargateService(
            stack, "orders", cluster=cluster,
            extensions=[AdotCollector(metrics_namespace="demo"), WorkerContainer(command=["python", "-m", "app.worker"])],
            capacity_strategy=[ecs.CapacityProviderStrategy(capacity_provider="FARGATE", weight=1)],
            log_encryption_key=kms.Key(stack, "LogsKey"), log_retention=logs.RetentionDays.ONE_WEEK,
            props=MeshedServiceProps(name="orders", image=ecs.ContainerImage.from_registry("registry.example.com/app:1"),
                                     container_port=8080, cpu=256 if memory_limit_mib == 512 else 512,
                                     memory_limit_mib=memory_limit_mib, health_check_path="/", min_tasks=1, max_tasks=1))
        return app.synth()

    synth(1024)
    with pytest.raises(Exception, match=r"scratch space of 144 MiB \(app 64, adot-collector 16, worker 64\) is invalid: .*"
                                        r"quarter of its memory \(512 MiB\)"):
        synth(512)


def test_constructs_reject_what_cannot_work():
    import aws_cdk as cdk
    from aws_cdk import aws_ecs as ecs
    from aws_cdk import aws_logs as logs

    from constructs.meshed_service import MeshedServiceProps, WorkerContainer
    from constructs.service_data import ServiceData, TableIndex
    from constructs.service_resources import EventSubscription, ServiceResources

    image = ecs.ContainerImage.from_registry("registry.example.com/app:1")
    with pytest.raises(ValueError, match="grpc_port=8080 is invalid"):
        MeshedServiceProps(name="a", image=image, container_port=8080, cpu=256, memory_limit_mib=512,
                           health_check_path="/", min_tasks=1, max_tasks=1, grpc_port=8080)
    with pytest.raises(ValueError, match="scratch_size_mib=0 is invalid: expected at least 1"):
        MeshedServiceProps(name="a", image=image, container_port=8080, cpu=256, memory_limit_mib=512,
                           health_check_path="/", min_tasks=1, max_tasks=1, scratch_size_mib=0)
    with pytest.raises(ValueError, match="command=\\[\\] is invalid"):
        WorkerContainer(command=[])
    with pytest.raises(ValueError, match="table_actions=\\['dynamodb:Scan'\\] is invalid"):
        ServiceResources(cdk.Stack(), "r", name_prefix="mf", name="a", retain=False, table_name="mf-a", table_actions=["dynamodb:Scan"])
    with pytest.raises(ValueError, match="table_index_names needs table_name"):
        ServiceResources(cdk.Stack(), "r", name_prefix="mf", name="a", retain=False, table_index_names=["sweep"])
    stack = cdk.Stack()
    group = logs.LogGroup(stack, "Logs")
    with pytest.raises(ValueError, match="table_indexes needs table_name"):
        ServiceData(stack, "d", name_prefix="mf", name="a", retain=False, replica_regions=[], custom_resource_log_group=group,
                    rotation_log_group=group, signing_secret_name="mf/a/key", table_indexes=[TableIndex("sweep", "shard", "at")])
    with pytest.raises(ValueError, match="sweep: sort_key_type='binary' is invalid: expected one of string, number"):
        TableIndex("sweep", "shard", "at", sort_key_type="binary")
    with pytest.raises(ValueError, match="detail_types=\\[\\] is invalid"):
        EventSubscription(producer="persona", source="mf.persona", detail_types=[])
